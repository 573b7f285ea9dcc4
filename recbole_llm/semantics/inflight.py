"""One pass of the cached generator: what it cost (:class:`GenerationStats`), and how its
batches are generated (:class:`GenerationPass`).

A local model decodes one batch at a time (the same batches as an uninterrupted run, so the
same replies). A server answers each request alone, so its requests run through a window of
``llm_concurrency`` in flight that spans batches: hundreds of requests keep a vLLM server busy,
while each batch is still cached whole as soon as it is done, in request order. A run killed
meanwhile loses at most the requests in flight and queued (twice the window).
"""

import collections
from concurrent.futures import Future
from dataclasses import dataclass, field
from logging import getLogger

from recbole_llm.semantics.backends import Generation

UNRECORDED_BACKEND = "unrecorded"  # replies cached before the cache recorded backends

#: rough seconds per prompt of SmolLM2-135M on one CPU thread by local backend, measured on a
#: 2-core CPU (llama.cpp: 2.2-2.7 prompts/s beside a training run); a server's pace is its own
ROUGH_SECONDS_PER_PROMPT = {"transformers": 3.0, "llama_cpp": 0.45}


def first_run_message(description, todo, total, identity, backend="transformers"):
    """The INFO line before an LLM step asks its prompts: what runs and roughly how long."""
    head = f"LLM step ({description}): asking {todo} of {total} prompts ({total - todo} cached) "
    tail = " Replies are cached: the next run asks none of them again."
    seconds = ROUGH_SECONDS_PER_PROMPT.get(backend)
    if seconds is None:
        return f"{head}to {identity} through {backend}; the progress bar shows its pace.{tail}"
    minutes = todo * seconds / 60
    when = f"about {minutes:.0f} min" if minutes >= 1.5 else "under 2 min"
    return (
        f"{head}to {identity}; {when} at a rough {seconds:g} s per prompt on one CPU thread "
        f"({backend}, the default LLM).{tail}"
    )


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


def from_cache(entry):
    """A cache entry as the :class:`Generation` it was."""
    return Generation(
        entry["text"],
        entry.get("prompt_tokens", 0),
        entry.get("completion_tokens", 0),
        entry.get("seconds", 0.0),
        backend=entry.get("backend", UNRECORDED_BACKEND),
    )


def _done(replies):
    return all(not isinstance(r, Future) or r.done() for r in replies)


