"""What a semantic pipeline's output depends on, and the command that makes it.

:func:`settings` is what a manifest records and is checked against (with the LLM as its cache
identity); :func:`command` is the command line that creates a dataset's semantics as a run
configures them, which every "missing or stale semantics" message ends with.
"""

import os
import shlex

from recbole_llm import keys
from recbole_llm.assets import file_sha256
from recbole_llm.paths import reply_file
from recbole_llm.semantics import prompts
from recbole_llm.semantics.models import model_identity
from recbole_llm.semantics.parsing import PARSER_VERSION

KINDS = (keys.EIMF, keys.LLM4SBR)

#: Config keys that change what each pipeline produces (besides the input files' hashes): the
#: keys :data:`recbole_llm.keys.KEYS` gives the pipeline's role. Not ``llm_backend``: the LLM
#: enters as its identity (``llm_identity``: the weights' hash or the served name), as in the
#: reply cache, so files made with llama.cpp serve a transformers run of the same weights
#: instead of counting as stale.
SETTING_KEYS = {kind: keys.with_role(kind) for kind in KINDS}


#: Settings that entered :data:`SETTING_KEYS` after files were made: left out at their neutral
#: value, so files made before them stay current (EIMF's histories under ``eval_protocol``).
LATE_SETTINGS = ("eval_protocol",)


def settings(config, kind):
    """The settings a pipeline's output depends on, with the LLM as its cache identity."""
    values = {
        key: config[key]
        for key in SETTING_KEYS[kind]
        if not (key in LATE_SETTINGS and config[key] == keys.NEUTRAL_VALUES[key])
    }
    values["llm_identity"] = model_identity(config) if needs_llm(config, kind) else None
    values["prompt_template"] = prompts.template_hash(kind, config["item_noun"])
    values["parser"] = PARSER_VERSION
    if values["llm_identity"] is not None and config["llm_reply_files"]:
        # the replies a step reads are an input like the .inter file: files made before a
        # shipped reply file was remade (or from another cache) must not pass as current. Only
        # when files are named, so that files made from a cache alone stay current; in the
        # order named, since a later file's reply wins where two hold a prompt.
        values["reply_files"] = [_reply_digest(name) for name in config["llm_reply_files"]]
    return values


def _reply_digest(name):
    path = reply_file(name)
    # a missing file is the generator's error to report, with the shipped files it knows
    return file_sha256(path) if os.path.isfile(path) else f"missing:{name}"


def needs_llm(config, kind):
    if kind == "llm4sbr":
        return config["intent_source"] == "llm"
    return config["interest_source"] == "llm"


#: settings that select *which* semantics a run reads, with their defaults: the command that
#: creates missing semantics repeats the ones a run changed, so it makes the files that run reads
SELECTING_KEYS = {key: keys.default(key) for key in keys.with_role(keys.SELECTING)}

#: Besides :data:`SETTING_KEYS`, what the semantic step reads: where the data and caches are,
#: how it reaches its LLM, and RecBole's dataset settings (which rows, fields and splits).
STEP_KEYS = keys.with_role(keys.STEP)


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
