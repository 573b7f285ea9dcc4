"""What a semantic pipeline's output depends on, and the command that makes it.

:func:`settings` is what a manifest records and is checked against (with the LLM as its cache
identity); :func:`command` is the command line that creates a dataset's semantics as a run
configures them, which every "missing or stale semantics" message ends with.
"""

import shlex

from recbole_llm.semantics import prompts
from recbole_llm.semantics.models import model_identity
from recbole_llm.semantics.parsing import PARSER_VERSION

KINDS = ("eimf", "llm4sbr")

#: Config keys that change what each pipeline produces (besides the input files' hashes).
#: Not ``llm_backend``: the LLM enters as its identity (``llm_identity``: the weights' hash or
#: the served name), as in the reply cache, so files made with llama.cpp serve a transformers
#: run of the same weights instead of counting as stale.
COMMON_KEYS = [
    "text_fields",
    "llm_model",
    "llm_max_new_tokens",
    "llm_repetition_penalty",
    "encoder_model",
    "prompt_max_items",
]
SETTING_KEYS = {
    "eimf": COMMON_KEYS
    + [
        "item_noun",
        "item_verb",
        "category_field",
        "typical_selection",
        "typical_ratio",
        "ap_max_users",
        "max_interests",
        "interest_source",
        "interest_fallback",
        "typical_assignment",
        "semantics_seed",
        "eval_args",
        "user_inter_num_interval",
        "item_inter_num_interval",
        "rm_dup_inter",
        "val_interval",
    ],
    "llm4sbr": COMMON_KEYS
    + [
        "intent_views",
        "intent_source",
        "intent_topr",
        "intent_aggregation",
        "intent_form",
        "benchmark_filename",
    ],
}


def settings(config, kind):
    """The settings a pipeline's output depends on, with the LLM as its cache identity."""
    values = {key: config[key] for key in SETTING_KEYS[kind]}
    values["llm_identity"] = model_identity(config) if needs_llm(config, kind) else None
    values["prompt_template"] = prompts.template_hash(kind, config["item_noun"])
    values["parser"] = PARSER_VERSION
    return values


def needs_llm(config, kind):
    if kind == "llm4sbr":
        return config["intent_source"] == "llm"
    return config["interest_source"] == "llm"


#: settings that select *which* semantics a run reads, with their defaults: the command that
#: creates missing semantics repeats the ones a run changed, so it makes the files that run reads
SELECTING_KEYS = {
    "semantics_dir": None,
    "llm_model": "SmolLM2-135M-Instruct",
    "interest_source": "llm",
    "typical_assignment": "cluster",
    "intent_source": "llm",
}

#: Besides :data:`SETTING_KEYS`, what the semantic step reads: where the data and caches are,
#: how it reaches its LLM, and RecBole's dataset settings (which rows, fields and splits).
STEP_KEYS = [
    "data_path",
    "semantics_dir",
    "semantics_cache_dir",
    "llm_backend",
    "llm_base_url",
    "llm_api_key_env",  # the name of a variable, never a key
    "llm_reply_files",
    "llm_timeout",
    "llm_max_retries",
    "llm_backoff",
    "llm_backoff_max",
    "llm_concurrency",
    "llm_max_failure_ratio",
    "llm_batch_size",
    "llm_threads",
    "encoder_batch_size",
    "encoding",
    "field_separator",
    "seq_separator",
    "USER_ID_FIELD",
    "ITEM_ID_FIELD",
    "RATING_FIELD",
    "TIME_FIELD",
    "load_col",
    "unload_col",
    "unused_col",
    "filter_inter_by_user_or_item",
    "alias_of_user_id",
    "alias_of_item_id",
    "MAX_ITEM_LIST_LENGTH",
    "ITEM_LIST_LENGTH_FIELD",
    "LIST_SUFFIX",
]


def _flag(key, value):
    """``--key=value`` as RecBole's command line reads it back, quoted for a shell."""
    text = value if isinstance(value, str) else repr(value)  # RecBole evals what is not text
    return shlex.quote(f"--{key}={text}")


def command(config, kind):
    """The command that creates a dataset's semantics as this run configures them: the
    settings the user gave (config files, config dict, command line) that the semantic step
    reads, repeated; never ``--refresh``, which would ask every cached prompt again."""
    model = "EIMF" if kind == "eimf" else "LLM4SBR"
    flags = [f"--model={model}", f"--dataset={config['dataset']}", "--semantics"]
    given = getattr(config, "external_config_dict", None)
    if given is None:  # a plain dict: repeat the selecting settings it changed
        for key, default in SELECTING_KEYS.items():
            value = config[key] if key in config else default
            if value != default:
                flags.append(f"--{key}={value}")
        return "python run_recbole_llm.py " + " ".join(flags)
    from_files = getattr(config, "file_config_dict", {})
    config_files = getattr(config, "config_file_list", None)
    if config_files:
        flags.append(shlex.quote("--config_files=" + " ".join(config_files)))
    for key in dict.fromkeys(STEP_KEYS + SETTING_KEYS[kind]):
        if key not in given:
            continue
        if config_files and key in from_files and given[key] == from_files[key]:
            continue  # the config files say it
        flags.append(_flag(key, given[key]))  # as given: RecBole extends data_path
    return "python run_recbole_llm.py " + " ".join(flags)
