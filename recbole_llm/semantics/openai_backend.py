"""The ``openai`` backend: any OpenAI-compatible chat endpoint (vLLM, Ollama, llama.cpp's
server, OpenAI), over a pool of kept-alive connections, with a timeout, a window of
``llm_concurrency`` requests in flight (hundreds saturate a vLLM server) and retries of what may
pass on a second try (408, 409, 429, 5xx, network errors) after a capped, jittered exponential
back-off that honours ``Retry-After``. The API key is read from the environment variable named
by ``llm_api_key_env`` and never logged. :func:`chat_body` is the request it sends, which the
batch files (:mod:`recbole_llm.semantics.batch`) hold too.
"""

import email.utils
import http.client
import json
import os
import random
import ssl
import threading
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from recbole_llm.semantics.backends import Generation
from recbole_llm.semantics.models import LLMError

#: HTTP statuses worth asking again: request timeout, conflict, rate limit, server errors.
RETRY_STATUSES = frozenset({408, 409, 429})
#: Characters of a server's error body kept in an error message.
BODY_SAMPLE_CHARS = 200


def chat_body(model, messages, decoding):
    """The chat-completions request of one prompt: greedy (temperature 0), at most
    ``max_new_tokens`` new tokens. Holds no API key (that goes in a header)."""
    return {
        "model": model,
        "messages": messages,
        "max_tokens": decoding["max_new_tokens"],
        "temperature": 0,
        "frequency_penalty": 0,
    }


class RequestFailure(Exception):
    """One failed attempt at a request: ``kind`` is its class (``HTTP 500``, ``timeout``, ...),
    ``retry`` whether asking again may help, ``wait`` a server's ``Retry-After`` in seconds."""

    def __init__(self, kind, message, retry, wait=None):
        super().__init__(message)
        self.kind, self.retry, self.wait = kind, retry, wait


def retry_after_seconds(value, now=None):
    """A ``Retry-After`` header (seconds, or an HTTP date) as seconds to wait, or None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class ConnectionPool:
    """Keep-alive HTTP(S) connections to one server, reused across requests and threads.

    Follows the ``http_proxy`` / ``https_proxy`` / ``no_proxy`` environment variables as
    urllib does. At most ``size`` idle connections are kept.
    """

    def __init__(self, url, timeout, size):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise LLMError(f"llm_base_url must be an http:// or https:// address, got '{url}'")
        self.url = url
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.https else 80)
        self.path = parts.path or "/"
        if parts.query:
            self.path += "?" + parts.query
        self.timeout = timeout
        self.size = max(1, size)
        self.proxy = None
        proxy = urllib.request.getproxies().get(parts.scheme)
        if proxy and not urllib.request.proxy_bypass(self.host):
            proxy_parts = urllib.parse.urlsplit(proxy if "://" in proxy else "http://" + proxy)
            self.proxy = (proxy_parts.hostname, proxy_parts.port or 80)
        self._idle = []
        self._lock = threading.Lock()
        self.opened = 0  # connections made so far

    def _connect(self):
        with self._lock:
            self.opened += 1
        host, port = self.proxy or (self.host, self.port)
        if self.https:
            connection = http.client.HTTPSConnection(
                host, port, timeout=self.timeout, context=ssl.create_default_context()
            )
            if self.proxy:
                connection.set_tunnel(self.host, self.port)
            return connection
        return http.client.HTTPConnection(host, port, timeout=self.timeout)

    def post(self, body, headers):
        """POST ``body``: ``(status, response headers, response bytes)``. A kept-alive
        connection the server has meanwhile closed is replaced once, at no attempt's cost."""
        with self._lock:
            connection = self._idle.pop() if self._idle else None
        for fresh in (False, True):
            if connection is None or fresh:
                connection = self._connect()
            reused = connection.sock is not None
            # through a plain-http proxy the request line holds the whole address
            target = self.url if self.proxy and not self.https else self.path
            try:
                connection.request("POST", target, body=body, headers=headers)
                response = connection.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                connection.close()
                if reused and not fresh:
                    continue
                raise
            except BaseException:
                connection.close()
                raise
            if response.will_close:
                connection.close()
            with self._lock:
                if len(self._idle) < self.size:
                    self._idle.append(connection)
                else:
                    connection.close()
            return response.status, response.headers, data

    def close(self):
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


