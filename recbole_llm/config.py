"""Config: RecBole's Config with recbole_llm's YAML defaults and model lookup.

Precedence, later wins: RecBole's defaults (overall, its model YAML, sample, its dataset YAML,
quick-start YAML) < our ``overall.yaml`` < our ``model/<Model>.yaml`` < our
``dataset/<dataset>.yaml`` < user config files < ``config_dict`` < command line. A model that
wraps a backbone (its YAML or the user sets ``backbone``) gets the backbone's YAML files
underneath its own: RecBole's with RecBole's defaults, ours just before the wrapper's.

Only six hooks are overridden, each for one reason:

- ``_load_config_files``: read the user's config files as RecBole does, but fail with a
  :class:`ConfigError` naming the file when one is missing or is not a YAML mapping (RecBole
  shows a YAML parser traceback that never says which file).
- ``_merge_external_config_dict``: refuse secrets (a key named like ``llm_api_key`` given a
  value, an ``llm_api_key_env`` that is not a variable name) before anything is logged; the
  message never repeats the value.
- ``_get_model_and_dataset``: resolve model names through :mod:`recbole_llm.registry`, and
  default the dataset to the one the model YAML names (``default_dataset``), else ml-100k.
- ``_load_internal_config_dict``: add our YAML files on top of RecBole's; an unknown
  ``backbone`` and unknown keys (unless ``strict_keys: False``) fail here, with the closest
  known names (:mod:`recbole_llm.keys` says which keys are known).
- ``_set_default_parameters``: keep every dataset, ml-100k included, in our writable data root
  (RecBole points ml-100k at its installed package) and make the path absolute, so a checkpoint
  reloads from any working directory. Also: RecBole's overall.yaml turns on training negative
  sampling and then refuses it for every sequential model with ``loss_type: CE`` (SASRec,
  GRU4Rec, ... fail unless users pass ``--train_neg_sample_args=None``); unless the user sets
  it, such models get ``train_neg_sample_args: None``, the only value RecBole accepts there.
  Values are checked here, before any data or LLM work: the type each of our YAMLs declares,
  the allowed values of our choices, RecBole's numbers and ``valid_metric``, and that the run
  can write where it will (a dataset to prepare, semantic files to make).
- ``_init_device``: distributed runs on the CPU use gloo (RecBole hard-codes NCCL and CUDA).

A checkpoint stores the config as plain data (:func:`plain_config`), and
:func:`restore_config` turns that back into a Config without re-reading any file.
"""

import os
import tempfile

import numpy as np
import torch
import yaml
from recbole.config import Config as RecBoleConfig
from recbole.utils import ModelType, enum_type

from recbole_llm import compat, keys, registry
from recbole_llm.data.prepare import PREPARERS, PROPERTIES_OF, is_prepared
from recbole_llm.errors import UserError, error_message, yaml_problem
from recbole_llm.model.layers import config_choice
from recbole_llm.semantics.files import semantics_dir

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
]

FALLBACK_DATASET = "ml-100k"

# Our keys that hold lists of names. RecBole keeps a command-line value such as
# ``--intent_views=[normal]`` as the string "[normal]" (it is not a Python literal); these are
# read back as lists of names so that users need not quote every element.
NAME_LIST_KEYS = ("text_fields", "llm_reply_files", "intent_views")


#: RecBole keys that must be numbers. RecBole keeps ``--epochs=abc`` as the string "abc" and
#: fails only deep inside training; these are checked when the config is built.
NUMBER_KEYS = {
    "epochs": int,
    "train_batch_size": int,
    "eval_batch_size": int,
    "stopping_step": int,
    "eval_step": int,
    "seed": int,
    "learning_rate": float,
    "weight_decay": float,
}


class ConfigError(UserError):
    """A config file or config value that cannot be used; the message names the file or key."""


class MissingConfigKeyError(ConfigError, KeyError):
    """A key that must be given is missing (also a KeyError, as a missing key is in RecBole)."""


