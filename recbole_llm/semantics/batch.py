"""LLM requests as a batch job, for a GPU fleet (``vllm run-batch``) or a provider's batch API.

``llm_backend: batch`` makes the semantic step write the prompts the reply cache lacks as an
OpenAI Batch-format JSON-lines file (:func:`request_line`: ``custom_id`` is the reply-cache
key, ``body`` the chat request the ``openai`` backend would send; each missing prompt once, in
the order first asked, found and written a chunk of requests at a time) and stop
(:class:`BatchExported`: the command line prints where the file is, how many requests it holds
and the command that imports the job's output, and exits 0).

``llm_import_batch: FILE`` reads such a job's output into the reply cache before the step asks
anything. Every line is checked first: a file with malformed lines or with custom_ids that are
not this step's requests is refused whole, caching nothing; otherwise its good replies are
cached all at once (:meth:`ReplyCache.put_all`), and the requests that failed in the job or are
missing from its output are counted and reported in one line. With ``llm_backend: batch`` the
step then finishes from the cache, taking what is still missing as failures if
``llm_max_failure_ratio`` allows that many (fallbacks, counted in the manifest), or else writes
those requests to a new batch file.

The files hold no API key: a provider's key goes to its own batch tool, never through us.
"""

import hashlib
import json
import os
import shlex
from logging import getLogger

import numpy as np

from recbole_llm.errors import UserError
from recbole_llm.paths import cache_root
from recbole_llm.semantics.backends import Generation
from recbole_llm.semantics.generator import CHUNK_REQUESTS, spans
from recbole_llm.semantics.inflight import GenerationStats
from recbole_llm.semantics.openai_backend import BODY_SAMPLE_CHARS, chat_body
from recbole_llm.semantics.reply_index import fingerprints
from recbole_llm.utils import atomic_write

BACKEND = "batch"
#: The endpoint every request line names (OpenAI's batch API and vllm run-batch read it).
BATCH_URL = "/v1/chat/completions"
#: Broken lines quoted in the message refusing a file (the rest are counted).
SAMPLES = 3
MISSING = "missing from the batch output"


class BatchExported(Exception):
    """The step wrote a batch file and stopped before generating. Not an error: the command
    line prints the message (the file, its request count, the import command) and exits 0."""


def request_line(key, model, messages, decoding):
    """One request of a batch file: the chat request of :func:`chat_body`, under its
    reply-cache key."""
    return {
        "custom_id": key,
        "method": "POST",
        "url": BATCH_URL,
        "body": chat_body(model, messages, decoding),
    }


def requests_path(config, label, keys):
    """Where a batch file goes: ``llm_batch_file``, or by default
    ``<cache root>/batches/<dataset>-<step>-<hash of its custom_ids>.requests.jsonl`` (``keys``
    may be any iterable: it is read once)."""
    if config["llm_batch_file"]:
        return os.path.expanduser(config["llm_batch_file"])
    digest = hashlib.sha256()
    for number, key in enumerate(keys):  # the hash of the keys joined by newlines
        digest.update((f"\n{key}" if number else key).encode("utf-8"))
    digest = digest.hexdigest()[:12]
    name = f"{config['dataset']}-{'-'.join(label.split())}-{digest}.requests.jsonl"
    return os.path.join(cache_root(config["semantics_cache_dir"]), "batches", name)


def output_path(path):
    """The output file suggested for a batch file: ``x.requests.jsonl`` -> ``x.output.jsonl``."""
    base = path[: -len(".jsonl")] if path.endswith(".jsonl") else path
    base = base[: -len(".requests")] if base.endswith(".requests") else base
    return base + ".output.jsonl"


def check_settings(config):
    """Fail before any data is read: an ``llm_import_batch`` that is not a file, or
    ``llm_shard`` with the batch backend (one file holds every missing prompt)."""
    path = config["llm_import_batch"]
    if path and not os.path.isfile(os.path.expanduser(path)):
        raise UserError(
            f"llm_import_batch: '{path}' is not a file; give the output JSON-lines file of the "
            "batch job (vllm run-batch's -o file, or the output file of a provider's batch)."
        )
    if config["llm_backend"] == BACKEND and config["llm_shard"] is not None:
        raise UserError(
            f"llm_shard ({config['llm_shard']}) splits generation between processes, but "
            "llm_backend 'batch' writes one batch file with every missing prompt: drop llm_shard."
        )


