"""The cached, batched, resumable generator, and the backend a config chooses.

Decoding is greedy with a cap on new tokens. :class:`CachedGenerator` adds the reply cache,
fixed batches (so that a resumed run produces exactly the replies of an uninterrupted one),
progress with ETA, call/token/time accounting and failure accounting: a request that failed is
never cached (the next run asks it again), each class of failure is logged with a sample
message, and more failures than ``llm_max_failure_ratio`` allows raise
:class:`LLMFailuresError` once every request was tried.
"""

import collections
import json
import os
import threading
import time
from logging import getLogger

import numpy as np

from recbole_llm.keys import SEMANTIC_CHOICES
from recbole_llm.paths import SHIPPED_PREFIX, cache_root, reply_file, shipped_path
from recbole_llm.semantics.backends import LlamaCppBackend, TransformersBackend
from recbole_llm.semantics.cache import ReplyCache, request_keys
from recbole_llm.semantics.inflight import (
    UNRECORDED_BACKEND,
    GenerationPass,
    GenerationStats,
    first_run_message,
    from_cache,
)
from recbole_llm.semantics.models import LLMError
from recbole_llm.semantics.openai_backend import OpenAIBackend
from recbole_llm.utils import atomic_write

BACKENDS = SEMANTIC_CHOICES["llm_backend"]
#: Requests a generation pass holds at once: their prompts, keys and replies (rounded to whole
#: batches). Beyond a chunk a request costs 12 bytes: where its reply is in the cache.
CHUNK_REQUESTS = 1 << 16
MISSING, FAILED = -1, -2  # a request's place in the cache when it has none


