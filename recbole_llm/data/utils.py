"""Dataset creation and splitting: RecBole's, made aware of recbole_llm's keys and files.

RecBole reuses a pickled dataset (``save_dataset``) or saved dataloaders (``save_dataloaders``)
when its own ``dataset_arguments`` match, so a changed extension key or a regenerated atomic
file would be silently ignored. Here both are reused only when our
:data:`recbole_llm.config.DATASET_ARGUMENTS` match too and the dataset's atomic files have the
same size and modification time as when the pickle was made.
"""

import hashlib
import os
import pickle
from logging import getLogger

from recbole.data.utils import create_samplers, get_dataloader, load_split_dataloaders
from recbole.sampler import KGSampler
from recbole.utils import ModelType, set_color
from recbole.utils.argument_list import dataset_arguments as recbole_dataset_arguments

from recbole_llm import registry
from recbole_llm.config import DATASET_ARGUMENTS
from recbole_llm.data.prepare import ensure_dataset


def source_files(config):
    """The files a dataset is built from: ``<dataset>.*`` in its data folder and, when set
    apart, in its semantics folder."""
    from recbole_llm.semantics.files import semantics_dir

    prefix = f"{config['dataset']}."
    folders = {os.path.abspath(config["data_path"]), semantics_dir(config)}
    return sorted(
        os.path.join(folder, name)
        for folder in folders
        if os.path.isdir(folder)
        for name in os.listdir(folder)
        if name.startswith(prefix) and os.path.isfile(os.path.join(folder, name))
    )


def source_fingerprint(config):
    """A hash of the dataset's files' names, sizes and modification times."""
    digest = hashlib.sha256()
    for path in source_files(config):
        stat = os.stat(path)
        digest.update(f"{path}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _reusable(config, saved_config, saved_fingerprint):
    keys = recbole_dataset_arguments + ["seed", "repeatable"] + DATASET_ARGUMENTS
    if any(config[key] != saved_config[key] for key in keys):
        return False
    return saved_fingerprint == source_fingerprint(config)


def _save_dataset(dataset):
    folder = dataset.config["checkpoint_dir"]
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f'{dataset.config["dataset"]}-{dataset.__class__.__name__}.pth')
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        pickle.dump(dataset, f)
    os.replace(tmp, path)
    getLogger().info(set_color("Saving filtered dataset into ", "pink") + f"[{path}]")


def create_dataset(config):
    """Build (or reuse a still valid pickle of) the dataset a config describes.

    A known dataset (ml-100k, ml-1m, ...) missing from the data root is prepared first; an
    unknown missing one raises ``FileNotFoundError`` saying what to do.
    """
    ensure_dataset(config)
    dataset_class = registry.get_dataset_class(config)
    default_file = os.path.join(
        config["checkpoint_dir"], f'{config["dataset"]}-{dataset_class.__name__}.pth'
    )
    file = config["dataset_save_path"] or default_file
    if os.path.exists(file):
        with open(file, "rb") as f:
            saved = pickle.load(f)
        if _reusable(config, saved.config, getattr(saved, "source_fingerprint", None)):
            getLogger().info(set_color("Load filtered dataset from", "pink") + f": [{file}]")
            return saved

    dataset = dataset_class(config)
    dataset.source_fingerprint = source_fingerprint(config)
    if config["save_dataset"]:
        _save_dataset(dataset)
    return dataset


def data_preparation(config, dataset):
    """Split a dataset into train, valid and test dataloaders (RecBole's ``data_preparation``).

    Saved dataloaders are reused only under the same conditions as a pickled dataset.
    """
    loaded = load_split_dataloaders(config)
    if loaded is not None and _reusable(
        config, loaded[0].config, getattr(loaded[0]._dataset, "source_fingerprint", None)
    ):
        dataset._change_feat_format()
        return loaded

    built_datasets = dataset.build()
    train_dataset, valid_dataset, test_dataset = built_datasets
    train_sampler, valid_sampler, test_sampler = create_samplers(config, dataset, built_datasets)
    if config["MODEL_TYPE"] == ModelType.KNOWLEDGE:
        kg_sampler = KGSampler(
            dataset,
            config["train_neg_sample_args"]["distribution"],
            config["train_neg_sample_args"]["alpha"],
        )
        train_data = get_dataloader(config, "train")(
            config, train_dataset, train_sampler, kg_sampler, shuffle=True
        )
    else:
        train_data = get_dataloader(config, "train")(
            config, train_dataset, train_sampler, shuffle=config["shuffle"]
        )
    valid_data = get_dataloader(config, "valid")(
        config, valid_dataset, valid_sampler, shuffle=False
    )
    test_data = get_dataloader(config, "test")(config, test_dataset, test_sampler, shuffle=False)
    if config["save_dataloaders"]:
        from recbole.data.utils import save_split_dataloaders

        save_split_dataloaders(config, dataloaders=(train_data, valid_data, test_data))

    logger = getLogger()
    logger.info(
        set_color("[Training]: ", "pink")
        + set_color("train_batch_size", "cyan")
        + " = "
        + set_color(f'[{config["train_batch_size"]}]', "yellow")
        + set_color(" train_neg_sample_args", "cyan")
        + ": "
        + set_color(f'[{config["train_neg_sample_args"]}]', "yellow")
    )
    logger.info(
        set_color("[Evaluation]: ", "pink")
        + set_color("eval_batch_size", "cyan")
        + " = "
        + set_color(f'[{config["eval_batch_size"]}]', "yellow")
        + set_color(" eval_args", "cyan")
        + ": "
        + set_color(f'[{config["eval_args"]}]', "yellow")
    )
    return train_data, valid_data, test_data
