"""What an LLM may see: histories built from the training split only.

Leakage is defined per interaction:

- EIMF (per user): the training interactions of that user under the split in use, in time
  order. They are read back from RecBole's own training split (its augmented samples), so
  whatever ``eval_args`` says, a user's validation and test targets never reach its prompt.
- LLM4SBR (per sample): only the items before the sample's target, i.e. the sample's own
  ``item_id_list``.
"""

from collections import OrderedDict


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


def sample_prefixes(dataset_part, key_field):
    """Items before each sample's target: ``{sample key: [item token, ...]}`` (LLM4SBR)."""
    iid_field = dataset_part.iid_field
    list_field = iid_field + dataset_part.config["LIST_SUFFIX"]
    length_field = dataset_part.config["ITEM_LIST_LENGTH_FIELD"]
    inter = dataset_part.inter_feat
    keys = inter[key_field].tolist()
    lengths = inter[length_field].tolist()
    prefixes = inter[list_field]
    id2key = dataset_part.field2id_token[key_field]
    id2item = dataset_part.field2id_token[iid_field]
    return OrderedDict(
        (str(id2key[key]), [str(id2item[i]) for i in prefixes[row, : lengths[row]].tolist()])
        for row, key in enumerate(keys)
    )
