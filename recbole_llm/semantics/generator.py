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
from dataclasses import dataclass, field
from logging import getLogger

from recbole_llm.keys import SEMANTIC_CHOICES
from recbole_llm.paths import cache_root, shipped_path
from recbole_llm.semantics.backends import Generation, LlamaCppBackend, TransformersBackend
from recbole_llm.semantics.cache import ReplyCache, request_key
from recbole_llm.semantics.models import LLMError
from recbole_llm.semantics.openai_backend import OpenAIBackend
from recbole_llm.utils import atomic_write

BACKENDS = SEMANTIC_CHOICES["llm_backend"]
UNRECORDED_BACKEND = "unrecorded"  # replies cached before the cache recorded backends


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
    raise LLMError(f"llm_backend must be one of {BACKENDS}, got '{backend}'")


@dataclass
class GenerationStats:
    """What a generation pass cost.

    ``calls``, ``prompt_tokens``, ``completion_tokens`` and ``seconds`` count this run's new
    LLM calls; ``failed`` the requests left without a reply (never cached; by class, with a
    sample message, in ``failures``); ``cached`` requests were served without a call. The
    ``total_*`` fields add up every reply used, new or cached: the cost of producing the
    semantics once.
    """

    requests: int = 0
    cached: int = 0
    calls: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    load_seconds: float = 0.0  # loading the model (and converting a GGUF the first time)
    wall_seconds: float = 0.0  # the whole generation pass, bookkeeping and cache writes included
    total_prompt_tokens: int = 0
    total_completion_tokens: int = 0
    total_seconds: float = 0.0
    # which backend made each reply used ("unrecorded" for replies cached before backends were
    # recorded): a cached reply may come from another backend running the same weights
    replies_by_backend: dict = field(default_factory=dict)
    # failed requests by class ("HTTP 500", "timeout", ...): {"count": n, "sample": message}
    failures: dict = field(default_factory=dict)

    def as_dict(self):
        return dict(self.__dict__)

    def count_failure(self, reply):
        """Count a request left without a reply under its failure's class, keeping the first
        message as the sample."""
        self.failed += 1
        kind = reply.failure or "error"
        entry = self.failures.setdefault(kind, {"count": 0, "sample": reply.error})
        entry["count"] += 1

    def failure_summary(self):
        """``HTTP 500 x 3 (e.g. HTTP 500 from ...: ...); timeout x 1 (e.g. ...)``."""
        return "; ".join(
            f"{kind} x {entry['count']} (e.g. {entry['sample']})"
            for kind, entry in sorted(self.failures.items(), key=lambda kv: -kv[1]["count"])
        )


