"""Dataset creation and splitting: RecBole's, made aware of recbole_llm's keys and files.

RecBole reuses a pickled dataset (``save_dataset``) or saved dataloaders (``save_dataloaders``)
when its own ``dataset_arguments`` match, so a changed extension key or a regenerated atomic
file would be silently ignored. Here both are reused only when our
:data:`recbole_llm.keys.DATASET_ARGUMENTS` match too and the dataset's atomic files have the
same size and modification time as when the pickle was made.

With ``mask_history`` on, each full-ranking evaluation loader also gets an
:class:`EvalHistory`: the items each evaluated row had interacted with before its target,
which the trainer removes from a copy of the row's ranking (see
:meth:`recbole_llm.trainer.CompatTrainerMixin.evaluate`).
"""

import hashlib
import os
import pickle
from logging import getLogger

import numpy as np
import pandas as pd
import torch
from recbole.data.utils import create_samplers, get_dataloader, load_split_dataloaders
from recbole.sampler import KGSampler
from recbole.utils import ModelType, set_color
from recbole.utils.argument_list import dataset_arguments as recbole_dataset_arguments

from recbole_llm.data.checks import check_atomic_files
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
    """Split a dataset into train, valid and test dataloaders (RecBole's ``data_preparation``).

    Saved dataloaders are reused only under the same conditions as a pickled dataset.
    """
    loaded = load_split_dataloaders(config)
    if loaded is not None and _reusable(
        config, loaded[0].config, getattr(loaded[0]._dataset, "source_fingerprint", None)
    ):
        dataset._change_feat_format()
        attach_eval_histories(config, *loaded)
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


class EvalHistory:
    """The items each row of a full-ranking evaluation loader had interacted with before its
    target: what ``mask_history`` removes from that row's ranking.

    Row keys are user ids (``by_user``: general models evaluate one row per user) or, for
    sequential models (one row per sample), the row's position in the loader's dataset. The
    items of key ``k`` are ``items[start[k]:end[k]]``; they may repeat, and with repeat
    consumption a row's own target may be among them (the trainer keeps targets unmasked).
    """

    def __init__(self, items, start, end, by_user):
        self.items = torch.as_tensor(np.asarray(items), dtype=torch.int64)
        self.start = torch.as_tensor(np.asarray(start), dtype=torch.int64)
        self.end = torch.as_tensor(np.asarray(end), dtype=torch.int64)
        self.by_user = by_user

    def __len__(self):
        return len(self.start)

    def items_of(self, key):
        """The history items of one row key, as a tensor."""
        return self.items[self.start[key] : self.end[key]]

    def index(self, keys):
        """``(row_index, item_index)`` of the history items of a batch whose rows have these
        keys, ready for ``scores[row_index, item_index] = -inf``."""
        keys = torch.as_tensor(keys, dtype=torch.int64).cpu()
        start = self.start[keys]
        lengths = self.end[keys] - start
        rows = torch.repeat_interleave(torch.arange(len(keys)), lengths)
        first = torch.cumsum(lengths, 0) - lengths  # where each row's items begin in the batch
        offsets = torch.arange(int(lengths.sum())) - first[rows] + start[rows]
        return rows, self.items[offsets]


def _user_histories(datasets, user_num):
    """General models: each user's items in ``datasets`` (the splits before the evaluated one)."""
    uid_field, iid_field = datasets[0].uid_field, datasets[0].iid_field
    uids = np.concatenate([d.inter_feat[uid_field].numpy() for d in datasets])
    items = np.concatenate([d.inter_feat[iid_field].numpy() for d in datasets])
    counts = np.bincount(uids, minlength=user_num)
    end = np.cumsum(counts)
    return EvalHistory(items[np.argsort(uids, kind="stable")], end - counts, end, by_user=True)


