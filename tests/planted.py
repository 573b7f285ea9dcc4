"""Data with a planted semantic signal, and oracle LLM servers that know it.

LLM4SBR (sessions): session samples whose target is drawn uniformly at random, independently of the items before
it: no model can predict it from item ids. The oracle, an OpenAI-compatible server on the
loopback interface, answers a sample's prompt with the name of that sample's target (or, for a
share ``1 - accuracy`` of samples, with a random item's name). Intents made from its replies
carry the target; shuffled or averaged intents carry nothing. A model through which LLM
semantics reach the ranking must beat its backbone here, and must lose that gain when its
semantics are shuffled.

    folder, targets = write_planted_sessions(root)        # RecBole benchmark files + .item
    with OracleServer(targets) as oracle: ...             # llm_base_url=oracle.url

EIMF (user sequences): each user draws its items from one hidden group, with names that say
nothing about the group, so neither the item texts nor an encoder can tell groups apart; with
few interactions per item, item ids tell them apart only slowly. The oracle answers a typical
user's prompt with its group's phrase. EIMF's inference sees behaviour alone, so its gain here
must come from item embeddings that its semantic losses arranged by group during training;
shuffled typical users, or a readout of the target's own text, carry no group.

    folder, group_of = write_planted_users(root)          # RecBole atomic .inter + .item
    with InterestOracle(group_of) as oracle: ...
"""

import json
import os
import random
import re

from loopback import ChatServer, chat_payload
from synthetic import SESSION_FORMAT

WORDS = [
    "amber", "basalt", "cedar", "delta", "ember", "fjord", "garnet", "harbor", "indigo", "juniper",
    "kelp", "lagoon", "meadow", "nickel", "orchid", "pepper", "quartz", "raven", "saffron",
    "tundra",
]  # fmt: skip


def item_names(n_items):
    """Distinct two-word names, item token ``i`` (1-based) -> name."""
    pairs = [f"{a} {b}" for a in WORDS for b in WORDS if a != b]
    return {str(i): pairs[(i * 37) % len(pairs)] for i in range(1, n_items + 1)}


def write_planted_sessions(
    root, name="planted", n_items=40, samples=(900, 150, 150), prefix_lengths=(2, 4), seed=0
):
    """Write ``root/name/name.{train,valid,test}.inter`` and ``name.item``.

    Every sample is its own session with a distinct prefix, so the oracle can recognise it.
    Returns the dataset folder and ``{prefix tuple of item tokens: target token}``.
    """
    rng = random.Random(seed)
    tokens = [str(i) for i in range(1, n_items + 1)]
    targets, parts = {}, []
    for count in samples:
        rows = []
        while len(rows) < count:
            prefix = tuple(rng.sample(tokens, rng.randint(*prefix_lengths)))
            if prefix in targets:
                continue
            target = rng.choice([t for t in tokens if t not in prefix])
            targets[prefix] = target
            rows.append((prefix, target))
        parts.append(rows)
    folder = os.path.join(root, name)
    os.makedirs(folder, exist_ok=True)
    session = 0
    for part, rows in zip(("train", "valid", "test"), parts):
        with open(os.path.join(folder, f"{name}.{part}.inter"), "w", encoding="utf-8") as f:
            f.write("session_id:token\titem_id_list:token_seq\titem_id:token\n")
            for prefix, target in rows:
                session += 1
                f.write(f"{session}\t{' '.join(prefix)}\t{target}\n")
    names = item_names(n_items)
    with open(os.path.join(folder, f"{name}.item"), "w", encoding="utf-8") as f:
        f.write("item_id:token\titem_name:token_seq\n")
        for token in tokens:
            f.write(f"{token}\t{names[token]}\n")
    return folder, targets


#: session settings for the planted files (as the session YAMLs set them for real data)
PLANTED_CONFIG = {
    **SESSION_FORMAT,
    "MAX_ITEM_LIST_LENGTH": 10,
    "text_fields": ["item_name"],
    "prompt_max_items": 10,
}