class OpenAIBackend:
    """An OpenAI-compatible chat-completions endpoint (``{base_url}/chat/completions``).

    At most ``concurrency`` requests are in flight at once (:meth:`submit` queues the rest),
    each on a thread of its own, over one pool of as many kept-alive connections. A failed attempt is retried (at most
    ``max_retries`` times) only when asking again may help: HTTP 408, 409, 429 and 5xx, and
    network errors (refused or dropped connections, timeouts). Each retry waits a capped
    exponential back-off with jitter, ``backoff * 2**attempt`` seconds times a random factor
    in [0.5, 1], at most ``backoff_max``; a ``Retry-After`` from the server is honoured up to
    the same cap. Other failures (401, 404, a reply that is not JSON or has no text) are not
    retried. A request that still fails returns a :class:`Generation` with ``error`` set (its
    class in ``failure``), which is never cached.
    """

    name = "openai"
    independent_requests = True  # no batch effects: a reply does not depend on its neighbours

    def __init__(
        self,
        model,
        base_url,
        api_key_env=None,
        timeout=60.0,
        max_retries=3,
        concurrency=4,
        backoff=1.0,
        backoff_max=60.0,
    ):
        if not base_url:
            raise LLMError("llm_backend 'openai' needs llm_base_url, e.g. http://localhost:8000/v1")
        if not model:
            raise LLMError("llm_backend 'openai' needs llm_model: the model name the server serves")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.identity = f"served:{model}"
        self.timeout = timeout
        self.max_retries = max_retries
        self.concurrency = concurrency
        self.backoff = backoff
        self.backoff_max = backoff_max
        self._key = None
        if api_key_env:
            self._key = os.environ.get(api_key_env)
            if not self._key:
                raise LLMError(
                    f"llm_api_key_env names the environment variable '{api_key_env}', which is "
                    "not set. Export the API key under that name (it is never logged)."
                )
        self.pool = ConnectionPool(self.url, timeout, concurrency)
        self._random = random.Random()
        self._executor = None
        self._executor_lock = threading.Lock()

    def _sample(self, data):
        """The first part of a server's reply, on one line, for an error message."""
        text = " ".join(data.decode("utf-8", "replace").split())
        if self._key:
            text = text.replace(self._key, "***")
        return text[:BODY_SAMPLE_CHARS] + ("..." if len(text) > BODY_SAMPLE_CHARS else "")

    def _request(self, messages, decoding):
        body = json.dumps(chat_body(self.model, messages, decoding)).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        try:
            status, response_headers, data = self.pool.post(body, headers)
        except TimeoutError as err:
            raise RequestFailure(
                "timeout", f"cannot reach {self.url}: timed out after {self.timeout} s", True
            ) from err
        except ConnectionRefusedError as err:
            raise RequestFailure(
                "connection refused", f"cannot reach {self.url}: connection refused", True
            ) from err
        except (OSError, http.client.HTTPException) as err:
            raise RequestFailure(
                "network error", f"cannot reach {self.url}: {type(err).__name__}: {err}", True
            ) from err
        if status >= 300:
            retry = status in RETRY_STATUSES or status >= 500
            wait = retry_after_seconds(response_headers.get("Retry-After")) if retry else None
            raise RequestFailure(
                f"HTTP {status}",
                f"HTTP {status} from {self.url}: {self._sample(data)}",
                retry,
                wait,
            )
        try:
            payload = json.loads(data.decode("utf-8"))
        except ValueError as err:
            raise RequestFailure(
                "invalid JSON",
                f"unreadable reply from {self.url} (not JSON): {self._sample(data)}",
                False,
            ) from err
        try:
            content = payload["choices"][0]["message"]["content"]
            usage = payload.get("usage") or {}
            tokens = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as err:
            raise RequestFailure(
                "unexpected reply",
                f"unreadable reply from {self.url} (no choices[0].message.content): "
                f"{self._sample(data)}",
                False,
            ) from err
        if not isinstance(content, str):
            raise RequestFailure(
                "no text content",
                f"unreadable reply from {self.url}: the message content is "
                f"{json.dumps(content)[:BODY_SAMPLE_CHARS]}, not text",
                False,
            )
        return content, tokens[0], tokens[1]

    def delay(self, attempt, wait=None):
        """Seconds to wait before retry ``attempt + 1``: capped exponential back-off with
        jitter, or the server's ``Retry-After`` (``wait``) when longer, within the cap."""
        backoff = min(self.backoff_max, self.backoff * 2**attempt) * self._random.uniform(0.5, 1)
        return min(self.backoff_max, max(backoff, wait or 0.0))

    def _one(self, messages, decoding):
        start = time.perf_counter()
        for attempt in range(self.max_retries + 1):
            try:
                text, prompt_tokens, completion_tokens = self._request(messages, decoding)
                return Generation(
                    text.strip(), prompt_tokens, completion_tokens, time.perf_counter() - start
                )
            except RequestFailure as err:
                failure = err
            if not failure.retry or attempt == self.max_retries:
                break
            time.sleep(self.delay(attempt, failure.wait))
        return Generation(
            "", seconds=time.perf_counter() - start, error=str(failure), failure=failure.kind
        )

    @property
    def window(self):
        """Requests in flight at most (``llm_concurrency``)."""
        return max(1, self.concurrency)

    def submit(self, messages, decoding):
        """Queue one request: a future of its :class:`Generation` (never an exception for a
        failed request: its ``error`` says why). At most :attr:`window` run at once."""
        with self._executor_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=self.window, thread_name_prefix="llm-request"
                )
            return self._executor.submit(self._one, messages, decoding)

    def generate(self, batch, decoding):
        """Replies to every request of ``batch``, in order, :attr:`window` at a time."""
        futures = [self.submit(messages, decoding) for messages in batch]
        return [future.result() for future in futures]

    def cancel(self):
        """Drop the queued requests (those in flight finish) and close the idle connections;
        the next :meth:`submit` starts afresh."""
        with self._executor_lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
        self.pool.close()
