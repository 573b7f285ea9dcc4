"""Session datasets in RecBole's benchmark-file form, built from a dataset with timestamps.

The rule follows the official LLM4SBR code (the paper only says "10-minute intervals"):

1. per user, interactions fall into fixed 10-minute buckets (``floor(timestamp / 600)``); one
   (user, bucket) is one session, items in time order;
2. sessions that contain an item seen fewer than 5 times in the whole data are dropped, then
   sessions shorter than 2;
3. one sample per session: the last item is the target, the earlier ones (at most the last
   ``max_length``) its ``item_id_list``;
4. samples are ordered by the time of their target and split 80 / 10 / 10 into train, valid and
   test, so that model selection uses validation and the test samples come last.

``ml-1m-session`` keeps a fixed random 10,000 of its samples (seed 0): two LLM prompts per
sample for all of ml-1m (about 100,000 prompts) do not fit a CPU budget. ``ml-100k-session-1k``
keeps 1,000 of ml-100k's (seed 0) for the LLM-size study (see ``prepare.SESSION_DATASETS``).

A dataset that is ordered but not timed (Amazon Beauty in the S3-Rec form) has no 10-minute
buckets; :func:`write_sequence_session_dataset` follows the official code's Beauty instead:

1. each user's whole sequence is one session, and every prefix of it is a sample (the prefix,
   at most its last ``max_length`` items, as ``item_id_list``; the next item the target);
2. a fixed random subset of the samples is kept (seed 0), drawn before the split;
3. the split is by session, as the official code's: the users, shuffled (seed 0), are cut
   80 / 10 / 10, and each kept sample goes where its user went, so no session has samples in
   two splits. (The official code cuts 90 / 10 into train and test in id order.)

Output: ``<name>.train.inter``, ``<name>.valid.inter``, ``<name>.test.inter`` with
``session_id:token item_id_list:token_seq item_id:token timestamp:float`` (the target's time),
plus the source's ``.item`` file.
"""

import collections
import os
import random

from recbole_llm.data.atomic import write_atomic_file
from recbole_llm.utils import atomic_copy

BUCKET_SECONDS = 600
MIN_ITEM_COUNT = 5
MIN_SESSION_LENGTH = 2
SPLIT = (0.8, 0.1, 0.1)
PARTS = ("train", "valid", "test")


def read_interactions(path):
    """``(user, item, timestamp)`` rows of an atomic ``.inter`` file."""
    import pandas as pd

    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    columns = {c.split(":")[0]: c for c in frame.columns}
    for needed in ("user_id", "item_id", "timestamp"):
        if needed not in columns:
            raise ValueError(f"'{path}' has no {needed} column; sessions need user, item and time.")
    return list(
        zip(
            frame[columns["user_id"]],
            frame[columns["item_id"]],
            frame[columns["timestamp"]].astype(float),
        )
    )