def _sample_histories(datasets):
    """Sequential models: one :class:`EvalHistory` per dataset, keyed by row position.

    The rows of ``datasets`` (train, valid, test), taken in that order, are each user's samples
    in time order (RecBole's augmentation of a time-ordered split, or benchmark files). A user's
    item stream is its first sample's ``item_id_list`` followed by every sample's target; a
    sample's history is the stream up to (not including) its own target. For augmented data
    that is exactly every item the user had before the target, however long; for benchmark
    files it is the first sample's stored list plus the earlier samples' targets (one session
    per id: the session's items before the target).
    """
    first_set = datasets[0]
    uid_field, iid_field = first_set.uid_field, first_set.iid_field
    list_field, length_field = first_set.item_id_list_field, first_set.item_list_length_field
    width = max(d.inter_feat[list_field].shape[1] for d in datasets)
    uids = np.concatenate([d.inter_feat[uid_field].numpy() for d in datasets])
    targets = np.concatenate([d.inter_feat[iid_field].numpy() for d in datasets])
    lengths = np.concatenate([d.inter_feat[length_field].numpy() for d in datasets])
    lists = np.zeros((len(uids), width), dtype=np.int64)
    row = 0
    for d in datasets:
        part = d.inter_feat[list_field].numpy()
        lists[row : row + len(part), : part.shape[1]] = part
        row += len(part)

    order = np.argsort(uids, kind="stable")  # rows grouped by user, each user's in time order
    first = np.r_[True, uids[order][1:] != uids[order][:-1]]
    group = np.cumsum(first) - 1  # the user group of each sorted row
    group_start = np.flatnonzero(first)
    rank = np.arange(len(order)) - group_start[group]  # the row's sample number in its group
    first_rows = order[first]
    first_len = lengths[first_rows]
    stream_len = first_len + np.diff(np.r_[group_start, len(order)])
    stream_start = np.cumsum(stream_len) - stream_len
    items = np.zeros(int(stream_len.sum()), dtype=np.int64)
    in_list = np.arange(width)[None, :] < first_len[:, None]
    positions = stream_start[:, None] + np.arange(width)[None, :]
    items[positions[in_list]] = lists[first_rows][in_list]
    items[stream_start[group] + first_len[group] + rank] = targets[order]

    start, end = np.empty(len(order), dtype=np.int64), np.empty(len(order), dtype=np.int64)
    start[order] = stream_start[group]
    end[order] = stream_start[group] + first_len[group] + rank
    histories, row = [], 0
    for d in datasets:
        n = len(d.inter_feat)
        histories.append(EvalHistory(items, start[row : row + n], end[row : row + n], False))
        row += n
    return histories


def attach_eval_histories(config, train_data, valid_data, test_data):
    """With ``mask_history`` on, give the valid and test loaders their :class:`EvalHistory`.

    What "before the target" means:

    - sequential models: every item of the sample's user (for session datasets the session
      id) that came before the target in time, in any split (see :func:`_sample_histories`);
    - general models: the user's items in the earlier splits (train for valid, train and valid
      for test), the items RecBole itself masks unless ``repeatable`` is on; masking them again
      changes nothing there.
    """
    mask_history = config["mask_history"]
    if mask_history is None or mask_history is False:
        return
    if mask_history is not True:
        raise ValueError(f"mask_history must be True or False, got {mask_history!r}")
    modes = config["eval_args"]["mode"]
    partial = {phase: modes[phase] for phase in ("valid", "test") if modes[phase] != "full"}
    if partial:
        raise ValueError(
            f"mask_history masks full-ranking evaluation only, but eval_args mode is {partial}; "
            "set eval_args mode: full or drop mask_history"
        )
    datasets = [train_data._dataset, valid_data._dataset, test_data._dataset]
    if config["MODEL_TYPE"] == ModelType.SEQUENTIAL:  # RecBole splits these in time order only
        _, valid_data.eval_history, test_data.eval_history = _sample_histories(datasets)
    else:
        user_num = train_data._dataset.user_num
        valid_data.eval_history = _user_histories(datasets[:1], user_num)
        test_data.eval_history = _user_histories(datasets[:2], user_num)
