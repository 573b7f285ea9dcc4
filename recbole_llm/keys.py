"""Which config keys exist, what type their values have, which values they allow, and which
names look like secrets. :class:`recbole_llm.config.Config` checks all of it when it is built,
before any data, file or LLM work.

- **Known keys**: RecBole's (its argument lists, every YAML under ``recbole/properties``, the
  command-line-only ones and the few its code reads without a default) and ours (every YAML
  under our ``properties/``). A key known to any model is accepted for every model, so one
  shared benchmark config can set ``hidden_size`` for Pop and SASRec alike.
- **Types**: the tag opening each key's comment in our YAMLs, ``key: value  # (int) ...``, is
  the declared type of that key (``int``, ``float``, ``bool``, ``str``, ``list``, ``dict``).
- **Allowed values**: the lists below for the semantic step's keys; a model class declares its
  own in ``config_choices`` (EIMF, LLM4SBR, the multi-interest models), next to the code that
  reads them.
- **Secrets**: a key named like a secret (:func:`is_secret_key`) may not hold a value: config
  is logged, written to TensorBoard and saved in checkpoints. The API key lives in an
  environment variable whose *name* is ``llm_api_key_env``.
"""

import functools
import glob
import os
import re

import yaml

#: Keys RecBole's run_recbole.py and its Config take from the command line or set themselves.
RECBOLE_RUNTIME_KEYS = (
    "model",
    "dataset",
    "config_files",
    "nproc",
    "ip",
    "port",
    "world_size",
    "offset",
    "group_offset",
    "local_rank",
    "single_spec",
    "device",
    "MODEL_TYPE",
    "MODEL_INPUT_TYPE",
    "eval_type",
    "valid_metric_bigger",
    "valid_neg_sample_args",
    "test_neg_sample_args",
)

#: Keys RecBole 1.2.1's code reads (``config["..."]``) that none of its YAMLs declare.
RECBOLE_CODE_KEYS = (
    "encoding",
    "verbose",
    "tail_ratio",
    "token_num_threshold",
    "xgb_early_stopping_rounds",
    "cin",
    "contrast",
    "eta",
    "feature_num",
    "has_residual",
    "norm",
    "sim",
    "use_filter",
)

#: Allowed values of the semantic step's keys (the backends read ``llm_backend``'s from here).
SEMANTIC_CHOICES = {
    "llm_backend": ("transformers", "openai", "llama_cpp", "batch"),
    "typical_selection": ("ap", "kmeans"),
    "interest_source": ("llm", "categories"),
    "interest_fallback": ("none", "categories"),
    "typical_assignment": ("cluster", "shuffled"),
    "intent_source": ("llm", "last_item"),
    "intent_aggregation": ("sum", "mean"),
    "intent_form": ("compact", "dense"),
}

#: Backends whose LLM is a served model: its identity is its served name (``llm_model``), so
#: replies of an OpenAI-compatible server and of a batch job of the same model serve each other.
SERVED_BACKENDS = ("openai", "batch")

#: Our keys that change what a dataset contains. A pickled dataset or saved dataloaders are
#: reused only when these match too (RecBole compares only its own ``dataset_arguments``).
DATASET_ARGUMENTS = [
    "dataset_class",
    "semantics_dir",
    "semantics_required",
    "text_fields",
    "category_field",
    "item_noun",
    "item_verb",
    "llm_backend",
    "llm_model",
    "llm_max_new_tokens",
    "llm_repetition_penalty",
    "encoder_model",
    "typical_selection",
    "typical_ratio",
    "ap_max_users",
    "max_interests",
    "prompt_max_items",
    "interest_source",
    "interest_fallback",
    "typical_assignment",
    "semantics_seed",
    "intent_views",
    "intent_source",
    "intent_topr",
    "intent_aggregation",
    "intent_form",
]