def build_sessions(interactions, max_length=50):
    """Samples ``(target time, item list, target)`` following the module's rule, in time order,
    and counts of what each step kept."""
    by_session = collections.defaultdict(list)
    for order, (user, item, timestamp) in enumerate(interactions):
        by_session[(user, int(timestamp // BUCKET_SECONDS))].append((timestamp, order, item))
    counts = collections.Counter(item for _, item, _ in interactions)
    stats = {"interactions": len(interactions), "sessions": len(by_session)}
    samples = []
    kept_rare = 0
    for events in by_session.values():
        events.sort()
        items = [item for _, _, item in events]
        if any(counts[item] < MIN_ITEM_COUNT for item in items):
            continue
        kept_rare += 1
        if len(items) < MIN_SESSION_LENGTH:
            continue
        samples.append((events[-1][0], events[-1][1], items[:-1][-max_length:], items[-1]))
    samples.sort(key=lambda s: (s[0], s[1]))
    stats["sessions_without_rare_items"] = kept_rare
    stats["samples"] = len(samples)
    return [(t, items, target) for t, _, items, target in samples], stats


def split_samples(samples):
    """Time-ordered samples cut 80 / 10 / 10 into train, valid and test."""
    n = len(samples)
    first, second = int(round(n * SPLIT[0])), int(round(n * (SPLIT[0] + SPLIT[1])))
    return {"train": samples[:first], "valid": samples[first:second], "test": samples[second:]}


def fixed_subset(samples, max_samples, stats):
    """At most ``max_samples`` of ``samples``, a fixed random subset (seed 0) in their order;
    ``stats`` records the count before (``subset_of``) and after (``samples``)."""
    if not max_samples or len(samples) <= max_samples:
        return samples
    keep = sorted(random.Random(0).sample(range(len(samples)), max_samples))
    stats["subset_of"], stats["samples"] = stats["samples"], max_samples
    return [samples[i] for i in keep]


def write_session_dataset(
    source_folder, source_name, folder, name, max_length=50, max_samples=None
):
    """Build session dataset ``name`` in ``folder`` from ``source_folder/source_name``;
    returns the counts of each step and split.

    ``max_samples`` keeps a fixed random subset of the samples (seed 0, chosen before the
    time-ordered split), for datasets too large to prompt an LLM for every session.
    """
    interactions = read_interactions(os.path.join(source_folder, f"{source_name}.inter"))
    samples, stats = build_sessions(interactions, max_length=max_length)
    samples = fixed_subset(samples, max_samples, stats)
    if len(samples) < 10:
        raise ValueError(f"Only {len(samples)} sessions survive the rule; too few to split.")
    parts = split_samples(samples)
    atomic_copy(
        os.path.join(source_folder, f"{source_name}.item"), os.path.join(folder, f"{name}.item")
    )
    session_id = 0
    for part in PARTS:
        rows = []
        for timestamp, items, target in parts[part]:
            session_id += 1
            rows.append((str(session_id), " ".join(items), target, f"{timestamp:.0f}"))
        write_atomic_file(
            os.path.join(folder, f"{name}.{part}.inter"),
            ["session_id:token", "item_id_list:token_seq", "item_id:token", "timestamp:float"],
            rows,
        )
        stats[part] = len(rows)
    return stats


def sequence_samples(interactions, max_length=50):
    """Every prefix of each user's time-ordered sequence as a sample: ``(user, target
    position, item list, target)``, users in order of first appearance."""
    by_user = collections.OrderedDict()
    for order, (user, item, timestamp) in enumerate(interactions):
        by_user.setdefault(user, []).append((timestamp, order, item))
    samples = []
    for user, events in by_user.items():
        items = [item for _, _, item in sorted(events)]
        for k in range(1, len(items)):
            samples.append((user, k + 1, items[:k][-max_length:], items[k]))
    return list(by_user), samples


def write_sequence_session_dataset(
    source_folder,
    source_name,
    folder,
    name,
    max_length=50,
    max_samples=None,
    seq_separator=" ",
):
    """Build session dataset ``name`` in ``folder`` from an ordered, untimed
    ``source_folder/source_name``: one session per user, its prefixes as samples, split by
    session (the rule in the module docstring); returns the counts.

    ``seq_separator`` joins ``item_id_list`` (the dataset YAML's ``seq_separator``, which the
    copied ``.item`` file's ``token_seq`` fields use too). The ``timestamp`` column is the
    target's position in its user's sequence.
    """
    interactions = read_interactions(os.path.join(source_folder, f"{source_name}.inter"))
    users, samples = sequence_samples(interactions, max_length=max_length)
    stats = {"interactions": len(interactions), "sessions": len(users), "samples": len(samples)}
    samples = fixed_subset(samples, max_samples, stats)
    if len(samples) < 10:
        raise ValueError(f"Only {len(samples)} samples; too few to split.")
    shuffled = list(users)
    random.Random(0).shuffle(shuffled)
    part_of = {user: part for part, group in split_samples(shuffled).items() for user in group}
    atomic_copy(
        os.path.join(source_folder, f"{source_name}.item"), os.path.join(folder, f"{name}.item")
    )
    session_id = 0
    for part in PARTS:
        rows = []
        for user, position, items, target in samples:
            if part_of[user] != part:
                continue
            session_id += 1
            rows.append((str(session_id), seq_separator.join(items), target, str(position)))
        write_atomic_file(
            os.path.join(folder, f"{name}.{part}.inter"),
            ["session_id:token", "item_id_list:token_seq", "item_id:token", "timestamp:float"],
            rows,
        )
        stats[part] = len(rows)
    return stats
