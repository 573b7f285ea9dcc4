"""Model, trainer and dataset-class lookup: recbole_llm first, then RecBole.

A model named ``X`` lives in ``recbole_llm/model/x.py`` (RecBole's convention: file name is the
class name in lower case). Every RecBole model resolves through the same functions, so any
baseline runs through our entry points. Unknown names fail with the closest known names.
"""

import difflib
import importlib
import importlib.util
import os
import re

from recbole_llm import compat
from recbole_llm.errors import UserError

_MODEL_PACKAGE = "recbole_llm.model"
_RECBOLE_MODEL_SUBPACKAGES = (
    "general_recommender",
    "context_aware_recommender",
    "sequential_recommender",
    "knowledge_aware_recommender",
    "exlib_recommender",
)
_CLASS_RE = re.compile(r"^class\s+(\w+)\s*[(:]", re.MULTILINE)


class UnknownNameError(UserError):
    """A model, trainer or dataset class name that resolves to nothing; the message lists the
    closest known names."""


def closest_names(name, candidates, n=5):
    """The candidates closest to ``name`` (case-insensitive), best first."""
    by_lower = {c.lower(): c for c in candidates}
    matches = difflib.get_close_matches(str(name).lower(), list(by_lower), n=n, cutoff=0.5)
    return [by_lower[m] for m in matches]


def _unknown(kind, name, candidates):
    suggestions = closest_names(name, candidates)
    hint = f" Did you mean: {', '.join(suggestions)}?" if suggestions else ""
    return UnknownNameError(
        f"Unknown {kind} '{name}'.{hint} Names are case-sensitive class names "
        f"({len(set(candidates))} known)."
    )


def _classes_in_files(folder):
    """Class names defined in ``folder/*.py`` whose lower-case name is the file name."""
    names = []
    if not os.path.isdir(folder):
        return names
    for file in sorted(os.listdir(folder)):
        if not file.endswith(".py") or file.startswith("_"):
            continue
        with open(os.path.join(folder, file), encoding="utf-8") as f:
            for cls in _CLASS_RE.findall(f.read()):
                if cls.lower() == file[:-3]:
                    names.append(cls)
    return names


def known_models():
    """Names of every model that :func:`get_model` resolves: ours, then RecBole's."""
    import recbole.model

    ours = _classes_in_files(os.path.join(os.path.dirname(__file__), "model"))
    base = os.path.dirname(recbole.model.__file__)
    theirs = [
        name
        for sub in _RECBOLE_MODEL_SUBPACKAGES
        for name in _classes_in_files(os.path.join(base, sub))
    ]
    return ours + [name for name in theirs if name not in ours]


def _recbole_model_module(model_name):
    """Import path of RecBole's module for ``model_name``, found on disk without importing the
    other sub-packages (RecBole's own lookup imports exlib_recommender, which needs lightgbm
    and xgboost, before it can say a name is unknown)."""
    import recbole.model

    base = os.path.dirname(recbole.model.__file__)
    for sub in _RECBOLE_MODEL_SUBPACKAGES:
        if os.path.isfile(os.path.join(base, sub, f"{model_name.lower()}.py")):
            return f"recbole.model.{sub}.{model_name.lower()}"
    return None


def get_model(model_name):
    """Return the model class called ``model_name``, looking in recbole_llm before RecBole."""
    if not isinstance(model_name, str):
        raise TypeError(f"model name must be a str, got {type(model_name).__name__}")
    compat.apply()
    module_path = f"{_MODEL_PACKAGE}.{model_name.lower()}"
    if importlib.util.find_spec(module_path) is None:
        module_path = _recbole_model_module(model_name)
    if module_path is not None:
        try:
            module = importlib.import_module(module_path)
        except ModuleNotFoundError as err:
            raise ImportError(
                f"Model '{model_name}' needs the package '{err.name}', which is not installed."
            ) from err
        if hasattr(module, model_name):
            return getattr(module, model_name)
    raise _unknown("model", model_name, known_models())


def _recbole_trainer_names():
    import recbole.trainer

    return [n for n in dir(recbole.trainer) if n.endswith("Trainer")]


def _our_trainer_names():
    from recbole_llm import trainer

    return [
        name
        for name, obj in vars(trainer).items()
        if name.endswith("Trainer") and getattr(obj, "__module__", None) == trainer.__name__
    ]


def get_trainer_class(trainer_name):
    """Return the trainer class called ``trainer_name`` (recbole_llm first, then RecBole)."""
    from recbole_llm import trainer as our_trainers

    if trainer_name in _our_trainer_names():
        return getattr(our_trainers, trainer_name)
    import recbole.trainer

    if trainer_name.endswith("Trainer") and hasattr(recbole.trainer, trainer_name):
        return getattr(recbole.trainer, trainer_name)
    raise _unknown("trainer", trainer_name, _our_trainer_names() + _recbole_trainer_names())


def get_trainer(model_type, model_name, trainer_name=None):
    """Return the trainer for a model, with our checkpoint and DDP fixes mixed in.

    Order: ``trainer_name`` if given (config key ``trainer_class``), ``<Model>Trainer`` in
    recbole_llm, then RecBole's choice (``<Model>Trainer``, KG/traditional, base ``Trainer``).
    """
    from recbole.utils import get_trainer as recbole_get_trainer

    from recbole_llm import trainer as our_trainers

    if trainer_name:
        trainer_class = get_trainer_class(trainer_name)
    elif model_name + "Trainer" in _our_trainer_names():
        trainer_class = getattr(our_trainers, model_name + "Trainer")
    else:
        trainer_class = recbole_get_trainer(model_type, model_name)
    return our_trainers.with_compat(trainer_class)


_DATASET_MODULE = "recbole_llm.data.dataset"


def _dataset_modules():
    """Modules searched for dataset classes: ours (once it exists), then RecBole's."""
    import recbole.data.dataset

    modules = [recbole.data.dataset]
    if importlib.util.find_spec(_DATASET_MODULE) is not None:
        modules.insert(0, importlib.import_module(_DATASET_MODULE))
    return modules


def _dataset_class_names():
    return [n for module in _dataset_modules() for n in dir(module) if n.endswith("Dataset")]


def get_dataset_class(config):
    """Choose the dataset class for a config.

    Order: config key ``dataset_class``; ``<Model>Dataset`` in recbole_llm, then in RecBole;
    the class a model declares in its ``dataset_class`` attribute; RecBole's choice by model type.
    """
    import recbole.data.dataset as recbole_datasets
    from recbole.utils import ModelType

    name = config["dataset_class"]
    if name:
        for module in _dataset_modules():
            if name.endswith("Dataset") and hasattr(module, name):
                return getattr(module, name)
        raise _unknown("dataset class", name, _dataset_class_names())

    model_dataset = config["model"] + "Dataset"
    for module in _dataset_modules():
        if hasattr(module, model_dataset):
            return getattr(module, model_dataset)
    declared = getattr(get_model(config["model"]), "dataset_class", None)
    if declared is not None:
        return declared
    type2class = {
        ModelType.GENERAL: "Dataset",
        ModelType.SEQUENTIAL: "SequentialDataset",
        ModelType.CONTEXT: "Dataset",
        ModelType.KNOWLEDGE: "KnowledgeBasedDataset",
        ModelType.TRADITIONAL: "Dataset",
        ModelType.DECISIONTREE: "Dataset",
    }
    return getattr(recbole_datasets, type2class[config["MODEL_TYPE"]])
