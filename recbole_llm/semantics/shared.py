"""What both methods' semantic steps share: the LLM generator and the text encoder a config
chooses, the encoded item texts, the manifest's header and the closing summary line.
"""

import json
import time
from logging import getLogger

from recbole_llm import __version__
from recbole_llm.errors import UserError
from recbole_llm.semantics import batch, files
from recbole_llm.semantics.encoder import TextEncoder
from recbole_llm.semantics.generator import CachedGenerator, make_backend, parse_shard, reply_cache
from recbole_llm.semantics.models import model_identity
from recbole_llm.semantics.settings import command, needs_llm, settings
from recbole_llm.semantics.text import item_texts


def make_generator(config, kind, refresh):
    """The cached generator of the configured LLM (greedy, ``llm_max_new_tokens``); the model
    loads only when a reply is not cached. ``refresh`` asks every request again."""
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
        command=command(config, kind),
    )


def export_replies(config, generator, requests):
    """``llm_export_replies``: the replies this run used, as a file to ship or share."""
    path = config["llm_export_replies"]
    if not path:
        return
    written, missing = generator.export(path, requests)
    getLogger().info(f"Exported {written} replies to {path}")
    if missing:
        getLogger().warning(f"{missing} requests failed and have no reply in {path}")


def ask(config, generator, requests, label, on_chunk=None):
    """Every request's reply through the cached generator, with the configured batch size,
    shard and failure bound, after the batch exchange (``llm_import_batch`` read into the
    cache; with ``llm_backend: batch``, the missing prompts written to a batch file, which
    stops the step); then ``llm_export_replies``. Returns ``(replies, stats)``; with
    ``on_chunk`` the replies go to ``on_chunk(start, replies)`` a chunk at a time instead
    (:meth:`~recbole_llm.semantics.generator.CachedGenerator.run_in_chunks`), and None is
    returned in their place."""
    ratio = max_failure_ratio(config)
    known_failures = batch.exchange(config, generator, requests, label, ratio)
    options = dict(shard=shard_of(config), max_failure_ratio=ratio, known_failures=known_failures)
    size = config["llm_batch_size"]
    if on_chunk is None:
        replies, stats = generator.run(requests, size, label, **options)
    else:
        replies, stats = None, generator.run_in_chunks(requests, size, on_chunk, label, **options)
    export_replies(config, generator, requests)
    return replies, stats


def shard_of(config):
    """``llm_shard`` as ``(index, count)``, or None (a malformed one fails here)."""
    return parse_shard(config["llm_shard"])


def make_encoder(config):
    """The configured sentence encoder, with its embedding cache."""
    return TextEncoder(
        config["encoder_model"],
        cache_dir=config["semantics_cache_dir"],
        batch_size=config["encoder_batch_size"],
        threads=config["llm_threads"],
        progress=config["show_progress"] is not False,
    )


def encode_items(config, dataset, encoder):
    """``(item tokens, their texts, [N, D] vectors)`` for every item of ``dataset`` but padding."""
    tokens = [str(t) for t in dataset.field2id_token[dataset.iid_field][1:]]
    texts = item_texts(config, tokens)
    getLogger().info(f"Item text: {texts.summary()}")
    vectors = encoder.encode([texts.texts[t] for t in tokens])
    return tokens, texts, vectors


def manifest_header(config, kind):
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


def max_failure_ratio(config):
    """``llm_max_failure_ratio`` as a float (None: 0); anything but a number in 0..1 fails."""
    ratio = config["llm_max_failure_ratio"]
    ratio = 0.0 if ratio is None else ratio
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio <= 1:
        raise UserError(
            f"llm_max_failure_ratio must be a number from 0 to 1 (the share of LLM requests "
            f"that may fail before the step does), got {ratio!r}"
        )
    return float(ratio)


def log_summary(stats, encoder, seconds):
    """Log what the step cost; returns the manifest's ``generation`` entry (None without LLM)."""
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


def json_safe(value):
    """``value`` as JSON would read it back (what a manifest stores)."""
    return json.loads(json.dumps(value, default=str))