def properties_dir():
    """Folder holding our YAML defaults: package data when installed, else the checkout's."""
    package_dir = os.path.dirname(os.path.abspath(__file__))
    installed = os.path.join(package_dir, "properties")
    if os.path.isdir(installed):
        return installed
    return os.path.join(os.path.dirname(package_dir), "properties")


def _read_yaml(path, loader):
    with open(path, encoding="utf-8") as f:
        try:
            content = yaml.load(f.read(), Loader=loader)
        except yaml.YAMLError as err:
            raise ConfigError(
                f"Cannot parse YAML file '{path}', {yaml_problem(err)}; fix the file."
            ) from err
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise ConfigError(f"YAML file '{path}' must hold a mapping of keys to values.")
    return content


class Config(RecBoleConfig):
    """RecBole's Config plus recbole_llm's defaults; see the module docstring for precedence."""

    def __init__(self, model=None, dataset=None, config_file_list=None, config_dict=None):
        compat.apply()
        super().__init__(
            model=model,
            dataset=dataset,
            config_file_list=config_file_list,
            config_dict=config_dict,
        )

    def _load_config_files(self, file_list):
        merged = {}
        self._file_of = {}  # key -> the config file that set it last, for messages
        for path in file_list or []:
            if not os.path.isfile(path):
                raise ConfigError(
                    f"Config file '{path}' does not exist (given in --config_files or "
                    "config_file_list; relative paths are relative to the working directory)."
                )
            content = _read_yaml(path, self.yaml_loader)
            merged.update(content)
            self._file_of.update(dict.fromkeys(content, path))
        return merged

    def _merge_external_config_dict(self):
        super()._merge_external_config_dict()
        self._check_secrets()

    def _origin(self, key):
        """Where a user-given key was set, as a phrase: ``on the command line``, ..."""
        if key in self.cmd_config_dict:
            return "on the command line"
        if key in self.variable_config_dict:
            return "in config_dict"
        return f"in config file '{self._file_of.get(key, '?')}'"

    def _check_secrets(self):
        """Refuse a secret in the config, naming the key but never its value."""
        for key, value in self.external_config_dict.items():
            if keys.is_secret_key(key) and value not in (None, ""):
                raise ConfigError(
                    f"Config key '{key}' ({self._origin(key)}) looks like a secret and is "
                    "refused: config is logged, written to TensorBoard and saved in "
                    f"checkpoints. Instead, {keys.SECRET_ADVICE}. (The value is not shown.)"
                )
        env = self.external_config_dict.get("llm_api_key_env")
        if env is not None and not keys.is_env_name(env):
            raise ConfigError(
                f"llm_api_key_env ({self._origin('llm_api_key_env')}) must be the NAME of the "
                "environment variable that holds the API key (letters, digits and underscores, "
                "e.g. OPENAI_API_KEY), never the key itself; the value given is not a variable "
                "name (it is not shown)."
            )

    def _get_model_and_dataset(self, model, dataset):
        if model is None:
            if "model" not in self.external_config_dict:
                raise MissingConfigKeyError(
                    "model must be given in one of these ways: the model argument, a config "
                    "file, config_dict or the command line (--model=SASRec)."
                )
            model = self.external_config_dict["model"]
        if isinstance(model, str):
            model_class = registry.get_model(model)
        else:
            model_class, model = model, model.__name__

        if dataset is None:
            dataset = self.external_config_dict.get("dataset") or self._model_default_dataset(model)
        return model, model_class, dataset

    def _model_default_dataset(self, model):
        path = os.path.join(properties_dir(), "model", f"{model}.yaml")
        if os.path.isfile(path):
            return _read_yaml(path, self.yaml_loader).get("default_dataset") or FALLBACK_DATASET
        return FALLBACK_DATASET

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        root = properties_dir()
        model_yaml = os.path.join(root, "model", f"{model}.yaml")
        model_defaults = (
            _read_yaml(model_yaml, self.yaml_loader) if os.path.isfile(model_yaml) else {}
        )
        # a wrapper model (EIMF, LLM4SBR: its YAML names a default backbone) gets its
        # backbone's defaults underneath its own; other models ignore the key, so one shared
        # config can run a backbone alone and wrapped
        backbone = None
        if "backbone" in model_defaults:
            backbone = self.external_config_dict.get("backbone", model_defaults["backbone"])
        self.backbone_class = self._backbone_class(model, backbone)
        backbone_layers = []
        if backbone:
            import recbole

            recbole_props = os.path.join(os.path.dirname(recbole.__file__), "properties")
            backbone_layers = [
                os.path.join(recbole_props, "model", f"{backbone}.yaml"),
                os.path.join(root, "model", f"{backbone}.yaml"),
            ]
        self._declared_types = {}  # key -> type tag, from our YAMLs that this config loads
        for path in (
            backbone_layers[:1]
            + [os.path.join(root, "overall.yaml")]
            + backbone_layers[1:]
            + [
                model_yaml,
                os.path.join(root, "dataset", f"{PROPERTIES_OF.get(dataset, dataset)}.yaml"),
            ]
        ):
            if os.path.isfile(path):
                self.internal_config_dict.update(_read_yaml(path, self.yaml_loader))
                if path.startswith(root):
                    self._declared_types.update(keys.declared_types(path))
        self._check_known_keys(root)

    def _backbone_class(self, model, backbone):
        """The class of ``backbone`` (None if unset); an unknown name fails now, before any
        data or LLM work, with the closest known names."""
        if not backbone:
            return None
        if not isinstance(backbone, str):
            raise ConfigError(f"backbone must be a model class name, got {backbone!r}.")
        if backbone == model:
            raise ConfigError(f"backbone: {model} cannot be its own backbone.")
        try:
            return registry.get_model(backbone)
        except registry.UnknownNameError as err:
            raise ConfigError(
                f"backbone ({self._origin('backbone')}): {error_message(err)}"
            ) from None

    def _check_known_keys(self, root):
        """Fail on keys no YAML declares (typos such as ``learnin_rate``), unless
        ``strict_keys`` is False; the message gives the closest known names."""
        if self.external_config_dict.get("strict_keys", True) is False:
            return
        known = keys.recbole_keys() | keys.our_keys(root) | set(self.internal_config_dict)
        unknown = [key for key in self.external_config_dict if key not in known]
        if not unknown:
            return
        problems = []
        for key in unknown:
            close = registry.closest_names(key, known, n=3)
            hint = f"; did you mean: {', '.join(close)}?" if close else ""
            problems.append(f"'{key}' ({self._origin(key)}{hint})")
        from_command_line = any(key in self.cmd_config_dict for key in unknown)
        raise ConfigError(
            f"Unknown config key{'s' if len(unknown) > 1 else ''} {', '.join(problems)}. "
            "Keys are those RecBole and recbole_llm declare (their YAML defaults); for keys "
            "of your own, e.g. a custom model's, set strict_keys: False (--strict_keys=False)."
            + (
                " (RecBole's Config reads every --key=value of the process's command line.)"
                if from_command_line
                else ""
            )
        )

    def _set_default_parameters(self):
        final = self.final_config_dict
        if (
            final["MODEL_TYPE"] == ModelType.SEQUENTIAL
            and final.get("loss_type") == "CE"
            and "train_neg_sample_args" not in self.external_config_dict
        ):
            final["train_neg_sample_args"] = None
        for key in NAME_LIST_KEYS:
            if isinstance(final.get(key), str):
                final[key] = _name_list(final[key])
        self._check_types()
        self._check_choices()
        data_root = final["data_path"]
        super()._set_default_parameters()
        self.final_config_dict["data_path"] = os.path.abspath(os.path.join(data_root, self.dataset))
        self._check_numbers()
        self._check_valid_metric()
        self._check_writable()

    def _check_types(self):
        """Fail now, naming the key, if a value does not have the type its YAML declares
        (``# (int)``). A number on the command line for a string key is taken as a string."""
        final = self.final_config_dict
        for key, tag in self._declared_types.items():
            if key not in final:
                continue
            value = final[key]
            if (
                tag == "str"
                and key in self.cmd_config_dict
                and isinstance(value, (int, float))
                and not isinstance(value, bool)
            ):
                final[key] = value = str(self.cmd_config_dict[key])
            problem = keys.type_error(key, value, tag, self.internal_config_dict.get(key))
            if problem:
                where = f" ({self._origin(key)})" if key in self.external_config_dict else ""
                raise ConfigError(f"Config key '{key}'{where} {problem}.")

    def _check_choices(self):
        """Fail now, naming the key and the allowed values, if a choice key has another value:
        the semantic step's keys and those the model (and its backbone) declare."""
        choices = dict(keys.SEMANTIC_CHOICES)
        for model_class in (self.backbone_class, self.model_class):
            choices.update(getattr(model_class, "config_choices", None) or {})
        for key, allowed in choices.items():
            if key in self.final_config_dict:
                try:
                    config_choice(key, self.final_config_dict[key], allowed)
                except UserError as err:
                    where = f" ({self._origin(key)})" if key in self.external_config_dict else ""
                    raise ConfigError(f"{error_message(err)}{where}.") from None

    def _check_writable(self):
        """Fail now, not after the LLM step, if the run must write where it cannot: a known
        dataset to prepare into ``data_path``, or semantic files to make in their folder."""
        folder, dataset = self["data_path"], self["dataset"]
        if dataset in PREPARERS and self["auto_prepare"] and not is_prepared(folder, dataset):
            blocked = _unwritable(folder)
            if blocked:
                raise ConfigError(
                    f"data_path: dataset '{dataset}' is to be prepared in '{folder}', but "
                    f"'{blocked}' is not a writable folder; point data_path at a writable "
                    "folder or make it writable."
                )
        makes_semantics = getattr(self.model_class, "semantics", None) is not None
        if makes_semantics and self["auto_semantics"] and self["semantics_required"]:
            target = semantics_dir(self)
            blocked = _unwritable(target)
            if blocked:
                raise ConfigError(
                    f"data_path: {self.model} writes its semantic files to '{target}', but "
                    f"'{blocked}' is not a writable folder. Make it writable, set semantics_dir "
                    "(or data_path) to a writable folder, or, if the semantic files are already "
                    "there, set auto_semantics: False."
                )

    def _check_numbers(self):
        """Fail now, naming the key, if a key of :data:`NUMBER_KEYS` is not a number."""
        for key, kind in NUMBER_KEYS.items():
            value = self.final_config_dict.get(key)
            kinds = (int,) if kind is int else (int, float)
            if value is None or (isinstance(value, kinds) and not isinstance(value, bool)):
                continue
            what = "an integer" if kind is int else "a number"
            raise ConfigError(
                f"Config key '{key}' must be {what}, got {value!r}; fix it where it is set "
                f"(a config file, config_dict or --{key}=...)."
            )

    def _check_valid_metric(self):
        """Fail now, not after the first epoch (RecBole's KeyError), if ``valid_metric`` is not
        among the metrics that will be computed. With ``mask_history`` on, the masked ones
        (``masked_ndcg@10``: the prefix the trainer's ``MASKED_PREFIX`` adds) are computed too."""
        final = self.final_config_dict
        metrics = [m.lower() for m in final["metrics"]]
        computed = set(metrics) | {f"{m}@{k}" for m in metrics for k in final["topk"]}
        valid_metric = final["valid_metric"].lower()
        if final.get("mask_history") is True:
            computed |= {f"masked_{m}" for m in computed}
        elif valid_metric.startswith("masked_") and valid_metric[len("masked_") :] in computed:
            raise ConfigError(
                f"valid_metric '{final['valid_metric']}' is computed with history masked; "
                f"set mask_history: True, or choose '{final['valid_metric'][len('masked_'):]}'."
            )
        if valid_metric not in computed:
            raise ConfigError(
                f"valid_metric '{final['valid_metric']}' is not computed: metrics "
                f"{final['metrics']} at topk {final['topk']}. Add it to metrics/topk or choose "
                f"one of: {', '.join(sorted(computed))}."
            )

    def _init_device(self):
        import torch

        distributed = "local_rank" in self.final_config_dict
        wants_cuda = (
            bool(str(self.final_config_dict["gpu_id"]).strip())
            and self.final_config_dict["use_gpu"]
            and torch.cuda.is_available()
        )
        if not distributed or wants_cuda:
            super()._init_device()
            return
        self.final_config_dict["gpu_id"] = str(self.final_config_dict["gpu_id"])
        rank = self.final_config_dict["local_rank"]
        torch.distributed.init_process_group(
            backend="gloo",
            rank=rank + self.final_config_dict["offset"],
            world_size=self.final_config_dict["world_size"],
            init_method=f"tcp://{self.final_config_dict['ip']}:{self.final_config_dict['port']}",
        )
        self.final_config_dict["device"] = torch.device("cpu")
        self.final_config_dict["single_spec"] = False
        if rank != 0:
            self.final_config_dict["state"] = "error"
            self.final_config_dict["show_progress"] = False
            self.final_config_dict["verbose"] = False