LISTED_ITEM = re.compile(r"^\d+\. .*_(\S+)$", re.MULTILINE)


class OracleServer(ChatServer):
    """A loopback OpenAI-compatible server that answers LLM4SBR prompts with the target's name
    (for a share ``accuracy`` of prefixes, chosen by a seeded draw; a random name otherwise)."""

    def __init__(self, targets, n_items=40, accuracy=0.8, seed=0):
        names = item_names(n_items)
        rng = random.Random(seed)
        self.answers = {
            prefix: names[target] if rng.random() < accuracy else names[rng.choice(list(names))]
            for prefix, target in sorted(targets.items())
        }
        self.requests = 0
        super().__init__(self._respond)

    def _respond(self, body, headers):
        self.requests += 1
        prefix = tuple(LISTED_ITEM.findall(body["messages"][-1]["content"]))
        return 200, chat_payload(self.answers.get(prefix, "no idea"))


GROUP_PHRASES = [
    "folk music", "kitchen knives", "poetry books", "yoga mats", "jazz records", "garden tools",
    "board games", "running shoes", "tea sets", "camping gear",
]  # fmt: skip


def write_planted_users(
    root, name="planted-users", groups=10, items_per_group=40, users=300, length=(4, 6),
    noise=0.2, seed=0,
):  # fmt: skip
    """Write ``root/name/name.inter`` (user, item, timestamp) and ``name.item``.

    Items are assigned to ``groups`` at random; each user belongs to one group and draws
    ``length`` distinct items, each from its group (or, for a share ``noise``, from all
    items). Returns the dataset folder and ``{item token: group}``.
    """
    rng = random.Random(seed)
    n_items = groups * items_per_group
    tokens = [str(i) for i in range(1, n_items + 1)]
    order = rng.sample(tokens, n_items)
    group_of = {t: k % groups for k, t in enumerate(order)}
    members = {g: [t for t in tokens if group_of[t] == g] for g in range(groups)}
    folder = os.path.join(root, name)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{name}.inter"), "w", encoding="utf-8") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for user in range(1, users + 1):
            group, sequence = rng.randrange(groups), []
            size = rng.randint(*length)
            while len(sequence) < size:
                item = rng.choice(tokens if rng.random() < noise else members[group])
                if item not in sequence:
                    sequence.append(item)
            for position, item in enumerate(sequence):
                f.write(f"{user}\t{item}\t{position}\n")
    names = item_names(n_items)
    with open(os.path.join(folder, f"{name}.item"), "w", encoding="utf-8") as f:
        f.write("item_id:token\titem_name:token_seq\n")
        for token in tokens:
            f.write(f"{token}\t{names[token]}\n")
    return folder, group_of


#: settings for the planted user files
PLANTED_USERS_CONFIG = {
    "load_col": {"inter": ["user_id", "item_id", "timestamp"], "item": ["item_id", "item_name"]},
    "text_fields": ["item_name"],
    "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user",
                  "mode": "full"},
    "MAX_ITEM_LIST_LENGTH": 10,
}  # fmt: skip

LISTED_LINE = re.compile(r"^\d+\. (.*)$", re.MULTILINE)


class InterestOracle(ChatServer):
    """A loopback OpenAI-compatible server that answers EIMF's interest prompt with the phrase
    of the group most of the listed items belong to."""

    def __init__(self, group_of):
        names = item_names(len(group_of))
        self.group_of_name = {names[t]: g for t, g in group_of.items()}
        self.requests = 0
        super().__init__(self._respond)

    def _respond(self, body, headers):
        self.requests += 1
        listed = LISTED_LINE.findall(body["messages"][-1]["content"])
        groups = [self.group_of_name[n] for n in listed if n in self.group_of_name]
        if not groups:
            return 200, chat_payload("[]")
        group = max(sorted(set(groups)), key=groups.count)
        return 200, chat_payload(json.dumps([GROUP_PHRASES[group]]))