def spans(total, batch_size, chunk_requests):
    """``(start, stop)`` of the chunks of ``total`` requests: whole batches, from the first."""
    step = max(1, chunk_requests // batch_size) * batch_size
    return [(start, min(start + step, total)) for start in range(0, total, step)]


class LLMFailuresError(LLMError):
    """More LLM requests failed than ``llm_max_failure_ratio`` allows; no semantic file was
    written, and the replies that succeeded are in the cache."""


class ShardDone(Exception):
    """A generation shard (``llm_shard``) finished its batches; other shards' are still missing.

    Not an error: the command line reports it and exits 0.
    """


def parse_shard(value):
    """``llm_shard`` as ``(index, count)``, or None; accepts ``[i, n]`` with 0 <= i < n."""
    if value is None:
        return None
    if (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        and 0 <= value[0] < value[1]
    ):
        return int(value[0]), int(value[1])
    raise ValueError(
        "llm_shard must be [i, n] with 0 <= i < n (e.g. --llm_shard=[0,2] and "
        f"--llm_shard=[1,2] for two processes), got {value!r}"
    )


def make_backend(config):
    """The backend a config chooses (``llm_backend`` and the ``llm_*`` keys)."""
    backend = config["llm_backend"]
    if backend == "transformers":
        return TransformersBackend(
            config["llm_model"],
            threads=config["llm_threads"],
            cache_dir=config["semantics_cache_dir"],
        )
    if backend == "openai":
        return OpenAIBackend(
            config["llm_model"],
            config["llm_base_url"],
            api_key_env=config["llm_api_key_env"],
            timeout=config["llm_timeout"],
            max_retries=config["llm_max_retries"],
            concurrency=config["llm_concurrency"],
            backoff=config["llm_backoff"],
            backoff_max=config["llm_backoff_max"],
        )
    if backend == "llama_cpp":
        return LlamaCppBackend(config["llm_model"], threads=config["llm_threads"])
    if backend == "batch":  # the step writes a batch file instead (semantics/batch.py)
        raise LLMError(
            "llm_backend 'batch' asks no LLM itself: the semantic step writes the prompts the "
            "reply cache lacks to a batch file and stops before generating"
        )
    raise LLMError(f"llm_backend must be one of {BACKENDS}, got '{backend}'")


class CachedGenerator:
    """Generate replies for many requests through a backend and the reply cache.

    Requests are split into fixed batches of the backend's batch size, in the order given; a
    batch is generated only if one of its requests is not cached, and its replies are written
    to the cache as soon as the batch is done. So an interrupted run loses at most the batch in
    flight, and the rerun forms the same batches, giving identical replies. A server backend
    (``independent_requests``) is asked only a batch's missing requests (the ones that failed),
    through a window of requests in flight that spans batches
    (:class:`~recbole_llm.semantics.inflight.GenerationPass`), so an interrupted run loses at
    most the requests in flight and queued. Requests are handled a chunk at a time
    (:meth:`run_in_chunks`), so memory does not grow with their number.

    Several processes may share the cache: a process generating a batch holds its claim
    (:meth:`ReplyCache.claim`), and another one that wants the same batch does its other
    batches first, then waits for the claim and reads the replies from the cache.

    With ``shard=(i, n)`` only batches whose index is ``i`` modulo ``n`` are generated, so ``n``
    processes sharing one cache file split the work (each appends whole lines). A shard whose
    share is done re-reads the file for the others' replies; if some are still missing, it
    raises :class:`ShardDone`.
    """

    def __init__(
        self,
        backend_factory,
        identity,
        cache,
        decoding,
        refresh=False,
        progress=True,
        backend_name=UNRECORDED_BACKEND,
        command=None,
    ):
        self._backend_factory = backend_factory
        self.command = command  # the command line that runs this step (named in messages)
        self.backend_name = backend_name
        self._backend = None
        self._lock = threading.Lock()
        self.identity = identity
        self.cache = cache
        self.decoding = dict(decoding)
        self.refresh = refresh
        self.progress = progress

    @property
    def backend(self):
        """The backend, loaded on first use (a fully cached run never loads the LLM)."""
        with self._lock:
            if self._backend is None:
                self._backend = self._backend_factory()
            return self._backend

    def export(self, path, requests):
        """Write the cached replies of ``requests``, in request order and once each, as a
        reply file another run can read (``llm_reply_files``); the file is replaced whole,
        never left half-written. Returns the numbers written and missing (requests that failed
        are not cached)."""
        seen, counts = set(), [0, 0]

        def write(f):
            for start, stop in spans(len(requests), 1, CHUNK_REQUESTS):
                keys = [k for k in dict.fromkeys(self.keys(requests[start:stop])) if k not in seen]
                seen.update(keys)
                where, length = self.cache.find(keys)
                for at, size in zip(where, length):
                    if at < 0:
                        counts[1] += 1
                        continue
                    f.write(json.dumps(self.cache.read(at, size), ensure_ascii=False) + "\n")
                    counts[0] += 1

        atomic_write(path, write)
        return tuple(counts)

    def keys(self, requests):
        """The cache key of each request (:func:`request_key`)."""
        return request_keys(self.identity, requests, self.decoding)

    def run(self, requests, batch_size, description="LLM", **options):
        """Replies (:class:`Generation`) for every request, plus :class:`GenerationStats`: the
        replies of :meth:`run_in_chunks` in one list (``options`` are its own)."""
        replies = []
        stats = self.run_in_chunks(
            requests, batch_size, lambda start, chunk: replies.extend(chunk), description, **options
        )
        return replies, stats

    def run_in_chunks(
        self,
        requests,
        batch_size,
        on_chunk,
        description="LLM",
        shard=None,
        max_failure_ratio=None,
        known_failures=None,
        chunk_requests=None,
    ):
        """Hand every request's reply (:class:`Generation`) to ``on_chunk(start, replies)``,
        chunk by chunk in request order; returns :class:`GenerationStats`.

        ``requests`` is a sequence (a lazy one builds each chunk's prompts when sliced): a chunk
        of ``chunk_requests`` (default :data:`CHUNK_REQUESTS`, rounded to whole batches, so the batches are those of one pass
        over all requests) has its prompts, keys and replies in memory at once; beyond it a
        request costs 12 bytes (where its reply is). A first pass finds what is cached, so the
        progress bar's total and ETA count only the prompts to generate.

        Every missing request is tried; failed ones are not cached and are logged by class.
        With ``max_failure_ratio`` set, more failed requests than that share of ``requests``
        raise :class:`LLMFailuresError` (after the successes were cached, and after the last
        chunk was handed on: ``on_chunk`` must keep what it is given until the run returns).
        ``known_failures`` (``{key: failed Generation}``, e.g. the failed lines of an imported
        batch) count as this run's failures instead of being asked. A shard hands on nothing
        before every reply is there (:class:`ShardDone` otherwise).
        """
        from tqdm import tqdm

        total = len(requests)
        stats = GenerationStats(requests=total)
        known_failures = known_failures or {}
        chunks = spans(total, batch_size, chunk_requests or CHUNK_REQUESTS)
        where = np.full(total, MISSING, dtype=np.int64)  # a reply's place in the cache
        length = np.zeros(total, dtype=np.uint32)
        failed_at, todo_batches = {}, []  # request -> its failed reply; (start, stop)
        for start, stop in chunks:
            keys = self.keys(requests[start:stop])
            if not self.refresh:
                where[start:stop], length[start:stop] = self.cache.find(keys)
            for i, key in enumerate(keys, start):
                if where[i] < 0 and key in known_failures:
                    where[i], failed_at[i] = FAILED, known_failures[key]
            for low in range(start, stop, batch_size):
                high = min(low + batch_size, stop)
                mine = shard is None or (low // batch_size) % shard[1] == shard[0]
                if mine and (where[low:high] == MISSING).any():
                    todo_batches.append((low, high))
        preset = len(failed_at)
        todo = sum(high - low for low, high in todo_batches)
        if todo:
            getLogger().info(
                first_run_message(description, todo, total, self.identity, self.backend_name)
            )
        if todo_batches:  # load the model first: loading is not generation
            load_start = time.perf_counter()
            self.backend  # noqa: B018
            stats.load_seconds = time.perf_counter() - load_start
        started = time.perf_counter()
        bar = tqdm(
            total=todo, desc=description, unit="prompt", disable=not self.progress or not todo
        )
        failed_now, refreshed = dict(known_failures), set()  # refreshed: only with refresh
        pending = collections.deque(todo_batches)
        for start, stop in chunks:
            batches = []
            while pending and pending[0][0] < stop:
                low, high = pending.popleft()
                batches.append(range(low - start, high - start))
            results = [None] * (stop - start)
            if batches:
                chunk = requests[start:stop]
                keys = self.keys(chunk)
                fresh = {k for k in keys if k not in refreshed} if self.refresh else set()
                generation = GenerationPass(
                    self, chunk, keys, results, fresh, stats, bar, failed=failed_now
                )
                generation.generate(batches, self.backend, description)
                failed_now = generation.failed_now
                refreshed.update(k for k in keys if self.refresh and k not in fresh)
                for batch in batches:
                    failed_at.update((start + i, results[i]) for i in batch if results[i].error)
            if shard is None:  # handed on at once (a shard waits for the others' replies)
                on_chunk(start, self._fill(results, start, where, length, failed_at, stats))
        bar.close()
        stats.wall_seconds = time.perf_counter() - started
        stats.cached = stats.requests - stats.calls - preset
        if shard is not None:
            for i in sorted(failed_at):
                stats.count_failure(failed_at[i])
        self._check_failures(stats, description, max_failure_ratio, preset)
        if shard is not None:
            self._finish_shard(
                requests, chunks, where, length, failed_at, shard, description, stats
            )
            for start, stop in chunks:
                results = [None] * (stop - start)
                self._fill(results, start, where, length, failed_at, stats, count=False)
                on_chunk(start, results)
        return stats

    def _fill(self, results, start, where, length, failed_at, stats, count=True):
        """A chunk's replies: those just generated, the rest from the cache or this run's
        failures; each one accounted in ``stats`` (its failures only with ``count``)."""
        for i, reply in enumerate(results):
            if reply is None:
                at = start + i
                reply = results[i] = (
                    from_cache(self.cache.read(where[at], length[at]))
                    if where[at] >= 0
                    else failed_at[at]
                )
            if reply.error:
                if count:
                    stats.count_failure(reply)
                continue
            stats.total_prompt_tokens += reply.prompt_tokens
            stats.total_completion_tokens += reply.completion_tokens
            stats.total_seconds += reply.seconds
            by_backend = stats.replies_by_backend
            by_backend[reply.backend] = by_backend.get(reply.backend, 0) + 1
        return results

    def _finish_shard(self, requests, chunks, where, length, failed_at, shard, description, stats):
        """Find the other shards' replies in the cache (they may have finished meanwhile), or
        raise :class:`ShardDone` if some are not there yet."""
        self.cache.reload()
        missing = 0
        for start, stop in chunks:
            lacking = [
                i for i in np.flatnonzero(where[start:stop] < 0) + start if i not in failed_at
            ]
            if not lacking:
                continue
            keys = self.keys(requests[start:stop])
            where[lacking], length[lacking] = self.cache.find([keys[i - start] for i in lacking])
            missing += int((where[lacking] < 0).sum())
        if missing:
            raise ShardDone(
                f"{description}: shard {shard[0]}/{shard[1]} is done ({stats.calls} prompts "
                f"generated in this run); {missing} of {len(requests)} replies are other "
                "shards' and not in the cache yet. When every shard has finished, run the same "
                "command without llm_shard to write the semantic files."
            )

    def _check_failures(self, stats, description, max_failure_ratio, preset=0):
        """Log each class of failure with a sample; raise past ``max_failure_ratio``.
        ``preset`` failures were known before the run (an imported batch's), not asked."""
        if not stats.failed:
            return
        getLogger().warning(
            f"{description}: {stats.failed} of {stats.requests} LLM requests failed and were "
            f"not cached: {stats.failure_summary()}"
        )
        if max_failure_ratio is None or stats.failed <= max_failure_ratio * stats.requests:
            return
        succeeded = stats.calls - (stats.failed - preset)
        raise LLMFailuresError(
            f"{description}: {stats.failed} of {stats.requests} LLM requests failed, more than "
            f"llm_max_failure_ratio={max_failure_ratio} allows: {stats.failure_summary()}. "
            f"No semantic file was written; the {succeeded} new replies that succeeded are "
            f"cached in '{self.cache.path}'. Fix the server (or raise llm_max_failure_ratio to "
            "accept fallbacks) and run the same command again: it asks only the failed "
            "prompts."
        )


def reply_cache(config):
    """The reply cache of a config: ``<cache root>/replies.jsonl`` plus read-only files from
    ``llm_reply_files`` (``shipped:<name>`` is a file shipped with the package)."""
    path = os.path.join(cache_root(config["semantics_cache_dir"]), "replies.jsonl")
    extra = []
    for name in config["llm_reply_files"] or []:
        file = reply_file(name)
        if not os.path.isfile(file):
            # silently reading nothing would mean hours of generation instead
            raise LLMError(
                f"llm_reply_files: '{name}' is not a file ({file}). Shipped reply files: "
                f"{sorted(SHIPPED_PREFIX + n for n in os.listdir(shipped_path('')))}; "
                "otherwise give the path of a JSON-lines file written by --llm_export_replies."
            )
        extra.append(file)
    return ReplyCache(path, read_only_paths=extra)
