"""Every config key of ours, declared once: its default, type, allowed values and what it
affects. Everything that classifies keys elsewhere derives from :data:`KEYS`.

- **The table** (:data:`KEYS`) has one :class:`Key` for each key of ``properties/overall.yaml``
  (default, type tag, allowed values), each key of our model YAMLs (type tag; each model's
  default is in its ``properties/model/<Model>.yaml``, its allowed values in the model class's
  ``config_choices``, next to the code that reads them) and each RecBole key we classify
  (RecBole owns its default). ``overall.yaml`` stays what a user reads: the default, the
  ``(type)`` tag and one line of meaning; ``tests/test_keys.py`` checks it, the model YAMLs and
  ``docs/usage.md`` against the table. The roles live here, not in the YAML comments, because
  they cover RecBole's keys and model keys too and say what a key means to our code (a run's
  identity, a cache's validity), not to a user.
- **Roles** (:data:`ROLES`) say what a key's value changes: what a dataset holds
  (:data:`DATASET_ARGUMENTS`), what each semantic pipeline's files depend on
  (``semantics.settings.SETTING_KEYS``), which semantics a run reads, what the semantic step
  reads, and what is no part of a run's identity (:data:`VOLATILE_KEYS`, and the
  :data:`NEUTRAL_VALUES` of keys added after runs were committed).
- **Known keys**: RecBole's (its argument lists, every YAML under ``recbole/properties``, the
  command-line-only ones and the few its code reads without a default) and ours (every YAML
  under our ``properties/``). A key known to any model is accepted for every model, so one
  shared benchmark config can set ``hidden_size`` for Pop and SASRec alike.
- **Types**: the tag opening each key's comment in our YAMLs, ``key: value  # (int) ...``, is
  the type :class:`recbole_llm.config.Config` checks (``int``, ``float``, ``bool``, ``str``,
  ``list``, ``dict``); it is the table's, which the tests hold it to.
- **Secrets**: a key named like a secret (:func:`is_secret_key`) may not hold a value: config
  is logged, written to TensorBoard and saved in checkpoints. The API key lives in an
  environment variable whose *name* is ``llm_api_key_env``.
"""

import dataclasses
import functools
import glob
import os
import re

import yaml

#: Keys RecBole's run_recbole.py and its Config take from the command line or set themselves.
RECBOLE_RUNTIME_KEYS = tuple(
    "model dataset config_files nproc ip port world_size offset group_offset local_rank "
    "single_spec device MODEL_TYPE MODEL_INPUT_TYPE eval_type valid_metric_bigger "
    "valid_neg_sample_args test_neg_sample_args".split()
)

#: Keys RecBole 1.2.1's code reads (``config["..."]``) that none of its YAMLs declare.
RECBOLE_CODE_KEYS = tuple(
    "encoding verbose tail_ratio token_num_threshold xgb_early_stopping_rounds cin contrast eta "
    "feature_num has_residual norm sim use_filter".split()
)

# ---------------------------------------------------------------- roles

#: Changes what a dataset holds: a pickled dataset or saved dataloaders are reused only when
#: these match too (RecBole compares only its own ``dataset_arguments``).
DATASET = "dataset"
#: EIMF's / LLM4SBR's semantic files depend on it (their manifest records it).
EIMF = "eimf"
LLM4SBR = "llm4sbr"
#: Selects *which* semantics a run reads: the command that makes missing ones repeats it.
SELECTING = "selecting"
#: Read by the semantic step besides the settings: where data and caches are, how it reaches
#: its LLM, RecBole's dataset settings.
STEP = "step"
#: Says where or how verbosely a run happens, not what it computes: no part of its identity.
VOLATILE = "volatile"
#: A list of names: ``--intent_views=[normal]`` needs no quotes.
NAMES = "names"
#: A RecBole key that must be a number, checked when the config is built.
NUMBER = "number"
ROLES = (DATASET, EIMF, LLM4SBR, SELECTING, STEP, VOLATILE, NAMES, NUMBER)

#: Where a key's default is: overall.yaml (the table holds it), each model's YAML, RecBole's.
OVERALL, MODEL, RECBOLE = "overall", "model", "recbole"
#: The default of a key the table does not hold (a model's or RecBole's).
ELSEWHERE = object()
NO_VALUE = object()


@dataclasses.dataclass(frozen=True)
class Key:
    """One config key: where its default lives, its type tag, allowed values and roles.

    ``neutral``: for a key added after runs were committed, the value that computes exactly
    what those runs computed; a run at that value leaves it out of its identity, so the
    committed rows stay current. ``only_for``: a key only that model reads, left out of every
    other model's identity whatever its value."""

    name: str
    source: str
    type: str = None
    default: object = ELSEWHERE
    roles: frozenset = frozenset()
    choices: tuple = None
    neutral: object = NO_VALUE
    only_for: str = None


def ours(name, type, default, *roles, choices=None, neutral=NO_VALUE, only_for=None):
    """A key of ``properties/overall.yaml``."""
    return Key(name, OVERALL, type, default, frozenset(roles), choices, neutral, only_for)


