"""What each evaluation row holds: its targets, its history, and the protocol that makes them.

Two evaluation protocols (``eval_protocol``):

- ``recbole`` (the default): RecBole's own split, as ``eval_args`` says (leave-one-out in time
  order in our benchmark configs); a sequential model is evaluated once per sample, on one
  target.
- ``comirec``: the protocol of EIMF's official code, ComiRec's (Cen et al., "Controllable
  Multi-Interest Framework for Recommendation", KDD 2020; THUDM/ComiRec). Labelled, never the
  default, for every sequential model on a dataset of user sequences (not benchmark files).
  Users are shuffled (seed :data:`recbole_llm.protocols.COMIREC_SPLIT_SEED`, ComiRec's preprocessing seed, the same
  for every training seed) and split 8:1:1. Training users' whole sequences train (RecBole's
  prefix augmentation: every prefix predicts its next item). A validation or test user of ``n``
  interactions (time order) is one evaluation row: its first ``floor(0.8 n)`` items are the
  history (the model reads the last ``MAX_ITEM_LIST_LENGTH``), the other items are its targets,
  ranked at once among all items; RecBole's multi-positive full-ranking metrics then give
  Recall@K = hits / targets, NDCG@K (ideal DCG over min(targets, K)) and Hit@K. Validation and
  test users never train.

With ``mask_history`` on, each full-ranking evaluation loader also gets an :class:`EvalHistory`:
the items each evaluated row had interacted with before its target(s), which the trainer removes
from a copy of the row's ranking (see :meth:`recbole_llm.trainer.CompatTrainerMixin.evaluate`).
"""

import numpy as np
import torch
from recbole.data.dataloader import FullSortEvalDataLoader
from recbole.utils import ModelType

from recbole_llm.errors import UserError
from recbole_llm.protocols import PROTOCOLS, comirec_user_parts


def protocol_of(config):
    """The config's ``eval_protocol``, checked: ``comirec`` needs a sequential model on user
    sequences and full-ranking evaluation. EIMF's semantic step then reads the protocol's
    training users only (:func:`recbole_llm.semantics.history.comirec_training_histories`)."""
    protocol = config["eval_protocol"] or "recbole"
    if protocol not in PROTOCOLS:
        raise UserError(f"eval_protocol must be one of {', '.join(PROTOCOLS)}, got '{protocol}'")
    if protocol == "recbole":
        return protocol
    problem = None
    if config["MODEL_TYPE"] != ModelType.SEQUENTIAL:
        problem = f"{config['model']} is not a sequential model"
    elif config["benchmark_filename"]:
        problem = "the dataset is given as benchmark files (already split: sessions)"
    elif any(config["eval_args"]["mode"][phase] != "full" for phase in ("valid", "test")):
        problem = f"eval_args mode is {config['eval_args']['mode']}, not full ranking"
    if problem:
        raise UserError(
            f"eval_protocol: comirec ranks one row per validation/test user of a sequential "
            f"model on user sequences, but {problem}. Use eval_protocol: recbole."
        )
    return protocol


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
      under the ComiRec protocol, the user's history items (the first 80 %);
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
    if hasattr(valid_data._dataset, "eval_history"):  # the protocol's own (ComiRec)
        valid_data.eval_history = valid_data._dataset.eval_history
        test_data.eval_history = test_data._dataset.eval_history
    elif config["MODEL_TYPE"] == ModelType.SEQUENTIAL:  # RecBole splits these in time order only
        _, valid_data.eval_history, test_data.eval_history = _sample_histories(datasets)
    else:
        user_num = train_data._dataset.user_num
        valid_data.eval_history = _user_histories(datasets[:1], user_num)
        test_data.eval_history = _user_histories(datasets[:2], user_num)


def comirec_split(dataset):
    """The ComiRec protocol's (train, valid, test) datasets from a sequential dataset (see the
    module docstring). Validation and test datasets hold one row per user (its history as the
    row's item list, its first target as ``item_id``) and the attributes ``eval_targets`` and
    ``eval_history`` (:class:`EvalHistory` keyed by row position)."""
    dataset._change_feat_format()  # Interactions, with RecBole's prefix augmentation
    dataset._drop_unused_col()
    inter = dataset.inter_feat
    uid_field, iid_field = dataset.uid_field, dataset.iid_field
    order = np.argsort(inter[uid_field].numpy(), kind="stable")  # users, each in time order
    inter = inter[torch.as_tensor(order)]
    uids = inter[uid_field].numpy()
    targets = inter[iid_field].numpy()
    first = np.r_[True, uids[1:] != uids[:-1]]
    starts = np.flatnonzero(first)
    counts = np.diff(np.r_[starts, len(uids)])  # a user of n items has n - 1 rows
    users = uids[starts]

    parts = comirec_user_parts(len(users))  # positions in ``users`` of train, valid, test users
    train_rows = np.concatenate([np.arange(starts[u], starts[u] + counts[u]) for u in parts[0]])
    built = [dataset.copy(inter[torch.as_tensor(np.sort(train_rows))])]
    first_items = inter[dataset.item_id_list_field][:, 0].numpy()
    for positions in parts[1:]:
        positions = np.sort(positions)  # rows in user order
        n = counts[positions] + 1
        k = 4 * n // 5  # floor(0.8 n) history items, at least 1 for n >= 2
        stream_start = np.cumsum(n) - n
        items = np.zeros(int(n.sum()), dtype=np.int64)
        items[stream_start] = first_items[starts[positions]]
        for user, at in zip(positions, stream_start):  # the user's other items: row targets
            items[at + 1 : at + 1 + counts[user]] = targets[
                starts[user] : starts[user] + counts[user]
            ]
        rows = starts[positions] + k - 1  # the row whose target is item k: its list is items[:k]
        part = dataset.copy(inter[torch.as_tensor(rows)])
        part.eval_history = EvalHistory(items, stream_start, stream_start + k, by_user=False)
        part.eval_targets = EvalHistory(items, stream_start + k, stream_start + n, by_user=False)
        built.append(part)
    return built


class MultiTargetEvalDataLoader(FullSortEvalDataLoader):
    """RecBole's full-ranking loader for rows with several targets each (the ComiRec protocol):
    a batch's positives are every target of its rows (``eval_targets`` of its dataset)."""

    def collate_fn(self, index):
        interaction, history_index, _, _ = super().collate_fn(index)
        rows, items = self._dataset.eval_targets.index(np.asarray(index))
        return interaction, history_index, rows, items
