"""The two semantic pipelines, end to end, and the entry point that runs the right one.

EIMF (``semantics = "eimf"`` on the model class):
    item texts -> item text vectors -> user text vectors (mean over each user's training items)
    -> typical users -> one prompt per typical user over its last ``prompt_max_items`` items
    -> parsed interests -> interest vectors -> ``.itemtext``, ``.interest``, ``.usertypical``.

LLM4SBR (``semantics = "llm4sbr"``):
    per sample, a long-term and a short-term prompt over the last ``prompt_max_items`` items
    before its target -> guessed item names -> encoded -> localised onto the ``intent_topr``
    most similar real items (similarity-weighted sum or mean) -> ``.itemtext``, ``.intent``.

Both write a manifest; a rerun with the same inputs makes no LLM call (replies and embeddings
are cached), and ``refresh`` regenerates the replies. A request that fails (after the backend's
retries) is not cached: once every request was tried, more failures than
``llm_max_failure_ratio`` (default 0) stop the step before it writes any file, and the next run
asks only the failed requests. Fallbacks (the last item's text, no interests) stand in where
the LLM answered without a usable name or interest, and are counted in the manifest.
"""

import collections
import shlex
import time
from logging import getLogger

import numpy as np

from recbole_llm import __version__
from recbole_llm.errors import UserError
from recbole_llm.semantics import files, prompts
from recbole_llm.semantics.files import SemanticsError
from recbole_llm.semantics.history import sample_prefixes, training_histories
from recbole_llm.semantics.parsing import PARSER_VERSION, parse_interests, parse_item_name
from recbole_llm.semantics.text import category_words, item_texts

KINDS = ("eimf", "llm4sbr")

#: Config keys that change what each pipeline produces (besides the input files' hashes).
#: Not ``llm_backend``: the LLM enters as its identity (``llm_identity``: the weights' hash or
#: the served name), as in the reply cache, so files made with llama.cpp serve a transformers
#: run of the same weights instead of counting as stale.
COMMON_KEYS = [
    "text_fields",
    "llm_model",
    "llm_max_new_tokens",
    "llm_repetition_penalty",
    "encoder_model",
    "prompt_max_items",
]
SETTING_KEYS = {
    "eimf": COMMON_KEYS
    + [
        "item_noun",
        "item_verb",
        "category_field",
        "typical_selection",
        "typical_ratio",
        "ap_max_users",
        "max_interests",
        "interest_source",
        "interest_fallback",
        "typical_assignment",
        "semantics_seed",
        "eval_args",
        "user_inter_num_interval",
        "item_inter_num_interval",
        "rm_dup_inter",
        "val_interval",
    ],
    "llm4sbr": COMMON_KEYS
    + ["intent_views", "intent_source", "intent_topr", "intent_aggregation", "benchmark_filename"],
}


def settings(config, kind):
    """The settings a pipeline's output depends on, with the LLM as its cache identity."""
    from recbole_llm.semantics.llm import model_identity

    values = {key: config[key] for key in SETTING_KEYS[kind]}
    values["llm_identity"] = model_identity(config) if needs_llm(config, kind) else None
    values["prompt_template"] = prompts.template_hash(kind, config["item_noun"])
    values["parser"] = PARSER_VERSION
    return values


def needs_llm(config, kind):
    if kind == "llm4sbr":
        return config["intent_source"] == "llm"
    return config["interest_source"] == "llm"


#: settings that select *which* semantics a run reads, with their defaults: the command that
#: creates missing semantics repeats the ones a run changed, so it makes the files that run reads
SELECTING_KEYS = {
    "semantics_dir": None,
    "llm_model": "SmolLM2-135M-Instruct",
    "interest_source": "llm",
    "typical_assignment": "cluster",
    "intent_source": "llm",
}

#: Besides :data:`SETTING_KEYS`, what the semantic step reads: where the data and caches are,
#: how it reaches its LLM, and RecBole's dataset settings (which rows, fields and splits).
STEP_KEYS = [
    "data_path",
    "semantics_dir",
    "semantics_cache_dir",
    "llm_backend",
    "llm_base_url",
    "llm_api_key_env",  # the name of a variable, never a key
    "llm_reply_files",
    "llm_timeout",
    "llm_max_retries",
    "llm_backoff",
    "llm_backoff_max",
    "llm_concurrency",
    "llm_max_failure_ratio",
    "llm_batch_size",
    "llm_threads",
    "encoder_batch_size",
    "encoding",
    "field_separator",
    "seq_separator",
    "USER_ID_FIELD",
    "ITEM_ID_FIELD",
    "RATING_FIELD",
    "TIME_FIELD",
    "load_col",
    "unload_col",
    "unused_col",
    "filter_inter_by_user_or_item",
    "alias_of_user_id",
    "alias_of_item_id",
    "MAX_ITEM_LIST_LENGTH",
    "ITEM_LIST_LENGTH_FIELD",
    "LIST_SUFFIX",
]