def _sample(value):
    text = " ".join(str(value).split())
    return text[:BODY_SAMPLE_CHARS] + ("..." if len(text) > BODY_SAMPLE_CHARS else "")


def parse_record(record):
    """One line of a batch output: ``("ok", text, prompt tokens, completion tokens)``,
    ``("failed", class, message)`` for a request the job could not answer, or
    ``("malformed", why)`` for a line that is no batch-output record."""
    if not isinstance(record, dict):
        return ("malformed", "not a JSON object")
    if not isinstance(record.get("custom_id"), str):
        return ("malformed", "no custom_id")
    error, response = record.get("error"), record.get("response")
    if error:
        code = error.get("code") if isinstance(error, dict) else None
        message = error.get("message", error) if isinstance(error, dict) else error
        return ("failed", f"batch error {code}" if code else "batch error", _sample(message))
    if not isinstance(response, dict):
        return ("malformed", "neither a response nor an error")
    status, body = response.get("status_code"), response.get("body")
    if status != 200:
        return ("failed", f"HTTP {status}", f"HTTP {status} in the batch: {_sample(body)}")
    try:
        content = body["choices"][0]["message"]["content"]
        usage = body.get("usage") or {}
        tokens = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        return ("failed", "unexpected reply", f"no choices[0].message.content: {_sample(body)}")
    if not isinstance(content, str):
        return ("failed", "no text content", f"the message content is {_sample(content)}")
    return ("ok", content.strip(), *tokens)