class GenerationPass:
    """The state of one chunk of :meth:`CachedGenerator.run_in_chunks
    <recbole_llm.semantics.generator.CachedGenerator.run_in_chunks>`: the chunk's replies so
    far (``results``, filled in place), the prompts that failed this run, the batches in flight.

    Batches are claimed in the cache (:meth:`ReplyCache.acquire`) while they are generated; a
    batch another process holds is left for the end of the chunk, and waited for only once this
    pass holds no claim (so two processes never wait for each other).
    """

    def __init__(self, generator, requests, keys, results, fresh, stats, bar, failed=None):
        self.generator, self.cache = generator, generator.cache
        self.requests, self.keys, self.results = requests, keys, results
        self.fresh, self.stats, self.bar = fresh, stats, bar
        self.failed_now = dict(failed or {})  # key -> failed reply: not asked twice a run
        self.in_flight = set()  # keys asked whose batch is not finished yet
        self.pending = collections.deque()  # (batch, claim slot, asked, replies or futures)
        self.queued = 0  # requests asked and not finished

    def wanted(self, i):
        return self.keys[i] not in self.cache or self.keys[i] in self.fresh

    def plan(self, batch, independent):
        """The requests of ``batch`` to ask, after reading what other processes added: none if
        its replies are all there; for a server each missing prompt once (not one that failed
        this run, nor one a batch in flight asks already); for batched decoding the whole batch,
        as an uninterrupted run forms it."""
        self.cache.reload()
        where, _ = self.cache.find([self.keys[i] for i in batch])  # one look-up a batch
        wanted = [at < 0 or self.keys[i] in self.fresh for i, at in zip(batch, where)]
        if not any(wanted):
            return []
        if not independent:
            return list(batch)
        asked = {}
        for i, want in zip(batch, wanted):
            key = self.keys[i]
            if want and key not in self.failed_now and key not in self.in_flight:
                asked.setdefault(key, i)
        self.in_flight.update(asked)
        return list(asked.values())

    def finish(self, batch, asked, replies):
        """Record the replies of ``asked``, cache the successes at once, and fill in the rest of
        ``batch`` from the cache (a batch finished before it, another process) or this run's
        failures."""
        entries = []
        for i, reply in zip(asked, replies):
            key = self.keys[i]
            self.in_flight.discard(key)
            if not self.wanted(i):
                # batched decoding regenerates a whole batch, as an uninterrupted run forms it,
                # for the prompts it lacks; the cached replies of the others (maybe another
                # backend's) are kept, not replaced, and their regeneration is not a call
                continue
            reply.backend = self.generator.backend_name
            self.results[i] = reply
            self.stats.calls += 1
            if reply.error:
                self.failed_now[key] = reply
                continue
            self.stats.prompt_tokens += reply.prompt_tokens
            self.stats.completion_tokens += reply.completion_tokens
            self.stats.seconds += reply.seconds
            entries.append(
                {
                    "key": key,
                    "model": self.generator.identity,
                    "backend": self.generator.backend_name,
                    "text": reply.text,
                    "prompt_tokens": reply.prompt_tokens,
                    "completion_tokens": reply.completion_tokens,
                    "seconds": round(reply.seconds, 4),
                }
            )
        self.cache.put_many(entries)
        self.fresh.difference_update(e["key"] for e in entries)
        for i in batch:  # a prompt asked twice gets the one reply
            if self.results[i] is None:
                key = self.keys[i]
                self.results[i] = (
                    self.failed_now[key] if self.wanted(i) else from_cache(self.cache.get(key))
                )
        self.bar.update(len(batch))

    def generate(self, batches, backend, description):
        """Generate ``batches`` (ranges of request indices) through ``backend``: one at a time,
        or through its window of requests in flight (a server's ``submit``)."""
        independent = getattr(backend, "independent_requests", False)
        window = backend.window if independent and hasattr(backend, "submit") else 0
        try:
            deferred = [b for b in batches if not self._start(b, backend, window, wait=False)]
            if deferred:
                getLogger().info(
                    f"{description}: {len(deferred)} batches are being generated by another "
                    "process on this cache; waiting for its replies"
                )
            for batch in deferred:
                if not self._start(batch, backend, window, wait=False):
                    self._drain(0)  # hold no claim while waiting for another process's
                    self._start(batch, backend, window, wait=True)
            self._drain(0)
        except BaseException:
            if window:
                backend.cancel()  # Ctrl-C: the queued requests are dropped, not sent
            while self.pending:
                self.cache.release(self.pending.popleft()[1])
            raise

    def _start(self, batch, backend, window, wait):
        """Claim ``batch`` and ask its missing requests (False: another process holds it)."""
        slot = self.cache.acquire([self.keys[i] for i in batch], wait=wait)
        if slot is None:
            return False
        try:
            asked = self.plan(batch, getattr(backend, "independent_requests", False))
            decoding = self.generator.decoding
            if window:
                replies = [backend.submit(self.requests[i], decoding) for i in asked]
            else:
                replies = [self.requests[i] for i in asked]
                replies = backend.generate(replies, decoding) if asked else []
        except BaseException:
            self.cache.release(slot)
            raise
        self.pending.append((batch, slot, asked, replies))
        self.queued += len(asked)
        self._drain(2 * window)
        return True

    def _drain(self, limit):
        """Finish batches in order while more than ``limit`` requests are queued, or while the
        first one is done."""
        while self.pending and (self.queued > limit or _done(self.pending[0][3])):
            batch, slot, asked, replies = self.pending.popleft()
            try:
                replies = [r.result() if isinstance(r, Future) else r for r in replies]
                self.finish(batch, asked, replies)
            finally:
                self.cache.release(slot)
                self.queued -= len(asked)