def model(names, type, neutral=NO_VALUE):
    """Keys of ours (space-separated ``names``) that only model YAMLs set; each model's default
    is in its YAML."""
    return [Key(name, MODEL, type, neutral=neutral) for name in names.split()]


def recbole(names, *roles, type=None):
    """RecBole's keys (space-separated ``names``); ``type``: the tag our model YAMLs give it."""
    return [Key(name, RECBOLE, type, roles=frozenset(roles)) for name in names.split()]


def _table(*entries):
    table = {}
    for entry in entries:
        for key in entry if isinstance(entry, list) else [entry]:
            if key.name in table:
                raise ValueError(f"config key '{key.name}' is declared twice in keys.KEYS")
            table[key.name] = key
    return table


S = (EIMF, LLM4SBR)  # a setting of both semantic pipelines
LLM_BACKENDS = ("transformers", "openai", "llama_cpp", "batch")
ASSIGNMENTS = ("cluster", "shuffled")
DENSE = {"neutral": "dense", "only_for": "LLM4SBR"}
PROTOCOLS = ("recbole", "comirec")
TEXT_SOURCES, TEXT_INITS = ("none", "eimf", "llm4sbr"), ("none", "pca", "random")

#: Every key of ours and every RecBole key we classify, by name, in ``overall.yaml``'s order.
KEYS = _table(
    # preparing data, training, checks
    ours("auto_prepare", "bool", True, VOLATILE),
    ours("source_dir", "str", None, VOLATILE),
    ours("dataset_class", "str", None, DATASET),
    ours("trainer_class", "str", None),
    ours("mask_history", "bool", False, neutral=False),
    ours("eval_protocol", "str", "recbole", DATASET, EIMF, choices=PROTOCOLS, neutral="recbole"),
    ours("test_every_epoch", "bool", False, neutral=False),
    ours("item_text_source", "str", "none", DATASET, choices=TEXT_SOURCES, neutral="none"),
    ours("item_text_init", "str", "none", choices=TEXT_INITS, neutral="none"),
    ours("training_state_file", "str", None, VOLATILE),
    ours("strict_keys", "bool", True, VOLATILE),
    ours("trust_checkpoint", "bool", False, VOLATILE),
    # the LLM-semantics step
    ours("semantics_dir", "str", None, DATASET, SELECTING, STEP),
    ours("semantics_cache_dir", "str", None, VOLATILE, STEP),
    ours("auto_semantics", "bool", True, VOLATILE),
    ours("semantics_required", "bool", True, DATASET),
    ours("text_fields", "list", None, DATASET, *S, NAMES),
    ours("category_field", "str", None, DATASET, EIMF),
    ours("item_noun", "str", "item", DATASET, EIMF),
    ours("item_verb", "str", "interacted with", DATASET, EIMF),
    # not a setting: the LLM enters as its identity (semantics.settings)
    ours("llm_backend", "str", "transformers", DATASET, STEP, choices=LLM_BACKENDS),
    ours("llm_model", "str", "SmolLM2-135M-Instruct", DATASET, *S, SELECTING),
    ours("llm_base_url", "str", None, STEP),
    ours("llm_api_key_env", "str", None, STEP),  # the name of a variable, never a key
    ours("llm_concurrency", "int", 4, STEP),
    ours("llm_timeout", "float", 60, STEP),
    ours("llm_max_retries", "int", 3, STEP),
    ours("llm_backoff", "float", 1.0, VOLATILE, STEP),
    ours("llm_backoff_max", "float", 60.0, VOLATILE, STEP),
    ours("llm_max_failure_ratio", "float", 0.0, STEP, neutral=0.0),
    ours("llm_max_new_tokens", "int", 48, DATASET, *S),
    ours("llm_repetition_penalty", "float", 1.3, DATASET, *S),
    ours("llm_threads", "int", 1, STEP),
    ours("llm_batch_size", "int", 8, STEP),
    ours("llm_shard", "list", None, VOLATILE),
    ours("llm_export_replies", "str", None, VOLATILE),
    ours("llm_reply_files", "list", None, STEP, NAMES),
    ours("llm_batch_file", "str", None, VOLATILE),
    ours("llm_import_batch", "str", None, VOLATILE),
    ours("encoder_model", "str", "all-MiniLM-L6-v2", DATASET, *S),
    ours("encoder_batch_size", "int", 64, STEP),
    ours("typical_selection", "str", "ap", DATASET, EIMF, choices=("ap", "kmeans")),
    ours("typical_ratio", "float", 0.05, DATASET, EIMF),
    ours("ap_max_users", "int", 3000, DATASET, EIMF),
    ours("max_interests", "int", 5, DATASET, EIMF),
    ours("prompt_max_items", "int", 20, DATASET, *S),
    ours("interest_source", "str", "llm", DATASET, EIMF, SELECTING, choices=("llm", "categories")),
    ours("interest_fallback", "str", "none", DATASET, EIMF, choices=("none", "categories")),
    ours("typical_assignment", "str", "cluster", DATASET, EIMF, SELECTING, choices=ASSIGNMENTS),
    ours("semantics_seed", "int", 2020, DATASET, EIMF),
    ours("intent_views", "list", ["long", "short"], DATASET, LLM4SBR, NAMES),
    ours("intent_source", "str", "llm", DATASET, LLM4SBR, SELECTING, choices=("llm", "last_item")),
    ours("intent_topr", "int", 5, DATASET, LLM4SBR),
    ours("intent_aggregation", "str", "sum", DATASET, LLM4SBR, choices=("sum", "mean")),
    # dense: the only form before compact intents; compact rebuilds the same vectors to float
    # rounding, which training can amplify, so an LLM4SBR run with it is a run of its own
    ours("intent_form", "str", "compact", DATASET, LLM4SBR, choices=("compact", "dense"), **DENSE),
    # keys of our model YAMLs; neutral values: the defaults before issue 20 changed them
    model(
        "default_dataset backbone readout semantic_readout activation view_loss_reduction", "str"
    ),
    model(
        "interest_num sample_num routing_times conv_layers hop neighbor_num global_window", "int"
    ),
    model("readout_pow hard_negative_beta semantic_weight align_temperature", "float"),
    model("intent_loss_weight leakyrelu_alpha dropout_local dropout_global dropout_gcn", "float"),
    model("capsule_relu add_position dynamic_interest_num freeze_item_text alignment", "bool"),
    model("align_mix", "list"),
    model("multi_positive", "bool", neutral=False),
    model("semantic_targets", "str", neutral="text"),
    model("semantic_control", "str", neutral="none"),
    model("semantic_negatives", "int", neutral=0),
    model("fusion", "str", neutral="paper"),
    model("global_pool", "str", neutral="sum"),
    model("intent_control", "str", neutral="none"),
    model("intent_control_phase", "str", neutral="both"),
    # RecBole's keys: types our model YAMLs give them, and the roles they have for us
    recbole("hidden_size embedding_size step", type="int"),
    recbole("dropout_prob ssl_weight align_weight reg_weight", type="float"),
    recbole("loss_type", type="str"),
    recbole("train_neg_sample_args", type="dict"),
    recbole("MAX_ITEM_LIST_LENGTH", STEP, type="int"),
    recbole(
        "train_batch_size epochs eval_batch_size stopping_step eval_step seed", NUMBER, type="int"
    ),
    recbole("learning_rate weight_decay", NUMBER, type="float"),
    recbole("eval_args user_inter_num_interval item_inter_num_interval rm_dup_inter", EIMF),
    recbole("val_interval", EIMF),
    recbole("benchmark_filename", LLM4SBR),
    recbole("data_path", VOLATILE, STEP),
    recbole("checkpoint_dir device gpu_id use_gpu local_rank single_spec state", VOLATILE),
    recbole("show_progress verbose log_wandb wandb_project worker save_dataset", VOLATILE),
    recbole("dataset_save_path save_dataloaders dataloaders_save_path", VOLATILE),
    recbole("encoding field_separator seq_separator load_col unload_col unused_col", STEP),
    recbole("USER_ID_FIELD ITEM_ID_FIELD RATING_FIELD TIME_FIELD", STEP),
    recbole("filter_inter_by_user_or_item alias_of_user_id alias_of_item_id", STEP),
    recbole("ITEM_LIST_LENGTH_FIELD LIST_SUFFIX", STEP),
)
del S, ASSIGNMENTS, DENSE, PROTOCOLS, TEXT_SOURCES, TEXT_INITS


