"""Model, trainer and dataset-class lookup: recbole_llm first, then RecBole.

Models resolve through :mod:`recbole_llm.model.lookup` (re-exported here: ``get_model``);
trainers and dataset classes here. Every RecBole name resolves through the same functions, so
any baseline runs through our entry points. Unknown names fail with the closest known names.
"""

import recbole.data.dataset as recbole_datasets
import recbole.trainer
from recbole.utils import ModelType
from recbole.utils import get_trainer as recbole_get_trainer

from recbole_llm import trainer as our_trainers
from recbole_llm.data import dataset as our_datasets
from recbole_llm.model.lookup import (  # noqa: F401 (their old import path)
    UnknownNameError,
    closest_names,
    get_model,
    known_models,
    unknown_name,
)


def _recbole_trainer_names():
    return [n for n in dir(recbole.trainer) if n.endswith("Trainer")]


def _our_trainer_names():
    return [
        name
        for name, obj in vars(our_trainers).items()
        if name.endswith("Trainer") and getattr(obj, "__module__", None) == our_trainers.__name__
    ]


def get_trainer_class(trainer_name):
    """Return the trainer class called ``trainer_name`` (recbole_llm first, then RecBole)."""
    if trainer_name in _our_trainer_names():
        return getattr(our_trainers, trainer_name)
    if trainer_name.endswith("Trainer") and hasattr(recbole.trainer, trainer_name):
        return getattr(recbole.trainer, trainer_name)
    raise unknown_name("trainer", trainer_name, _our_trainer_names() + _recbole_trainer_names())


def get_trainer(model_type, model_name, trainer_name=None):
    """Return the trainer for a model, with our checkpoint and DDP fixes mixed in.

    Order: ``trainer_name`` if given (config key ``trainer_class``), ``<Model>Trainer`` in
    recbole_llm, then RecBole's choice (``<Model>Trainer``, KG/traditional, base ``Trainer``).
    """
    if trainer_name:
        trainer_class = get_trainer_class(trainer_name)
    elif model_name + "Trainer" in _our_trainer_names():
        trainer_class = getattr(our_trainers, model_name + "Trainer")
    else:
        trainer_class = recbole_get_trainer(model_type, model_name)
    return our_trainers.with_compat(trainer_class)


#: Modules searched for dataset classes: ours, then RecBole's.
_DATASET_MODULES = (our_datasets, recbole_datasets)


def _dataset_class_names():
    return [n for module in _DATASET_MODULES for n in dir(module) if n.endswith("Dataset")]


def get_dataset_class(config):
    """Choose the dataset class for a config.

    Order: config key ``dataset_class``; ``<Model>Dataset`` in recbole_llm, then in RecBole;
    the class a model declares in its ``dataset_class`` attribute; RecBole's choice by model type.
    """
    name = config["dataset_class"]
    if name:
        for module in _DATASET_MODULES:
            if name.endswith("Dataset") and hasattr(module, name):
                return getattr(module, name)
        raise unknown_name("dataset class", name, _dataset_class_names())

    model_dataset = config["model"] + "Dataset"
    for module in _DATASET_MODULES:
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
