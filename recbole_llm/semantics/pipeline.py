"""The semantic step's driver: runs the pipeline a model names, one module per method.

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

import time
from logging import getLogger

from recbole_llm.semantics import batch, shared
from recbole_llm.semantics.intents import run_llm4sbr
from recbole_llm.semantics.interests import run_eimf
from recbole_llm.semantics.settings import KINDS


def run_pipeline(config, kind, make_dataset, refresh=False):
    """Run one pipeline for a config and write its files and manifest; returns the manifest
    path. ``make_dataset()`` builds RecBole's plain sequential dataset of the config (the
    caller's: this package never builds datasets itself); it is called only once the settings
    that fail without reading data are checked."""
    if kind not in KINDS:
        raise ValueError(f"semantic pipeline must be one of {KINDS}, got '{kind}'")
    shared.shard_of(config)  # a malformed llm_shard or failure ratio fails before any data is read
    shared.max_failure_ratio(config)
    batch.check_settings(config)  # an llm_import_batch that is not a file, too
    start = time.perf_counter()
    if kind == "eimf":
        path = run_eimf(config, make_dataset, refresh, start)
    else:
        path = run_llm4sbr(config, make_dataset, refresh, start)
    getLogger().info(f"Semantics written; manifest: {path}")
    return path