def _from_cache(entry):
    return Generation(
        entry["text"],
        entry.get("prompt_tokens", 0),
        entry.get("completion_tokens", 0),
        entry.get("seconds", 0.0),
        backend=entry.get("backend", UNRECORDED_BACKEND),
    )


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
    (``independent_requests``) is asked only a batch's missing requests: the ones that failed.

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
    ):
        self._backend_factory = backend_factory
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

    def run(self, requests, batch_size, description="LLM", shard=None, max_failure_ratio=None):
        """Replies (:class:`Generation`) for every request, plus :class:`GenerationStats`.

        Every missing request is tried; failed ones are not cached and are logged by class.
        With ``max_failure_ratio`` set, more failed requests than that share of ``requests``
        raise :class:`LLMFailuresError` (after the successes were cached).
        """
        from tqdm import tqdm

        keys = self.keys(requests)
        stats = GenerationStats(requests=len(requests))
        results = [None] * len(requests)
        fresh = set(keys) if self.refresh else set()
        todo_batches = []
        for start in range(0, len(requests), batch_size):
            batch = range(start, min(start + batch_size, len(requests)))
            mine = shard is None or (start // batch_size) % shard[1] == shard[0]
            if mine and any(keys[i] not in self.cache or keys[i] in fresh for i in batch):
                todo_batches.append(batch)
            for i in batch:
                entry = self.cache.get(keys[i])
                if entry is not None and keys[i] not in fresh:
                    results[i] = _from_cache(entry)
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

        failed_now = {}  # key -> failed reply: a prompt that failed is not asked twice a run

        def wanted(i):
            return keys[i] not in self.cache or keys[i] in fresh

        def generate(batch):
            # another process may have made this batch while we waited for its claim
            self.cache.reload()
            if not any(wanted(i) for i in batch):
                for i in batch:
                    results[i] = _from_cache(self.cache.get(keys[i]))
                bar.update(len(batch))
                return
            if getattr(self.backend, "independent_requests", False):
                # a server answers each request alone: ask each missing prompt once (a failed
                # request of an earlier run), not its batch's cached replies again
                asked = {}
                for i in batch:
                    if not wanted(i):
                        results[i] = _from_cache(self.cache.get(keys[i]))
                    elif keys[i] in failed_now:
                        results[i] = failed_now[keys[i]]
                    else:
                        asked.setdefault(keys[i], i)
                asked = list(asked.values())
            else:  # batched decoding: the same batches as an uninterrupted run, same replies
                asked = list(batch)
            replies = self.backend.generate([requests[i] for i in asked], self.decoding)
            entries = []
            for i, reply in zip(asked, replies):
                reply.backend = self.backend_name
                results[i] = reply
                stats.calls += 1
                if reply.error:
                    failed_now[keys[i]] = reply
                    continue
                stats.prompt_tokens += reply.prompt_tokens
                stats.completion_tokens += reply.completion_tokens
                stats.seconds += reply.seconds
                entries.append(
                    {
                        "key": keys[i],
                        "model": self.identity,
                        "backend": self.backend_name,
                        "text": reply.text,
                        "prompt_tokens": reply.prompt_tokens,
                        "completion_tokens": reply.completion_tokens,
                        "seconds": round(reply.seconds, 4),
                    }
                )
            self.cache.put_many(entries)
            fresh.difference_update(e["key"] for e in entries)
            for i in batch:  # a prompt asked twice in one batch gets the one reply
                if results[i] is None:
                    entry = self.cache.get(keys[i])
                    results[i] = failed_now[keys[i]] if entry is None else _from_cache(entry)
            bar.update(len(batch))

        # a batch another process is generating (same cache, same prompts) is left for later:
        # by then its replies are in the cache, and are read instead of asked again
        deferred = []
        for batch in todo_batches:
            with self.cache.claim([keys[i] for i in batch], wait=False) as claimed:
                if claimed:
                    generate(batch)
                else:
                    deferred.append(batch)
        if deferred:
            getLogger().info(
                f"{description}: {len(deferred)} batches are being generated by another process "
                "on this cache; waiting for its replies"
            )
        for batch in deferred:
            with self.cache.claim([keys[i] for i in batch], wait=True):
                generate(batch)
        bar.close()
        stats.wall_seconds = time.perf_counter() - started
        for reply in results:
            if reply is not None and not reply.error:
                stats.total_prompt_tokens += reply.prompt_tokens
                stats.total_completion_tokens += reply.completion_tokens
                stats.total_seconds += reply.seconds
                by_backend = stats.replies_by_backend
                by_backend[reply.backend] = by_backend.get(reply.backend, 0) + 1
        stats.cached = stats.requests - stats.calls
        for reply in results:
            if reply is not None and reply.error:
                stats.count_failure(reply)
        self._check_failures(stats, description, max_failure_ratio)
        if shard is not None and any(reply is None for reply in results):
            self.cache.reload()  # the other shards may have finished meanwhile
            for i, reply in enumerate(results):
                entry = self.cache.get(keys[i]) if reply is None else None
                if entry is not None:
                    results[i] = _from_cache(entry)
        missing = sum(reply is None for reply in results)
        if missing:
            raise ShardDone(
                f"{description}: shard {shard[0]}/{shard[1]} is done ({stats.calls} prompts "
                f"generated in this run); {missing} of {len(requests)} replies are other "
                "shards' and not in the cache yet. When every shard has finished, run the same "
                "command without llm_shard to write the semantic files."
            )
        return results, stats

    def _check_failures(self, stats, description, max_failure_ratio):
        """Log each class of failure with a sample; raise past ``max_failure_ratio``."""
        if not stats.failed:
            return
        getLogger().warning(
            f"{description}: {stats.failed} of {stats.requests} LLM requests failed and were "
            f"not cached: {stats.failure_summary()}"
        )
        if max_failure_ratio is None or stats.failed <= max_failure_ratio * stats.requests:
            return
        succeeded = stats.calls - stats.failed
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