def read_output(path, expected):
    """A batch output file checked line by line against the reply-cache keys ``expected``:
    ``(replies {key: (text, prompt tokens, completion tokens)}, failures {key: (class,
    message)}, malformed [(line number, why)], unknown custom_ids)``. A request answered on
    one line and failed on another (two outputs joined) counts as answered."""
    replies, failures, malformed, unknown = {}, {}, [], []
    with open(path, "rb") as f:
        data = f.read()
    for number, raw in enumerate(data.split(b"\n"), 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
            parsed = parse_record(record)
        except ValueError:  # UnicodeDecodeError is one
            parsed = ("malformed", "not JSON")
        if parsed[0] == "malformed":
            malformed.append((number, parsed[1]))
            continue
        key = record["custom_id"]
        if key not in expected:
            unknown.append(key)
        elif parsed[0] == "ok":
            replies[key] = parsed[1:]
            failures.pop(key, None)
        elif key not in replies:
            failures[key] = parsed[1:]
    return replies, failures, malformed, unknown


def import_batch(path, generator, requests, label):
    """Read the batch output ``path`` into the generator's reply cache, all at once or not at
    all (a file with malformed lines or foreign custom_ids is refused whole). Returns the
    requests still without a reply as ``{key: failed Generation}``: those that failed in the
    job and those missing from its output."""
    keys = generator.keys(requests)
    replies, failures, malformed, unknown = read_output(path, set(keys))
    if malformed or unknown:
        broken = []
        if malformed:
            lines = "; ".join(f"line {n}: {why}" for n, why in malformed[:SAMPLES])
            broken.append(f"{len(malformed)} malformed line(s) ({lines})")
        if unknown:
            ids = ", ".join(f"'{k}'" for k in unknown[:SAMPLES])
            broken.append(
                f"{len(unknown)} custom_id(s) that are none of this step's requests ({ids})"
            )
        raise UserError(
            f"llm_import_batch: '{path}' is not a complete output of this step's batch "
            f"({label}, {generator.identity}): {', '.join(broken)}; beside them "
            f"{len(replies)} replies and {len(failures)} failed requests. Nothing was imported. "
            "Give the output of the batch file written for these settings (its custom_ids are "
            "the reply-cache keys of this model, these prompts and this decoding), whole."
        )
    todo = [k for k in dict.fromkeys(keys) if k not in generator.cache]
    cached_before = len(replies) - sum(k in replies for k in todo)
    generator.cache.put_all(
        [
            {
                "key": key,
                "model": generator.identity,
                "backend": BACKEND,
                "text": text,
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "seconds": 0.0,  # a batch job reports no time per request
                "batch_file": os.path.basename(path),
            }
            for key, (text, prompt_tokens, completion_tokens) in replies.items()
            if key in todo
        ]
    )
    left = {}
    for key in todo:
        if key in replies:
            continue
        kind, message = failures.get(key, (MISSING, f"no line for this request in '{path}'"))
        left[key] = Generation("", error=message, failure=kind)
    line = (
        f"{label}: imported {len(todo) - len(left)} replies from '{path}' into the reply cache "
        f"({cached_before} more were cached already)"
    )
    if not left:
        getLogger().info(line)
        return left
    summary = GenerationStats()
    for reply in left.values():
        summary.count_failure(reply)
    getLogger().warning(
        f"{line}; {len(left)} of this step's requests are still without a reply and were not "
        f"cached: {summary.failure_summary()}"
    )
    return left


def exchange(config, generator, requests, label, max_failure_ratio):
    """What the step does with batches before it asks its LLM: import ``llm_import_batch``;
    then, with ``llm_backend: batch``, write the requests the cache still lacks to a batch
    file and raise :class:`BatchExported`, unless none is missing or (right after an import)
    ``max_failure_ratio`` allows those as failures. Returns the failures to pass to
    :meth:`CachedGenerator.run` (None: ask the backend for every missing reply)."""
    left = None
    if config["llm_import_batch"]:
        if generator.refresh:
            raise UserError(
                "--refresh with llm_import_batch would ask the imported replies again; import "
                "without --refresh (the batch was written with it already)."
            )
        path = os.path.expanduser(config["llm_import_batch"])
        left = import_batch(path, generator, requests, label)
    if config["llm_backend"] != BACKEND:
        return None
    wanted, uncached = missing_requests(generator, requests)
    if not len(wanted):
        return None
    if left is not None and uncached <= max_failure_ratio * len(requests):
        return left  # within llm_max_failure_ratio: fallbacks, counted
    # the default name hashes the custom_ids, so they are made once for it and once to write
    path = requests_path(config, label, (key for key, _ in _keyed(generator, requests, wanted)))
    model, decoding = config["llm_model"], generator.decoding

    def write(f):
        for key, messages in _keyed(generator, requests, wanted):
            line = request_line(key, model, messages, decoding)
            f.write(json.dumps(line, ensure_ascii=False) + "\n")

    atomic_write(path, write)
    raise BatchExported(export_message(config, generator, label, path, len(wanted), len(requests)))


def missing_requests(generator, requests):
    """The requests to write to a batch file, a chunk at a time: the positions of the distinct
    ones whose replies the cache lacks (all with ``refresh``), each at its first, and how many
    requests (repeats included) have no cached reply."""
    positions, prints, uncached = [], [], 0
    for start, stop in spans(len(requests), 1, CHUNK_REQUESTS):
        keys = generator.keys(requests[start:stop])
        lacking = generator.cache.find(keys)[0] < 0
        uncached += int(lacking.sum())
        rows = np.arange(len(keys)) if generator.refresh else np.flatnonzero(lacking)
        positions.append(rows + start)
        prints.append(fingerprints([keys[i] for i in rows]))
    positions = np.concatenate(positions) if positions else np.zeros(0, dtype=np.int64)
    if not len(positions):
        return positions, uncached
    _, first = np.unique(np.concatenate(prints), axis=0, return_index=True)
    return positions[np.sort(first)], uncached


def _keyed(generator, requests, positions):
    """``(key, messages)`` of the requests at ``positions``, built a chunk at a time."""
    for start in range(0, len(positions), CHUNK_REQUESTS):
        chosen = [requests[int(i)] for i in positions[start : start + CHUNK_REQUESTS]]
        yield from zip(generator.keys(chosen), chosen)


def export_message(config, generator, label, path, count, total):
    """The one line that says where a batch file is and how to run and import it."""
    output, model = output_path(path), config["llm_model"]
    command = generator.command or "python run_recbole_llm.py --semantics <your settings>"
    if config["llm_batch_file"]:
        command += " " + shlex.quote(f"--llm_batch_file={config['llm_batch_file']}")
    return (
        f"LLM batch ({label}): wrote the {count} prompts of this step's {total} requests that "
        f"the reply cache lacks to {path}, an OpenAI Batch file for model '{model}' (no API "
        "key in it). Run "
        f"it, e.g. `vllm run-batch -i {shlex.quote(path)} -o {shlex.quote(output)} --model "
        f"{shlex.quote(model)}` or through a provider's batch API, then import its output: "
        f"{command} {shlex.quote('--llm_import_batch=' + output)}"
    )
