"""EIMF's semantic step: typical users and their interests.

Item texts -> item text vectors -> user text vectors (mean over each user's training items) ->
typical users -> one prompt per typical user over its last ``prompt_max_items`` items ->
parsed interests -> interest vectors -> ``.itemtext``, ``.interest``, ``.usertypical``.
"""

import collections
import time
from logging import getLogger

import numpy as np

from recbole_llm.semantics import files, prompts, shared
from recbole_llm.semantics.history import split_training_histories
from recbole_llm.semantics.parsing import is_list_reply, parse_interests
from recbole_llm.semantics.settings import needs_llm
from recbole_llm.semantics.text import category_words
from recbole_llm.semantics.typical import select_typical_users


class UserTextVectors:
    """Each user's text vector, the mean of its training items' vectors L2-normalised, made on
    demand: ``vectors[index]`` (an index array or a slice, in ``histories``' order) gives
    ``[len(index), D]`` float32, each row exactly as that user's own ``mean(0)`` gives it,
    normalised with ``np.linalg.norm(..., axis=1)``, whichever other users share the call.
    Clustering reads a sample and then blocks of users, so 1M users' 1.5 GB of vectors are
    never held at once.

    A call adds its users' k-th items for k = 1, 2, ..., longest history first (the additions
    ``mean`` makes, in its order): Python loops over positions, not users."""

    dtype = np.dtype(np.float32)

    def __init__(self, histories, row_of, item_vectors):
        self.users = list(histories)
        self.lengths = np.fromiter(
            (len(histories[u]) for u in self.users), dtype=np.int64, count=len(self.users)
        )
        self.offsets = np.cumsum(self.lengths) - self.lengths
        self.rows = np.fromiter(
            (row_of[i] for u in self.users for i in histories[u]),
            dtype=np.int64,
            count=int(self.lengths.sum()),
        )
        self.item_vectors = item_vectors
        self.shape = (len(self.users), item_vectors.shape[1])

    def __len__(self):
        return len(self.users)

    def __getitem__(self, index):
        if isinstance(index, slice):
            index = np.arange(len(self))[index]
        return self._compute(np.asarray(index, dtype=np.int64).reshape(-1))

    def _compute(self, index):
        order = np.argsort(-self.lengths[index], kind="stable")
        longest, first = self.lengths[index[order]], self.offsets[index[order]]
        sums = self.item_vectors[self.rows[first]]
        for k in range(1, int(longest[0]) if len(index) else 0):
            active = int(np.count_nonzero(longest > k))
            sums[:active] += self.item_vectors[self.rows[first[:active] + k]]
        vectors = np.empty((len(index), self.shape[1]), dtype=np.float32)
        vectors[order] = sums / longest[:, None].astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True).clip(1e-12)
        return vectors


def interest_requests(config, users, histories, texts):
    """EIMF's prompt for each user: its last ``prompt_max_items`` training items' texts."""
    return [
        prompts.eimf_messages(
            [texts[i] for i in histories[u][-config["prompt_max_items"] :]],
            config["max_interests"],
            noun=config["item_noun"],
            verb=config["item_verb"],
        )
        for u in users
    ]


def listed_echoes(quoted, items):
    """What a reply may copy from a prompt listing ``items`` instead of naming interests: each
    listed text, and its name before " (" (the parser drops such phrases)."""
    return [quoted[i] for i in items] + [quoted[i].split(" (")[0] for i in items]


def _typical_interests(config, typical_tokens, histories, texts, generator):
    """Interests per typical user, and whether each came from the LLM or a fallback."""
    max_interests = config["max_interests"]
    recent = {u: histories[u][-config["prompt_max_items"] :] for u in typical_tokens}
    categories = None
    if config["interest_source"] == "categories" or config["interest_fallback"] == "categories":
        all_items = sorted({i for u in typical_tokens for i in histories[u]})
        words = category_words(config, all_items)
        categories = {
            u: [
                w
                for w, _ in collections.Counter(
                    w for i in histories[u] for w in words[i]
                ).most_common(max_interests)
            ]
            for u in typical_tokens
        }
    if config["interest_source"] == "categories":
        return (
            {u: categories[u] for u in typical_tokens},
            {u: "categories" for u in typical_tokens},
            None,
            {},
        )
    if config["interest_source"] != "llm":
        raise ValueError(
            f"interest_source must be 'llm' or 'categories', got '{config['interest_source']}'"
        )

    quoted = texts.prompt_texts()
    requests = interest_requests(config, typical_tokens, histories, quoted)
    replies, stats = shared.ask(config, generator, requests, "typical users")
    interests, sources, raw = {}, {}, {}
    for user, reply in zip(typical_tokens, replies):
        raw[user] = reply.text
        echoes = listed_echoes(quoted, recent[user])
        parsed = [] if reply.error else parse_interests(reply.text, max_interests, echoes)
        if parsed:
            interests[user], sources[user] = parsed, "llm"
        elif config["interest_fallback"] == "categories" and categories[user]:
            interests[user], sources[user] = categories[user], "categories"
        else:
            # no usable answer, or (within llm_max_failure_ratio) no answer at all
            interests[user], sources[user] = [], "failed" if reply.error else "none"
    return interests, sources, stats, raw


