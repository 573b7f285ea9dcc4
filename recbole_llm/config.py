"""Config: RecBole's Config with recbole_llm's YAML defaults and model lookup.

Precedence, later wins: RecBole's defaults (overall, its model YAML, sample, its dataset YAML,
quick-start YAML) < our ``overall.yaml`` < our ``model/<Model>.yaml`` < our
``dataset/<dataset>.yaml`` < user config files < ``config_dict`` < command line. A model that
wraps a backbone (its YAML or the user sets ``backbone``) gets the backbone's YAML files
underneath its own: RecBole's with RecBole's defaults, ours just before the wrapper's.

Only five hooks are overridden, each for one reason:

- ``_load_config_files``: read the user's config files as RecBole does, but fail with a
  :class:`ConfigError` naming the file when one is missing or is not a YAML mapping (RecBole
  shows a YAML parser traceback that never says which file).

- ``_get_model_and_dataset``: resolve model names through :mod:`recbole_llm.registry`, and
  default the dataset to the one the model YAML names (``default_dataset``), else ml-100k.
- ``_load_internal_config_dict``: add our YAML files on top of RecBole's.
- ``_set_default_parameters``: keep every dataset, ml-100k included, in our writable data root
  (RecBole points ml-100k at its installed package) and make the path absolute, so a checkpoint
  reloads from any working directory. Also: RecBole's overall.yaml turns on training negative
  sampling and then refuses it for every sequential model with ``loss_type: CE`` (SASRec,
  GRU4Rec, ... fail unless users pass ``--train_neg_sample_args=None``); unless the user sets
  it, such models get ``train_neg_sample_args: None``, the only value RecBole accepts there.
- ``_init_device``: distributed runs on the CPU use gloo (RecBole hard-codes NCCL and CUDA).
"""

import os

import yaml
from recbole.config import Config as RecBoleConfig
from recbole.utils import ModelType

from recbole_llm import compat, registry
from recbole_llm.data.prepare import PROPERTIES_OF
from recbole_llm.errors import UserError, yaml_problem

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
        for path in file_list or []:
            if not os.path.isfile(path):
                raise ConfigError(
                    f"Config file '{path}' does not exist (given in --config_files or "
                    "config_file_list; relative paths are relative to the working directory)."
                )
            merged.update(_read_yaml(path, self.yaml_loader))
        return merged

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
        # a wrapper model (EIMF, LLM4SBR) gets its backbone's defaults underneath its own
        backbone = self.external_config_dict.get("backbone", model_defaults.get("backbone"))
        backbone_layers = []
        if backbone:
            import recbole

            recbole_props = os.path.join(os.path.dirname(recbole.__file__), "properties")
            backbone_layers = [
                os.path.join(recbole_props, "model", f"{backbone}.yaml"),
                os.path.join(root, "model", f"{backbone}.yaml"),
            ]
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
        data_root = final["data_path"]
        super()._set_default_parameters()
        self.final_config_dict["data_path"] = os.path.abspath(os.path.join(data_root, self.dataset))
        self._check_numbers()
        self._check_valid_metric()

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


def _name_list(value):
    """``"[a, 'b']"`` or ``"a,b"`` or ``"a"`` -> ``["a", "b"]`` (names, quotes stripped)."""
    text = value.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    return [name.strip().strip("'\"").strip() for name in text.split(",") if name.strip()]
