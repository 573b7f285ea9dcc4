"""What an LLM may see: histories built from the training split only.

Leakage is defined per interaction:

- EIMF (per user): the training interactions of that user under the split in use, in time
  order. They are read back from RecBole's own training split (its augmented samples), so
  whatever ``eval_args`` says, a user's validation and test targets never reach its prompt;
  for a leave-one-out split in time order (the sequential default) the same histories are
  computed from the unbuilt dataset with the rule RecBole's split follows, without its per-row
  augmentation (:func:`split_training_histories`; a test checks they are the same).
- LLM4SBR (per sample): only the items before the sample's target, i.e. the sample's own
  ``item_id_list``.
"""

from collections import OrderedDict

import numpy as np

from recbole_llm.protocols import comirec_user_parts

#: RecBole's leave-one-out modes and how many of each user's last samples they hold out
HELD_OUT = {"valid_and_test": 2, "valid_only": 1, "test_only": 1}


def training_histories(train_dataset):
    """Time-ordered training items of every user: ``{user token: [item token, ...]}``.

    Works on the training part of a built :class:`~recbole.data.dataset.SequentialDataset`:
    each row is (prefix -> target); a user's training sequence is the prefix of its first row
    followed by the targets of all its rows (truncation of long prefixes does not matter).
    """
    uid_field, iid_field = train_dataset.uid_field, train_dataset.iid_field
    list_field = iid_field + train_dataset.config["LIST_SUFFIX"]
    length_field = train_dataset.config["ITEM_LIST_LENGTH_FIELD"]
    inter = train_dataset.inter_feat
    users = inter[uid_field].tolist()
    targets = inter[iid_field].tolist()
    lengths = inter[length_field].tolist()
    prefixes = inter[list_field]
    histories = OrderedDict()
    for row, user in enumerate(users):
        if user not in histories:
            histories[user] = prefixes[row, : lengths[row]].tolist()
        histories[user].append(targets[row])
    id2user = train_dataset.field2id_token[uid_field]
    id2item = train_dataset.field2id_token[iid_field]
    return OrderedDict(
        (str(id2user[user]), [str(id2item[i]) for i in items]) for user, items in histories.items()
    )


def _leave_one_out_mode(dataset):
    """The ``LS`` mode of an unbuilt, time-ordered sequential dataset whose training histories
    :func:`split_training_histories` can read without building it; None otherwise."""
    config = dataset.config
    eval_args = config["eval_args"] or {}
    split = eval_args.get("split")
    if (
        config["benchmark_filename"]
        or eval_args.get("order") != "TO"
        or not isinstance(split, dict)
        or list(split) != ["LS"]
        or split["LS"] not in HELD_OUT
        or not dataset.time_field
        or getattr(dataset.field2type.get(dataset.time_field), "value", None) != "float"
        or getattr(dataset.inter_feat, "columns", None) is None  # built already
    ):
        return None
    return split["LS"]


def split_training_histories(dataset):
    """``training_histories(dataset.build()[0])`` of an unbuilt sequential dataset, without
    RecBole's per-row augmentation where the split allows (``LS`` in time order, no benchmark
    files): the same users in the same order, the same items.

    RecBole sorts each user's interactions by time (its ``float32`` timestamps, ties in file
    order), makes one sample per interaction but the first, orders the samples by their
    target's time (stable) and holds out each user's last one or two (never its only one); a
    user's training history is its first items up to its last training target, and users come
    in the order of their first sample. Other splits build the dataset.
    """
    if dataset.config["eval_protocol"] == "comirec":
        return comirec_training_histories(dataset)
    mode = _leave_one_out_mode(dataset)
    if mode is None:
        return training_histories(dataset.build()[0])
    users, items, times, first, starts, counts = _sorted_interactions(dataset)
    # the position of each user's first sample (its second interaction) among all samples
    # ordered by their target's time
    sample_rows = np.flatnonzero(~first)
    rank = np.empty(len(sample_rows), dtype=np.int64)
    rank[np.argsort(times[sample_rows], kind="stable")] = np.arange(len(sample_rows))
    with_samples = counts >= 2
    first_sample = np.searchsorted(sample_rows, starts[with_samples] + 1)
    user_order = np.flatnonzero(with_samples)[np.argsort(rank[first_sample], kind="stable")]
    samples = counts - 1
    training = samples - np.minimum(HELD_OUT[mode], samples - 1)
    # a user's history: its first item and the targets of its training samples
    return _token_histories(dataset, users, items, starts[user_order], training[user_order] + 1)