def _flag(key, value):
    """``--key=value`` as RecBole's command line reads it back, quoted for a shell."""
    text = value if isinstance(value, str) else repr(value)  # RecBole evals what is not text
    return shlex.quote(f"--{key}={text}")


def command(config, kind):
    """The command that creates a dataset's semantics as this run configures them: the
    settings the user gave (config files, config dict, command line) that the semantic step
    reads, repeated; never ``--refresh``, which would ask every cached prompt again."""
    model = "EIMF" if kind == "eimf" else "LLM4SBR"
    flags = [f"--model={model}", f"--dataset={config['dataset']}", "--semantics"]
    given = getattr(config, "external_config_dict", None)
    if given is None:  # a plain dict: repeat the selecting settings it changed
        for key, default in SELECTING_KEYS.items():
            value = config[key] if key in config else default
            if value != default:
                flags.append(f"--{key}={value}")
        return "python run_recbole_llm.py " + " ".join(flags)
    from_files = getattr(config, "file_config_dict", {})
    config_files = getattr(config, "config_file_list", None)
    if config_files:
        flags.append(shlex.quote("--config_files=" + " ".join(config_files)))
    for key in dict.fromkeys(STEP_KEYS + SETTING_KEYS[kind]):
        if key not in given:
            continue
        if config_files and key in from_files and given[key] == from_files[key]:
            continue  # the config files say it
        flags.append(_flag(key, given[key]))  # as given: RecBole extends data_path
    return "python run_recbole_llm.py " + " ".join(flags)


def load_or_create(config, kind):
    """The valid manifest of a dataset's semantics, running the step first when they are
    missing or stale and ``auto_semantics`` allows it."""
    wanted = settings(config, kind)
    try:
        manifest = files.read_manifest(config, kind, wanted, command(config, kind))
    except SemanticsError as err:
        if not config["auto_semantics"]:
            raise
        # the message ends in a command; keep the next sentence apart from its last flag
        getLogger().warning(f"{err} | auto_semantics is on: running the semantic step now.")
        run_pipeline(config, kind)
        manifest = files.read_manifest(config, kind, wanted, command(config, kind))
    failed = (manifest.get("generation") or {}).get("failed", 0)
    if failed:
        getLogger().warning(
            f"{files.manifest_path(config, kind)} was made although {failed} LLM requests "
            "failed (llm_max_failure_ratio allowed it): their semantics are fallbacks. To ask "
            f"them again: {command(config, kind)}"
        )
    return manifest


def _plain_dataset(config):
    """RecBole's own sequential dataset for a config (never a semantic one: no recursion)."""
    from recbole.data.dataset import SequentialDataset

    from recbole_llm.data.prepare import ensure_dataset
    from recbole_llm.data.utils import warn_duplicate_interactions

    ensure_dataset(config)
    dataset = SequentialDataset(config)
    warn_duplicate_interactions(dataset)
    return dataset


def _generator(config, kind, refresh):
    from recbole_llm.semantics.llm import CachedGenerator, make_backend, model_identity, reply_cache

    decoding = {
        "max_new_tokens": config["llm_max_new_tokens"],
        "repetition_penalty": config["llm_repetition_penalty"],
        "greedy": True,
    }
    return CachedGenerator(
        lambda: make_backend(config),
        model_identity(config),
        reply_cache(config),
        decoding,
        refresh=refresh,
        progress=config["show_progress"] is not False,
        backend_name=config["llm_backend"],
    )


def _export_replies(config, generator, requests):
    """``llm_export_replies``: the replies this run used, as a file to ship or share."""
    path = config["llm_export_replies"]
    if not path:
        return
    written, missing = generator.export(path, requests)
    getLogger().info(f"Exported {written} replies to {path}")
    if missing:
        getLogger().warning(f"{missing} requests failed and have no reply in {path}")


def _shard(config):
    from recbole_llm.semantics.llm import parse_shard

    return parse_shard(config["llm_shard"])


def _encoder(config):
    from recbole_llm.semantics.encoder import TextEncoder

    return TextEncoder(
        config["encoder_model"],
        cache_dir=config["semantics_cache_dir"],
        batch_size=config["encoder_batch_size"],
        threads=config["llm_threads"],
        progress=config["show_progress"] is not False,
    )


def _encode_items(config, dataset, encoder):
    tokens = [str(t) for t in dataset.field2id_token[dataset.iid_field][1:]]
    texts = item_texts(config, tokens)
    getLogger().info(f"Item text: {texts.summary()}")
    vectors = encoder.encode([texts.texts[t] for t in tokens])
    return tokens, texts, vectors