def run_eimf(config, make_dataset, refresh, start):
    """EIMF's step on the dataset ``make_dataset()`` builds; returns the manifest path."""
    dataset = make_dataset()
    histories = split_training_histories(dataset)
    encoder = shared.make_encoder(config)
    tokens, texts, item_vectors = shared.encode_items(config, dataset, encoder)
    row_of = {t: i for i, t in enumerate(tokens)}

    users = list(histories)
    typical = select_typical_users(
        users,
        UserTextVectors(histories, row_of, item_vectors),
        method=config["typical_selection"],
        typical_ratio=config["typical_ratio"],
        max_ap_users=config["ap_max_users"],
        seed=config["semantics_seed"],
    )
    mapping = typical.mapping()
    if config["typical_assignment"] == "shuffled":
        rng = np.random.default_rng(config["semantics_seed"])
        targets = list(mapping.values())
        rng.shuffle(targets)
        mapping = dict(zip(mapping, targets))
    elif config["typical_assignment"] != "cluster":
        raise ValueError(
            f"typical_assignment must be 'cluster' or 'shuffled', got '{config['typical_assignment']}'"
        )
    typical_tokens = typical.typical_tokens
    getLogger().info(
        f"Typical users: {len(typical_tokens)} of {len(users)} training users "
        f"({typical.method}, {typical.details})"
    )

    generator = (
        shared.make_generator(config, "eimf", refresh) if needs_llm(config, "eimf") else None
    )
    interests, sources, stats, raw = _typical_interests(
        config, typical_tokens, histories, texts, generator
    )
    max_interests, dim = config["max_interests"], encoder.dim
    phrases = [p for u in typical_tokens for p in interests[u]]
    phrase_vectors = dict(zip(phrases, encoder.encode(phrases))) if phrases else {}

    item_path = files.file_path(config, "itemtext")
    files.write_table(item_path, "itemtext", zip(tokens, item_vectors))
    interest_rows = []
    for user in typical_tokens:
        block = np.zeros((max_interests, dim), dtype=np.float32)
        for k, phrase in enumerate(interests[user]):
            block[k] = phrase_vectors[phrase]
        interest_rows.append((user, len(interests[user]), block.reshape(-1)))
    files.write_table(files.file_path(config, "interest"), "interest", interest_rows)
    files.write_table(files.file_path(config, "usertypical"), "usertypical", mapping.items())

    seconds = time.perf_counter() - start
    generation = shared.log_summary(stats, encoder, seconds)
    source_counts = collections.Counter(sources.values())
    no_list = sum(
        1 for u in typical_tokens if sources[u] == "llm" and not is_list_reply(raw.get(u))
    )
    _warn_no_lists(no_list, source_counts.get("llm", 0))
    name = config["dataset"]
    manifest = {
        **shared.manifest_header(config, "eimf"),
        "encoder": {"model": config["encoder_model"], "identity": encoder.identity, "dim": dim},
        "prompt_template": prompts.template_hash("eimf", config["item_noun"]),
        "dimensions": {"text": dim, "max_interests": max_interests},
        "files": {
            f"{name}.itemtext": {"rows": len(tokens)},
            f"{name}.interest": {"rows": len(typical_tokens)},
            f"{name}.usertypical": {"rows": len(mapping)},
        },
        "counts": {
            "items": len(tokens),
            "item_text_fallbacks": texts.fallback_count,
            "item_texts_cut_in_prompts": len(texts.too_long) if generator else 0,
            "training_users": len(users),
            "typical_users": len(typical_tokens),
            "typical_users_from_llm": source_counts.get("llm", 0),
            "typical_users_from_categories": source_counts.get("categories", 0),
            "typical_users_without_interests": source_counts.get("none", 0),
            "typical_users_failed": source_counts.get("failed", 0),
            "typical_users_replying_no_list": no_list,
            "typical_users_echoing_example": sum(
                1
                for u in typical_tokens
                if sources[u] == "llm" and prompts.echoes_example(interests[u], config["item_noun"])
            ),
            "interests": len(phrases),
        },
        "typical": {"method": typical.method, **shared.json_safe(typical.details)},
        "generation": generation,
        "encoder_texts_encoded": encoder.encoded,
        "seconds": round(seconds, 2),
        "interests": {
            u: {"source": sources[u], "interests": interests[u], "reply": raw.get(u)}
            for u in typical_tokens
        },
    }
    return files.write_manifest(config, "eimf", manifest)


#: Share of LLM replies without the asked-for list above which the step warns.
NO_LIST_WARNING_SHARE = 0.5


def _warn_no_lists(no_list, from_llm):
    """Say so, loudly, when most replies are not the JSON list the prompt asks for: the parser
    then keeps bracketed fragments of prose, plausible-looking interests that mean little."""
    if from_llm and no_list > NO_LIST_WARNING_SHARE * from_llm:
        getLogger().warning(
            f"EIMF semantics: {no_list} of {from_llm} LLM replies are not JSON lists (the "
            "prompt asks for one; the parser kept bracketed fragments). A small model does this "
            "now and then; most replies doing it point to a reply cache made before d05bf8d, "
            "when the transformers backend penalised repetition over the whole prompt: run the "
            "step again with --refresh (or a fresh semantics_cache_dir), or try a larger LLM."
        )