#: Keys that say where or how verbosely a run happens, not what it computes.
VOLATILE_KEYS = {
    "data_path",
    "checkpoint_dir",
    "device",
    "gpu_id",
    "use_gpu",
    "local_rank",
    "single_spec",
    "state",
    "show_progress",
    "verbose",
    "log_wandb",
    "wandb_project",
    "worker",
    "save_dataset",
    "dataset_save_path",
    "save_dataloaders",
    "dataloaders_save_path",
    "semantics_cache_dir",
    "auto_prepare",
    "source_dir",
    "auto_semantics",
    "llm_shard",
    "llm_export_replies",
    "llm_batch_file",
    "llm_import_batch",
    "llm_backoff",
    "llm_backoff_max",
    "training_state_file",
    "strict_keys",
    "trust_checkpoint",
}


#: The type tags of our YAML comments, and the Python types each accepts.
TYPE_TAGS = {
    "int": ((int,), "an integer"),
    "float": ((int, float), "a number"),
    "bool": ((bool,), "True or False"),
    "str": ((str,), "a string"),
    "list": ((list, tuple), "a list"),
    "dict": ((dict,), "a mapping"),
}
_TAGGED_LINE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*):.*#\s*\((\w+)\)")

_SECRET_WORDS = re.compile(r"(^|_)(api_?key|token|secret|password|passwd)(_|$)", re.IGNORECASE)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

#: What a user who gave a secret is told to do instead.
SECRET_ADVICE = "put it in an environment variable and name that variable in llm_api_key_env"


def _yaml_keys(pattern):
    keys = set()
    for path in glob.glob(pattern, recursive=True):
        with open(path, encoding="utf-8") as f:
            content = yaml.safe_load(f)
        if isinstance(content, dict):
            keys.update(content)
    return keys


@functools.cache
def recbole_keys():
    """Every key RecBole 1.2.1 knows (see the module docstring)."""
    import recbole
    from recbole.utils import argument_list

    properties = os.path.join(os.path.dirname(recbole.__file__), "properties")
    keys = _yaml_keys(os.path.join(properties, "**", "*.yaml"))
    for name in ("general", "training", "evaluation", "dataset"):
        keys.update(getattr(argument_list, f"{name}_arguments"))
    return frozenset(keys | set(RECBOLE_RUNTIME_KEYS) | set(RECBOLE_CODE_KEYS))


@functools.cache
def our_keys(properties_dir):
    """Every key our YAMLs under ``properties_dir`` declare (overall, models, datasets)."""
    return frozenset(_yaml_keys(os.path.join(properties_dir, "**", "*.yaml")))


@functools.cache
def declared_types(path):
    """``{key: type tag}`` from the ``# (int)``-style comments of one YAML file."""
    types = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            match = _TAGGED_LINE.match(line)
            if match and match.group(2) in TYPE_TAGS:
                types[match.group(1)] = match.group(2)
    return types


def type_error(key, value, tag, default):
    """The message for ``value`` of ``key`` against its type tag, or None if it fits.

    None fits only a key whose default is None; an integer fits ``float``; a bool fits only
    ``bool``."""
    if value is None:
        return None if default is None else f"must be {TYPE_TAGS[tag][1]}, got None"
    kinds, what = TYPE_TAGS[tag]
    if isinstance(value, bool) and tag != "bool":
        return f"must be {what}, got {value!r}"
    if isinstance(value, kinds):
        return None
    return f"must be {what}, got {value!r} ({type(value).__name__})"


def is_secret_key(key):
    """A key whose name says it holds a secret: ``api_key``, ``token``, ``secret`` or
    ``password`` as a word of it (``llm_api_key``, ``hf_token``; not ``llm_max_new_tokens``).

    RecBole's own keys (``token_num_threhold``) hold none, and ``*_env`` keys name the
    environment variable that holds one, so neither counts."""
    return (
        bool(_SECRET_WORDS.search(key)) and not key.endswith("_env") and key not in recbole_keys()
    )


def is_env_name(value):
    """True if ``value`` can name an environment variable (letters, digits, underscores)."""
    return isinstance(value, str) and bool(_ENV_NAME.match(value))