def _sorted_interactions(dataset):
    """An unbuilt dataset's interactions as RecBole sorts them (by user, then its ``float32``
    timestamp, ties in file order): users, items, times, whether each is its user's first, and
    each user's first position and count."""
    inter = dataset.inter_feat
    users = inter[dataset.uid_field].to_numpy()
    items = inter[dataset.iid_field].to_numpy()
    times = inter[dataset.time_field].to_numpy(dtype=np.float64).astype(np.float32)
    order = np.lexsort((times, users))  # stable: by user, then time, then file order
    users, items, times = users[order], items[order], times[order]
    first = np.ones(len(users), dtype=bool)
    first[1:] = users[1:] != users[:-1]
    starts = np.flatnonzero(first)
    counts = np.diff(np.append(starts, len(users)))
    return users, items, times, first, starts, counts


def time_ordered_sequences(dataset):
    """Every user's whole sequence of an unbuilt dataset, sorted as RecBole sorts it:
    ``{user token: [item token, ...]}``. Validation and test items included: for diagnostics
    that score a held-out item (``benchmarks/probe_eimf_prompts.py``), never for a prompt."""
    users, items, _, _, starts, counts = _sorted_interactions(dataset)
    return _token_histories(dataset, users, items, starts, counts)


def _token_histories(dataset, users, items, starts, lengths):
    """``{user token: [item token, ...]}`` of the sorted interactions, one user per start, its
    ``length`` items from there, in the order given."""
    id2user = dataset.field2id_token[dataset.uid_field]
    item_tokens = [str(t) for t in dataset.field2id_token[dataset.iid_field]]
    tokens = [item_tokens[i] for i in items.tolist()]
    return OrderedDict(
        (str(id2user[users[start]]), tokens[start : start + length])
        for start, length in zip(starts.tolist(), lengths.tolist())
    )


def sample_prefixes(dataset_part, key_field):
    """Items before each sample's target: ``{sample key: [item token, ...]}`` (LLM4SBR)."""
    iid_field = dataset_part.iid_field
    list_field = iid_field + dataset_part.config["LIST_SUFFIX"]
    length_field = dataset_part.config["ITEM_LIST_LENGTH_FIELD"]
    inter = dataset_part.inter_feat
    prefixes = inter[list_field].numpy()
    lengths = np.minimum(inter[length_field].numpy(), prefixes.shape[1])
    ends = np.cumsum(lengths).tolist()
    item_tokens = [str(t) for t in dataset_part.field2id_token[iid_field]]
    shown = prefixes[np.arange(prefixes.shape[1]) < lengths[:, None]]
    tokens = [item_tokens[i] for i in shown.tolist()]
    id2key = dataset_part.field2id_token[key_field]
    return OrderedDict(
        (str(id2key[key]), tokens[end - length : end])
        for key, length, end in zip(inter[key_field].tolist(), lengths.tolist(), ends)
    )


def comirec_training_histories(dataset):
    """Under ``eval_protocol: comirec`` (:func:`recbole_llm.data.evaluation.comirec_split`):
    the training users' whole sequences, in time order, users in id order. Validation and test
    users are other users, held out whole, so none of their items reaches a prompt."""
    users, items, _, _, starts, counts = _sorted_interactions(dataset)
    with_samples = counts >= 2  # the protocol's users: those with at least one sample
    starts, counts = starts[with_samples], counts[with_samples]
    train = np.sort(comirec_user_parts(len(starts))[0])
    return _token_histories(dataset, users, items, starts[train], counts[train])