def run_pipeline(config, kind, refresh=False):
    """Run one pipeline for a config and write its files and manifest; returns the manifest
    path."""
    if kind not in KINDS:
        raise ValueError(f"semantic pipeline must be one of {KINDS}, got '{kind}'")
    _shard(config)  # a malformed llm_shard or failure ratio fails before any data is read
    _max_failure_ratio(config)
    start = time.perf_counter()
    if kind == "eimf":
        path = _run_eimf(config, refresh, start)
    else:
        path = _run_llm4sbr(config, refresh, start)
    getLogger().info(f"Semantics written; manifest: {path}")
    return path


def _manifest_header(config, kind):
    """What every manifest starts with: provenance, inputs, settings and the LLM used."""
    current = settings(config, kind)
    return {
        "dataset": config["dataset"],
        "recbole_llm": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "inputs": files.input_hashes(config),
        "settings": json_safe(current),
        "settings_hash": files.settings_hash(current),
        "llm": (
            {"backend": config["llm_backend"], "model": config["llm_model"]}
            if needs_llm(config, kind)
            else None
        ),
    }


def _max_failure_ratio(config):
    ratio = config["llm_max_failure_ratio"]
    ratio = 0.0 if ratio is None else ratio
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio <= 1:
        raise UserError(
            f"llm_max_failure_ratio must be a number from 0 to 1 (the share of LLM requests "
            f"that may fail before the step does), got {ratio!r}"
        )
    return float(ratio)


def _summary(stats, encoder, seconds):
    generation = stats.as_dict() if stats else None
    line = (
        f"LLM: {stats.requests} prompts, {stats.calls} new calls ({stats.failed} failed), "
        f"{stats.cached} from cache, {stats.prompt_tokens}+{stats.completion_tokens} new tokens "
        f"in {stats.seconds:.1f} s; "
        if stats
        else "LLM: not used; "
    )
    getLogger().info(line + f"encoder: {encoder.encoded} new texts; total {seconds:.1f} s")
    return generation


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
    replies, stats = generator.run(
        requests,
        config["llm_batch_size"],
        "typical users",
        shard=_shard(config),
        max_failure_ratio=_max_failure_ratio(config),
    )
    _export_replies(config, generator, requests)
    interests, sources, raw = {}, {}, {}
    for user, reply in zip(typical_tokens, replies):
        raw[user] = reply.text
        echoes = [quoted[i] for i in recent[user]] + [
            quoted[i].split(" (")[0] for i in recent[user]
        ]
        parsed = [] if reply.error else parse_interests(reply.text, max_interests, echoes)
        if parsed:
            interests[user], sources[user] = parsed, "llm"
        elif config["interest_fallback"] == "categories" and categories[user]:
            interests[user], sources[user] = categories[user], "categories"
        else:
            # no usable answer, or (within llm_max_failure_ratio) no answer at all
            interests[user], sources[user] = [], "failed" if reply.error else "none"
    return interests, sources, stats, raw


def _run_eimf(config, refresh, start):
    dataset = _plain_dataset(config)
    train = dataset.build()[0]
    histories = training_histories(train)
    encoder = _encoder(config)
    tokens, texts, item_vectors = _encode_items(config, dataset, encoder)
    row_of = {t: i for i, t in enumerate(tokens)}

    users = list(histories)
    user_vectors = np.stack(
        [item_vectors[[row_of[i] for i in histories[u]]].mean(0) for u in users]
    )
    user_vectors /= np.linalg.norm(user_vectors, axis=1, keepdims=True).clip(1e-12)
    from recbole_llm.semantics.typical import select_typical_users

    typical = select_typical_users(
        users,
        user_vectors,
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

    generator = _generator(config, "eimf", refresh) if needs_llm(config, "eimf") else None
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
    generation = _summary(stats, encoder, seconds)
    source_counts = collections.Counter(sources.values())
    name = config["dataset"]
    manifest = {
        **_manifest_header(config, "eimf"),
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
            "interests": len(phrases),
        },
        "typical": {"method": typical.method, **json_safe(typical.details)},
        "generation": generation,
        "encoder_texts_encoded": encoder.encoded,
        "seconds": round(seconds, 2),
        "interests": {
            u: {"source": sources[u], "interests": interests[u], "reply": raw.get(u)}
            for u in typical_tokens
        },
    }
    return files.write_manifest(config, "eimf", manifest)


def localise(answer_vectors, item_vectors, topr, aggregation):
    """Intent localisation: the similarity-weighted sum (or mean) of the ``topr`` items most
    similar to each answer; ``topr = 0`` keeps the encoded answer itself."""
    if topr == 0:
        return answer_vectors.astype(np.float32)
    similarity = answer_vectors @ item_vectors.T
    top = np.argpartition(-similarity, kth=min(topr, similarity.shape[1]) - 1, axis=1)[:, :topr]
    weights = np.take_along_axis(similarity, top, axis=1)
    intents = (weights[:, :, None] * item_vectors[top]).sum(axis=1)
    if aggregation == "mean":
        intents /= topr
    elif aggregation != "sum":
        raise ValueError(f"intent_aggregation must be 'sum' or 'mean', got '{aggregation}'")
    return intents.astype(np.float32)