def _unwritable(folder):
    """None if files can be created in ``folder`` (or, if it does not exist yet, in the nearest
    existing folder above it, where it would be made); else the path that blocks it."""
    probe = os.path.abspath(folder)
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        return probe
    try:
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".recbole_llm-write-check-")
    except OSError:
        return probe
    os.close(fd)
    os.remove(tmp)
    return None


def _plain(value):
    """A config value as JSON data: RecBole's enums and torch devices become tagged mappings,
    tuples and sets lists, numpy scalars numbers; anything else its ``str``."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, enum_type.Enum):
        return {"__enum__": f"{type(value).__name__}.{value.name}"}
    if isinstance(value, torch.device):
        return {"__device__": str(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(_plain(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _unplain(value):
    if isinstance(value, dict):
        if set(value) == {"__enum__"}:
            enum_name, member = value["__enum__"].split(".")
            return getattr(enum_type, enum_name)[member]
        if set(value) == {"__device__"}:
            return torch.device(value["__device__"])
        return {k: _unplain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unplain(v) for v in value]
    return value


#: What a checkpoint stores in place of a secret-looking value (the config refuses them; this
#: also covers one set on a built config).
REDACTED = "<redacted>"


def plain_config(config):
    """The final values of ``config`` as JSON data (no pickled objects): what our checkpoints
    store instead of RecBole's pickled Config. Secret-looking keys are redacted."""
    return {
        key: REDACTED if keys.is_secret_key(key) and value else _plain(value)
        for key, value in config.final_config_dict.items()
    }


def restore_config(plain):
    """A :class:`Config` with exactly the values of ``plain`` (from :func:`plain_config`),
    built without reading any YAML file or the command line, as RecBole's unpickled Config
    would be."""
    compat.apply()
    config = Config.__new__(Config)
    config.compatibility_settings()  # numpy aliases RecBole's metrics still use
    config._init_parameters_category()
    config.parameters = {name: list(args) for name, args in config.parameters.items()}
    config.yaml_loader = config._build_yaml_loader()
    config.file_config_dict, config.variable_config_dict, config.cmd_config_dict = {}, {}, {}
    config.external_config_dict, config.internal_config_dict, config._file_of = {}, {}, {}
    config.final_config_dict = {key: _unplain(value) for key, value in plain.items()}
    config.model, config.dataset = plain["model"], plain["dataset"]
    config.model_class = registry.get_model(config.model)
    config.backbone_class = None
    return config


def _name_list(value):
    """``"[a, 'b']"`` or ``"a,b"`` or ``"a"`` -> ``["a", "b"]`` (names, quotes stripped)."""
    text = value.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    return [name.strip().strip("'\"").strip() for name in text.split(",") if name.strip()]
