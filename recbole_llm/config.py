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

import torch
import yaml
from recbole.config import Config as RecBoleConfig
from recbole.utils import ModelType

from recbole_llm import compat, keys
from recbole_llm.config_checks import (  # noqa: F401 (ConfigError, NUMBER_KEYS: their old paths)
    NUMBER_KEYS,
    ConfigChecks,
    ConfigError,
    MissingConfigKeyError,
)
from recbole_llm.config_data import REDACTED, from_plain, plain_config  # noqa: F401 (old path)
from recbole_llm.data.checks import columns_to_load
from recbole_llm.data.prepare import PROPERTIES_OF
from recbole_llm.errors import error_message, yaml_problem
from recbole_llm.keys import DATASET_ARGUMENTS  # noqa: F401 (its old import path)
from recbole_llm.model.lookup import UnknownNameError, get_model
from recbole_llm.paths import properties_dir

FALLBACK_DATASET = "ml-100k"

# Our keys that hold lists of names. RecBole keeps a command-line value such as
# ``--intent_views=[normal]`` as the string "[normal]" (it is not a Python literal); these are
# read back as lists of names so that users need not quote every element.
NAME_LIST_KEYS = keys.NAME_LIST_KEYS


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


class Config(ConfigChecks, RecBoleConfig):
    """RecBole's Config plus recbole_llm's defaults; see the module docstring for precedence.
    The value checks are in :class:`recbole_llm.config_checks.ConfigChecks`."""

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

    def _get_model_and_dataset(self, model, dataset):
        if model is None:
            if "model" not in self.external_config_dict:
                raise MissingConfigKeyError(
                    "model must be given in one of these ways: the model argument, a config "
                    "file, config_dict or the command line (--model=SASRec)."
                )
            model = self.external_config_dict["model"]
        if isinstance(model, str):
            model_class = get_model(model)
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
        dataset_yaml = os.path.join(root, "dataset", f"{PROPERTIES_OF.get(dataset, dataset)}.yaml")
        self._own_dataset = not os.path.isfile(dataset_yaml)  # a user's, with no YAML of ours
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
            return get_model(backbone)
        except UnknownNameError as err:
            raise ConfigError(
                f"backbone ({self._origin('backbone')}): {error_message(err)}"
            ) from None

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
        if self._own_dataset and "load_col" not in self.external_config_dict:
            # RecBole's default loads only the ids: load what the model and semantic step need
            self.final_config_dict["load_col"] = (
                columns_to_load(self.final_config_dict) or self.final_config_dict["load_col"]
            )
        self._check_numbers()
        self._check_valid_metric()
        self._check_writable()

    def _init_device(self):
        self._choose_device()
        # the config dump says what the run uses: no GPU on a machine without one
        self.final_config_dict["use_gpu"] = self.final_config_dict["device"].type == "cuda"

    def _choose_device(self):
        """RecBole's device choice, with CPU DDP over gloo where CUDA is not used."""

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
    config.final_config_dict = {key: from_plain(value) for key, value in plain.items()}
    config.model, config.dataset = plain["model"], plain["dataset"]
    config.model_class = get_model(config.model)
    config.backbone_class = None
    return config


def _name_list(value):
    """``"[a, 'b']"`` or ``"a,b"`` or ``"a"`` -> ``["a", "b"]`` (names, quotes stripped)."""
    text = value.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    return [name.strip().strip("'\"").strip() for name in text.split(",") if name.strip()]
