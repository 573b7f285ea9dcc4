"""The cached, batched, resumable generator, and the backend a config chooses.

Decoding is greedy with a cap on new tokens. :class:`CachedGenerator` adds the reply cache,
fixed batches (so that a resumed run produces exactly the replies of an uninterrupted one),
progress with ETA, call/token/time accounting and failure accounting: a request that failed is
never cached (the next run asks it again), each class of failure is logged with a sample
message, and more failures than ``llm_max_failure_ratio`` allows raise
:class:`LLMFailuresError` once every request was tried.
"""

import json
import os
import threading
import time
from logging import getLogger

from recbole_llm.keys import SEMANTIC_CHOICES
from recbole_llm.paths import cache_root, shipped_path
from recbole_llm.semantics.backends import LlamaCppBackend, TransformersBackend
from recbole_llm.semantics.cache import ReplyCache, request_key
from recbole_llm.semantics.inflight import (
    UNRECORDED_BACKEND,
    GenerationPass,
    GenerationStats,
    from_cache,
)
from recbole_llm.semantics.models import LLMError
from recbole_llm.semantics.openai_backend import OpenAIBackend
from recbole_llm.utils import atomic_write

BACKENDS = SEMANTIC_CHOICES["llm_backend"]


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


#: a rough time per prompt: SmolLM2-135M (the default LLM) on one CPU core with transformers,
#: 2.5-4 s measured on a 2-core CPU; a larger LLM or a busy machine takes several times longer
ROUGH_SECONDS_PER_PROMPT = 3.0


def first_run_message(description, todo, total, identity):
    """The INFO line before an LLM step asks its prompts: what runs and roughly how long."""
    minutes = todo * ROUGH_SECONDS_PER_PROMPT / 60
    when = f"about {minutes:.0f} min" if minutes >= 1.5 else "under 2 min"
    return (
        f"LLM step ({description}): asking {todo} of {total} prompts ({total - todo} cached) "
        f"to {identity}; {when} at a rough {ROUGH_SECONDS_PER_PROMPT:.0f} s per prompt on a CPU "
        "with the default LLM. Replies are cached: the next run asks none of them again."
    )


class CachedGenerator:
    """Generate replies for many requests through a backend and the reply cache.

    Requests are split into fixed batches of the backend's batch size, in the order given; a
    batch is generated only if one of its requests is not cached, and its replies are written
    to the cache as soon as the batch is done. So an interrupted run loses at most the batch in
    flight, and the rerun forms the same batches, giving identical replies. A server backend
    (``independent_requests``) is asked only a batch's missing requests (the ones that failed),
    through a window of requests in flight that spans batches
    (:class:`~recbole_llm.semantics.inflight.GenerationPass`), so an interrupted run loses at
    most the requests in flight and queued.

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
        entries = [self.cache.get(k) for k in dict.fromkeys(self.keys(requests))]
        found = [e for e in entries if e is not None]
        lines = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in found)
        atomic_write(path, lambda f: f.write(lines))
        return len(found), len(entries) - len(found)

    def keys(self, requests):
        return [request_key(self.identity, messages, self.decoding) for messages in requests]

    def run(
        self,
        requests,
        batch_size,
        description="LLM",
        shard=None,
        max_failure_ratio=None,
        known_failures=None,
    ):
        """Replies (:class:`Generation`) for every request, plus :class:`GenerationStats`.

        Every missing request is tried; failed ones are not cached and are logged by class.
        With ``max_failure_ratio`` set, more failed requests than that share of ``requests``
        raise :class:`LLMFailuresError` (after the successes were cached). ``known_failures``
        (``{key: failed Generation}``, e.g. the failed lines of an imported batch) count as this
        run's failures instead of being asked.
        """
        from tqdm import tqdm

        keys = self.keys(requests)
        stats = GenerationStats(requests=len(requests))
        results = [None] * len(requests)
        fresh = set(keys) if self.refresh else set()
        known_failures = known_failures or {}
        todo_batches, preset = [], 0
        for start in range(0, len(requests), batch_size):
            batch = range(start, min(start + batch_size, len(requests)))
            for i in batch:
                entry = self.cache.get(keys[i])
                if entry is not None and keys[i] not in fresh:
                    results[i] = from_cache(entry)
                elif keys[i] in known_failures:
                    results[i], preset = known_failures[keys[i]], preset + 1
            mine = shard is None or (start // batch_size) % shard[1] == shard[0]
            if mine and any(results[i] is None for i in batch):
                todo_batches.append(batch)
        todo = sum(len(b) for b in todo_batches)
        if todo:
            getLogger().info(first_run_message(description, todo, len(requests), self.identity))
        if todo_batches:  # load the model first: loading is not generation
            load_start = time.perf_counter()
            self.backend  # noqa: B018
            stats.load_seconds = time.perf_counter() - load_start
        started = time.perf_counter()
        bar = tqdm(
            total=todo, desc=description, unit="prompt", disable=not self.progress or not todo
        )
        generation = GenerationPass(
            self, requests, keys, results, fresh, stats, bar, failed=known_failures
        )
        if todo_batches:
            generation.generate(todo_batches, self.backend, description)
        bar.close()
        stats.wall_seconds = time.perf_counter() - started
        for reply in results:
            if reply is not None and not reply.error:
                stats.total_prompt_tokens += reply.prompt_tokens
                stats.total_completion_tokens += reply.completion_tokens
                stats.total_seconds += reply.seconds
                by_backend = stats.replies_by_backend
                by_backend[reply.backend] = by_backend.get(reply.backend, 0) + 1
        stats.cached = stats.requests - stats.calls - preset
        for reply in results:
            if reply is not None and reply.error:
                stats.count_failure(reply)
        self._check_failures(stats, description, max_failure_ratio, preset)
        if shard is not None and any(reply is None for reply in results):
            self.cache.reload()  # the other shards may have finished meanwhile
            for i, reply in enumerate(results):
                entry = self.cache.get(keys[i]) if reply is None else None
                if entry is not None:
                    results[i] = from_cache(entry)
        missing = sum(reply is None for reply in results)
        if missing:
            raise ShardDone(
                f"{description}: shard {shard[0]}/{shard[1]} is done ({stats.calls} prompts "
                f"generated in this run); {missing} of {len(requests)} replies are other "
                "shards' and not in the cache yet. When every shard has finished, run the same "
                "command without llm_shard to write the semantic files."
            )
        return results, stats

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


SHIPPED_PREFIX = "shipped:"


def reply_cache(config):
    """The reply cache of a config: ``<cache root>/replies.jsonl`` plus read-only files from
    ``llm_reply_files`` (``shipped:<name>`` is a file shipped with the package)."""
    path = os.path.join(cache_root(config["semantics_cache_dir"]), "replies.jsonl")
    extra = []
    for name in config["llm_reply_files"] or []:
        file = (
            shipped_path(name[len(SHIPPED_PREFIX) :]) if name.startswith(SHIPPED_PREFIX) else name
        )
        if not os.path.isfile(file):
            # silently reading nothing would mean hours of generation instead
            raise LLMError(
                f"llm_reply_files: '{name}' is not a file ({file}). Shipped reply files: "
                f"{sorted(SHIPPED_PREFIX + n for n in os.listdir(shipped_path('')))}; "
                "otherwise give the path of a JSON-lines file written by --llm_export_replies."
            )
        extra.append(file)
    return ReplyCache(path, read_only_paths=extra)