def with_role(role):
    """The names of the keys that have ``role``, in the table's order."""
    return [name for name, key in KEYS.items() if role in key.roles]


def default(name):
    """The default :data:`KEYS` declares for a key of ``overall.yaml``."""
    key = KEYS[name]
    if key.default is ELSEWHERE:
        raise KeyError(
            f"{name}: its default is {'RecBole' if key.source == RECBOLE else 'per model'}'s"
        )
    return key.default


# ---------------------------------------------------------------- derived from the table

#: Allowed values of our overall keys (the backends read ``llm_backend``'s from here); a model's
#: own are its class's ``config_choices``.
CHOICES = {name: key.choices for name, key in KEYS.items() if key.choices}
SEMANTIC_CHOICES = CHOICES  # its name before eval_protocol, the first choice outside the step
#: Our keys that change what a dataset contains (see :data:`DATASET`).
DATASET_ARGUMENTS = with_role(DATASET)
#: Keys that say where or how verbosely a run happens, not what it computes.
VOLATILE_KEYS = frozenset(with_role(VOLATILE))
#: Keys left out of a run's identity at these values (see :class:`Key`).
NEUTRAL_VALUES = {name: key.neutral for name, key in KEYS.items() if key.neutral is not NO_VALUE}
#: Keys left out of every other model's run identity (see :class:`Key`).
ONLY_FOR = {name: key.only_for for name, key in KEYS.items() if key.only_for}
#: Keys that hold lists of names (see :data:`NAMES`).
NAME_LIST_KEYS = tuple(with_role(NAMES))

#: Backends whose LLM is a served model: its identity is its served name (``llm_model``), so
#: replies of an OpenAI-compatible server and of a batch job of the same model serve each other.
SERVED_BACKENDS = ("openai", "batch")


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