def _intent_views(config):
    views = list(config["intent_views"] or [])
    if (
        not views
        or any(v not in prompts.LLM4SBR_VIEWS for v in views)
        or len(set(views)) < len(views)
    ):
        raise ValueError(
            f"intent_views must be distinct views from {list(prompts.LLM4SBR_VIEWS)}, got {views}"
        )
    return views


def _run_llm4sbr(config, refresh, start):
    if not config["benchmark_filename"]:
        raise ValueError(
            "LLM4SBR semantics are made per sample of a session dataset in RecBole's benchmark "
            "form (benchmark_filename: [train, valid, test]); "
            f"dataset '{config['dataset']}' has no benchmark_filename."
        )
    views = _intent_views(config)
    source = config["intent_source"]
    if source not in ("llm", "last_item"):
        raise ValueError(f"intent_source must be 'llm' or 'last_item', got '{source}'")
    dataset = _plain_dataset(config)
    parts = dataset.build()
    encoder = _encoder(config)
    tokens, texts, item_vectors = _encode_items(config, dataset, encoder)
    row_of = {t: i for i, t in enumerate(tokens)}
    samples = collections.OrderedDict()
    for part in parts:
        samples.update(sample_prefixes(part, dataset.uid_field))
    keys = list(samples)
    recent = {k: samples[k][-config["prompt_max_items"] :] for k in keys}
    topr, aggregation = config["intent_topr"], config["intent_aggregation"]
    # the LLM-free control, and the fallback for a reply without a usable name
    last_item = localise(
        item_vectors[[row_of[recent[k][-1]] for k in keys]], item_vectors, topr, aggregation
    )

    stats = None
    intents = {view: last_item.copy() for view in views}
    from_llm = {view: 0 for view in views}
    failed = {view: 0 for view in views}
    if source == "llm":
        quoted = texts.prompt_texts()
        requests = [
            prompts.llm4sbr_messages([(quoted[i], i) for i in recent[k]], view)
            for k in keys
            for view in views
        ]
        generator = _generator(config, "llm4sbr", refresh)
        replies, stats = generator.run(
            requests,
            config["llm_batch_size"],
            "session intents",
            shard=_shard(config),
            max_failure_ratio=_max_failure_ratio(config),
        )
        _export_replies(config, generator, requests)
        names = [parse_item_name(r.text) if not r.error else "" for r in replies]
        for v, view in enumerate(views):
            rows = [j for j in range(len(keys)) if names[j * len(views) + v]]
            if rows:
                answers = encoder.encode([names[j * len(views) + v] for j in rows])
                intents[view][rows] = localise(answers, item_vectors, topr, aggregation)
            from_llm[view] = len(rows)
            failed[view] = sum(bool(replies[j * len(views) + v].error) for j in range(len(keys)))

    files.write_table(files.file_path(config, "itemtext"), "itemtext", zip(tokens, item_vectors))
    files.write_table(
        files.file_path(config, "intent"),
        files.intent_header(views),
        ((k, *(intents[view][j] for view in views)) for j, k in enumerate(keys)),
    )
    seconds = time.perf_counter() - start
    generation = _summary(stats, encoder, seconds)
    name = config["dataset"]
    manifest = {
        **_manifest_header(config, "llm4sbr"),
        "encoder": {
            "model": config["encoder_model"],
            "identity": encoder.identity,
            "dim": encoder.dim,
        },
        "prompt_template": prompts.template_hash("llm4sbr"),
        "views": views,
        "dimensions": {"text": encoder.dim},
        "files": {f"{name}.itemtext": {"rows": len(tokens)}, f"{name}.intent": {"rows": len(keys)}},
        "counts": {
            "items": len(tokens),
            "item_text_fallbacks": texts.fallback_count,
            "item_texts_cut_in_prompts": len(texts.too_long) if source == "llm" else 0,
            "samples": len(keys),
            "intents_from_llm": from_llm,
            # the LLM's answer named no item (or, within llm_max_failure_ratio, it failed)
            "intents_from_last_item": {view: len(keys) - from_llm[view] for view in views},
            "intents_failed": failed,
        },
        "generation": generation,
        "encoder_texts_encoded": encoder.encoded,
        "seconds": round(seconds, 2),
    }
    return files.write_manifest(config, "llm4sbr", manifest)


def json_safe(value):
    import json

    return json.loads(json.dumps(value, default=str))
