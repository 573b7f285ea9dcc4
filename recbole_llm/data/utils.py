"""Dataset creation and splitting: RecBole's, made aware of recbole_llm's keys and files.

RecBole reuses a pickled dataset (``save_dataset``) or saved dataloaders (``save_dataloaders``)
when its own ``dataset_arguments`` match, so a changed extension key or a regenerated atomic
file would be silently ignored. Here both are reused only when our
:data:`recbole_llm.keys.DATASET_ARGUMENTS` match too and the dataset's atomic files have the
same size and modification time as when the pickle was made.

The split follows ``eval_protocol`` (RecBole's, or EIMF's ComiRec protocol), and with
``mask_history`` on each full-ranking evaluation loader gets the history of its rows: both in
:mod:`recbole_llm.data.evaluation`.
"""

import hashlib
import os
import pickle
from logging import getLogger

import numpy as np
import pandas as pd
from recbole.data.utils import create_samplers, get_dataloader, load_split_dataloaders
from recbole.sampler import KGSampler
from recbole.utils import ModelType, set_color
from recbole.utils.argument_list import dataset_arguments as recbole_dataset_arguments

from recbole_llm.data.checks import check_atomic_files
from recbole_llm.data.evaluation import (  # noqa: F401 (EvalHistory: its old import path)
    EvalHistory,
    MultiTargetEvalDataLoader,
    attach_eval_histories,
    comirec_split,
    protocol_of,
)
from recbole_llm.data.prepare import ensure_dataset
from recbole_llm.keys import DATASET_ARGUMENTS
from recbole_llm.semantics.files import semantics_dir
from recbole_llm.utils import atomic_write


def source_files(config):
    """The files a dataset is built from: ``<dataset>.*`` in its data folder and, when set
    apart, in its semantics folder."""
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
    atomic_write(path, lambda f: pickle.dump(dataset, f), binary=True)
    getLogger().info(set_color("Saving filtered dataset into ", "pink") + f"[{path}]")


def duplicate_interactions(dataset):
    """Rows of a dataset's interactions identical in every loaded column (user, item, time,
    rating, ...) to an earlier row: ``(count, "user_id 1, item_id 2"`` for the first one)."""
    inter = dataset.inter_feat
    if isinstance(inter, pd.DataFrame):  # before RecBole turns it into tensors
        hashable = inter.apply(
            lambda column: column.map(tuple) if column.dtype == object else column
        )
        repeated = hashable.duplicated().to_numpy()
        if not repeated.any():
            return 0, None
        row = int(np.flatnonzero(repeated)[0])
        return int(repeated.sum()), _example(dataset, lambda f: inter[f].iloc[row], inter.columns)
    if not len(inter) or not inter.columns:
        return 0, None
    # one fixed-width byte string per row (every column as float64, exact for ids and times)
    rows = np.concatenate(
        [inter[name].numpy().reshape(len(inter), -1).astype(np.float64) for name in inter.columns],
        axis=1,
    )
    rows = np.ascontiguousarray(rows).view(np.dtype((np.void, rows.shape[1] * 8))).ravel()
    repeated = pd.Series(rows).duplicated().to_numpy()
    if not repeated.any():
        return 0, None
    row = int(np.flatnonzero(repeated)[0])
    return int(repeated.sum()), _example(dataset, lambda f: inter[f][row].item(), inter.columns)


def _example(dataset, value, columns):
    """``"user_id 1, item_id 2"``: the raw user and item of one row (``value(field)``)."""
    parts = []
    for field in (dataset.uid_field, dataset.iid_field):
        if field not in columns:
            continue
        raw = value(field)
        try:
            raw = dataset.id2token(field, raw)
        except (KeyError, IndexError, TypeError, ValueError):
            pass  # not remapped yet
        parts.append(f"{field} {raw}")
    return ", ".join(parts)


def warn_duplicate_interactions(dataset):
    """Warn, with their count and an example, about interactions that repeat an earlier row
    exactly: RecBole keeps them (``rm_dup_inter`` is off by default), so each one counts twice
    in training and evaluation. Returns the count."""
    count, example = duplicate_interactions(dataset)
    if count:
        name = dataset.config["dataset"]
        getLogger().warning(
            f"Dataset '{name}': {count} of {len(dataset.inter_feat)} interactions repeat an "
            f"earlier row exactly (the first: {example}); RecBole keeps them, so each counts "
            "twice. Remove them from the .inter file, or set rm_dup_inter: first to keep one "
            "interaction per user and item."
        )
    return count


def build_dataset(config, dataset_class):
    """Build (or reuse a still valid pickle of) the dataset a config describes, of class
    ``dataset_class`` (:func:`recbole_llm.quick_start.create_dataset` chooses it and runs the
    semantic step first).

    A known dataset (ml-100k, ml-1m, ...) missing from the data root is prepared first; an
    unknown missing one raises ``FileNotFoundError`` saying what to do.
    """
    ensure_dataset(config)
    check_atomic_files(config)
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
    warn_duplicate_interactions(dataset)
    dataset.source_fingerprint = source_fingerprint(config)
    if config["save_dataset"]:
        _save_dataset(dataset)
    return dataset


def data_preparation(config, dataset):
    """Split a dataset into train, valid and test dataloaders (RecBole's ``data_preparation``),
    under the config's ``eval_protocol`` (RecBole's split, or ComiRec's user split: one row per
    validation or test user, with all its targets).

    Saved dataloaders are reused only under the same conditions as a pickled dataset.
    """
    protocol = protocol_of(config)
    loaded = load_split_dataloaders(config)
    if loaded is not None and _reusable(
        config, loaded[0].config, getattr(loaded[0]._dataset, "source_fingerprint", None)
    ):
        dataset._change_feat_format()
        attach_eval_histories(config, *loaded)
        return loaded

    built_datasets = comirec_split(dataset) if protocol == "comirec" else dataset.build()
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
    valid_loader, test_loader = get_dataloader(config, "valid"), get_dataloader(config, "test")
    if protocol == "comirec":  # one row per user, several targets
        valid_loader = test_loader = MultiTargetEvalDataLoader
    valid_data = valid_loader(config, valid_dataset, valid_sampler, shuffle=False)
    test_data = test_loader(config, test_dataset, test_sampler, shuffle=False)
    if config["save_dataloaders"]:
        from recbole.data.utils import save_split_dataloaders

        save_split_dataloaders(config, dataloaders=(train_data, valid_data, test_data))
    attach_eval_histories(config, train_data, valid_data, test_data)  # after saving: not pickled

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
