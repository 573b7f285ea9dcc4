"""Failing loudly and losing nothing on the LLM side: a local server that fails in every way a
server does, caches that heal or refuse to misalign, several processes on one cache, leftover
temporary files, and warnings about bad data (issue 21).

Every server here listens on 127.0.0.1 only, and every wait is tiny (``FAST``)."""

import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import yaml
from conftest import REPO, SYNTH_TEXT
from loopback import ChatServer, chat_payload, refused_url

from recbole_llm import utils
from recbole_llm.config import Config
from recbole_llm.errors import UserError
from recbole_llm.semantic_step import load_or_create, run_pipeline
from recbole_llm.semantics import files
from recbole_llm.semantics.cache import ReplyCache, request_key
from recbole_llm.semantics.embedding_cache import EmbeddingCache
from recbole_llm.semantics.generator import CachedGenerator, LLMFailuresError
from recbole_llm.semantics.models import LLMError
from recbole_llm.semantics.openai_backend import OpenAIBackend, retry_after_seconds
from recbole_llm.semantics.settings import STEP_KEYS, command
from recbole_llm.semantics.settings import settings as step_settings
from recbole_llm.semantics.text import PROMPT_TEXT_MAX_CHARS

MODEL = "fault-model"  # one served name throughout: the cache keys do not change with the mode
FAST = {"llm_max_retries": 2, "llm_backoff": 0.001, "llm_backoff_max": 0.01, "llm_timeout": 2.0}
DECODING = {"max_new_tokens": 8, "repetition_penalty": 1.0, "greedy": True}
EIMF_FILES = ("itemtext", "interest", "usertypical", "eimf.json")


class FaultServer(ChatServer):
    """An OpenAI-compatible server whose ``mode`` says how it answers every request:
    ``ok``, ``500``, ``401``, ``429`` (with ``Retry-After: 0``), ``timeout`` (answers after
    0.5 s), ``garbage`` (HTML, not JSON), ``null`` (``content: null``), ``half`` (500 for
    every other prompt), ``slow`` (answers after ``delay`` seconds). ``prompts`` lists the last
    message of each request received, retries included."""

    def __init__(self, mode="ok", delay=0.0, **options):
        self.mode = mode
        self.delay = delay
        self.prompts = []
        self.times = []
        self._lock = threading.Lock()
        super().__init__(self._respond, **options)

    def _respond(self, body, headers):
        prompt = body["messages"][-1]["content"]
        with self._lock:
            self.prompts.append(prompt)
            self.times.append(time.perf_counter())
        mode = self.mode
        if mode == "half":
            mode = "500" if request_key("", prompt, {}) < "8" else "ok"
        if mode == "500":
            return 500, b'{"error": {"message": "model overloaded", "code": 500}}'
        if mode == "401":
            return 401, b'{"error": {"message": "Incorrect API key provided"}}'
        if mode == "429":
            return 429, b'{"error": "rate limited"}', {"Retry-After": "0"}
        if mode == "timeout":
            time.sleep(0.5)
        if mode == "slow":
            time.sleep(self.delay)
        if mode == "garbage":
            return 200, b"<html><body>502 Bad Gateway</body></html>"
        if mode == "null":
            body = {"choices": [{"message": {"role": "assistant", "content": None}}]}
            return 200, json.dumps(body).encode()
        if "short-term" in prompt:
            return 200, chat_payload("")  # an answer, but naming no item: a fallback, not a failure
        return 200, chat_payload(f'["theme {len(prompt) % 7}", "motif {len(prompt) % 5}"]')

    def count(self):
        with self._lock:
            return len(self.prompts)


@pytest.fixture
def server():
    fake = FaultServer()
    yield fake
    fake.close()


@pytest.fixture
def step(fast_config, synthetic_root, tmp_path):
    """EIMF semantic-step settings on a private copy of ``synth``, asking ``llm_base_url``."""
    root = tmp_path / "data"
    shutil.copytree(os.path.join(synthetic_root, "synth"), root / "synth")
    return dict(
        fast_config,
        data_path=str(root),
        semantics_cache_dir=str(tmp_path / "cache"),
        llm_backend="openai",
        llm_model=MODEL,
        llm_batch_size=4,
        llm_concurrency=4,
        typical_ratio=0.2,
        **FAST,
        **SYNTH_TEXT,
    )


def eimf(step, **extra):
    return Config(model="EIMF", dataset="synth", config_dict=dict(step, **extra))


def semantic_files(config, suffixes=EIMF_FILES):
    return [s for s in suffixes if os.path.exists(files.file_path(config, s))]


def cached_replies(config):
    path = os.path.join(config["semantics_cache_dir"], "replies.jsonl")
    return len(ReplyCache(path)) if os.path.exists(path) else 0


# what each fault looks like, and whether it is retried (llm_max_retries = 2: 3 attempts)
FAULTS = {
    "500": ("HTTP 500", "model overloaded", True),
    "401": ("HTTP 401", "Incorrect API key", False),
    "429": ("HTTP 429", "rate limited", True),
    "timeout": ("timeout", "timed out after 0.1 s", True),
    "garbage": ("invalid JSON", "502 Bad Gateway", False),
    "null": ("no text content", "content is null", False),
    "refused": ("connection refused", "connection refused", True),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_every_fault_fails_the_step_writes_nothing_and_the_next_run_asks_only_again(
    fault, step, server, caplog
):
    kind, sample, retried = FAULTS[fault]
    url = refused_url() if fault == "refused" else server.url
    server.mode = fault
    failing = eimf(step, llm_base_url=url, llm_timeout=0.1 if fault == "timeout" else 2.0)
    caplog.set_level(logging.WARNING)
    with pytest.raises(LLMFailuresError) as err:
        run_pipeline(failing, "eimf")
    message = str(err.value)
    prompts = int(message.split(" of ")[1].split()[0])
    assert prompts > 5 and f"{prompts} of {prompts} LLM requests failed" in message
    assert f"{kind} x {prompts}" in message and sample in message, message
    assert "No semantic file was written" in message and isinstance(err.value, UserError)
    assert f"{kind} x {prompts}" in caplog.text, "the failure class is logged with a sample"
    assert semantic_files(failing) == [], "no semantic file, not even the item texts"
    assert cached_replies(failing) == 0, "a failure is never cached"
    expected_attempts = 0 if fault == "refused" else prompts * (3 if retried else 1)
    assert server.count() == expected_attempts

    server.mode = "ok"
    before = server.count()
    healthy = eimf(step, llm_base_url=server.url)
    manifest = json.load(open(run_pipeline(healthy, "eimf")))
    assert server.count() - before == prompts, "the next run asks exactly the failed prompts"
    assert manifest["generation"]["calls"] == prompts and manifest["generation"]["failed"] == 0
    assert manifest["counts"]["typical_users_from_llm"] == prompts
    assert semantic_files(healthy) == list(EIMF_FILES)


def test_partial_failures_keep_the_successes_and_a_ratio_allows_counted_fallbacks(
    step, server, caplog
):
    server.mode = "half"
    config = eimf(step, llm_base_url=server.url, llm_max_retries=0)
    with pytest.raises(LLMFailuresError, match=r"HTTP 500 x \d+") as err:
        run_pipeline(config, "eimf")
    failed, total = (int(n) for n in str(err.value).split(" LLM requests")[0].split()[-3::2])
    assert 0 < failed < total and semantic_files(config) == []
    assert cached_replies(config) == total - failed, "what succeeded is kept"

    # a failure ratio that allows them: files written, the failed users counted as such
    allowed = eimf(step, llm_base_url=server.url, llm_max_retries=0, llm_max_failure_ratio=1.0)
    before = server.count()
    manifest = json.load(open(run_pipeline(allowed, "eimf")))
    assert server.count() - before == failed, "the cached successes are not asked again"
    assert manifest["counts"]["typical_users_failed"] == failed
    assert manifest["generation"]["failures"]["HTTP 500"]["count"] == failed
    caplog.set_level(logging.WARNING)
    load_or_create(allowed, "eimf")
    assert f"although {failed} LLM requests failed" in caplog.text

    server.mode = "ok"
    before = server.count()
    manifest = json.load(open(run_pipeline(allowed, "eimf")))
    assert server.count() - before == failed and manifest["counts"]["typical_users_failed"] == 0


def test_the_command_line_exits_2_with_the_failure_and_writes_nothing(step, server, tmp_path):
    server.mode = "500"
    settings = dict(step, llm_base_url=server.url, llm_max_retries=0)
    config_file = tmp_path / "served.yaml"
    config_file.write_text(yaml.safe_dump(settings))
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "run_recbole_llm.py"),
            "--model=EIMF",
            "--dataset=synth",
            "--semantics",
            "--config_files=" + str(config_file),
        ],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=REPO, HF_HUB_OFFLINE="1"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: typical users:") and "HTTP 500 x" in last, last
    assert "model overloaded" in last and "Semantics written" not in result.stdout
    config = eimf(settings)
    assert semantic_files(config) == [] and cached_replies(config) == 0


def test_llm4sbr_fails_on_failures_and_falls_back_only_where_an_answer_names_nothing(
    fast_config, tmp_path, server
):
    from synthetic import write_synthetic_sessions

    write_synthetic_sessions(str(tmp_path / "data"), n_users=20, max_len=12)
    config_dict = dict(
        fast_config,
        data_path=str(tmp_path / "data"),
        semantics_cache_dir=str(tmp_path / "cache"),
        USER_ID_FIELD="session_id",
        load_col={"inter": ["session_id", "item_id_list", "item_id"]},
        alias_of_item_id=["item_id_list"],
        benchmark_filename=["train", "valid", "test"],
        text_fields=["movie_title", "class"],
        llm_backend="openai",
        llm_model=MODEL,
        llm_base_url=server.url,
        llm_batch_size=16,
        llm_concurrency=8,
        **FAST,
    )
    config = Config(model="LLM4SBR", dataset="synth-session", config_dict=config_dict)
    outputs = ("itemtext", "intent", "llm4sbr.json")
    server.mode = "null"
    with pytest.raises(LLMFailuresError, match="no text content x") as err:
        run_pipeline(config, "llm4sbr")
    requests = int(str(err.value).split(" of ")[1].split()[0])
    assert f"{requests} of {requests} LLM requests failed" in str(err.value)
    # content null is not retried, and a prompt that failed is not asked twice in one run
    # (samples with the same recent items share a prompt)
    distinct = server.count()
    assert 0 < distinct <= requests
    assert semantic_files(config, outputs) == [] and cached_replies(config) == 0

    server.mode = "ok"
    manifest = json.load(open(run_pipeline(config, "llm4sbr")))
    assert server.count() == 2 * distinct and manifest["generation"]["calls"] == distinct
    counts = manifest["counts"]
    samples = counts["samples"]
    # the long-term answers name items; the short-term ones are empty: fallbacks, not failures
    assert counts["intents_from_llm"] == {"long": samples, "short": 0}
    assert counts["intents_from_last_item"] == {"long": 0, "short": samples}
    assert counts["intents_failed"] == {"long": 0, "short": 0}
    assert semantic_files(config, outputs) == list(outputs)


def backend(url, **options):
    settings = {"timeout": 2.0, "max_retries": 2, "concurrency": 2, "backoff": 0.001}
    settings.update(options)
    return OpenAIBackend(MODEL, url, **settings)


def messages(text):
    return [{"role": "user", "content": text}]


def test_retries_honour_retry_after_within_the_cap():
    first = {}

    def respond(body, headers):
        prompt = body["messages"][-1]["content"]
        if prompt not in first:
            first[prompt] = time.perf_counter()
            return 429, b'{"error": "slow down"}', {"Retry-After": "1"}
        first[prompt] = time.perf_counter() - first[prompt]
        return 200, chat_payload("fine")

    with ChatServer(respond) as server:
        (reply,) = backend(server.url, backoff_max=5.0).generate([messages("a")], DECODING)
        assert reply.text == "fine" and first["a"] >= 0.95, "waited Retry-After, not the backoff"
        (reply,) = backend(server.url, backoff_max=0.05).generate([messages("b")], DECODING)
        assert reply.text == "fine" and first["b"] < 0.5, "never longer than llm_backoff_max"
    assert retry_after_seconds("3") == 3.0 and retry_after_seconds("soon") is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0, "a date in the past"
    waits = [
        backend("http://127.0.0.1:1/v1", backoff=1.0, backoff_max=3.0).delay(a) for a in range(6)
    ]
    assert 0.5 <= waits[0] <= 1.0 and 1.0 <= waits[1] <= 2.0 and max(waits) <= 3.0


def test_requests_reuse_one_pool_of_connections():
    server = FaultServer(keep_alive=True, idle_timeout=0.3)
    try:
        client = backend(server.url, concurrency=2)
        replies = client.generate([messages(f"p{i}") for i in range(12)], DECODING)
        assert all(r.error is None for r in replies) and server.count() == 12
        assert server.connections <= 2 and client.pool.opened <= 2
        # a kept-alive connection the server closed meanwhile is replaced, at no retry's cost
        time.sleep(0.6)
        client.max_retries = 0
        (reply,) = client.generate([messages("after the server closed it")], DECODING)
        assert reply.error is None and server.count() == 13
    finally:
        server.close()


def test_misconfigured_llm_errors_are_user_errors():
    with pytest.raises(LLMError, match="needs llm_base_url") as err:
        OpenAIBackend(MODEL, None)
    assert isinstance(err.value, UserError) and isinstance(err.value, RuntimeError)
    with pytest.raises(LLMError, match="http:// or https://"):
        OpenAIBackend(MODEL, "localhost:8000/v1")


def test_torn_and_malformed_cache_lines_are_dropped_counted_and_asked_again(
    tmp_path, server, caplog
):
    path = str(tmp_path / "replies.jsonl")
    good = [
        {"key": request_key(MODEL, messages(f"q{i}"), DECODING), "text": f"a{i}"} for i in range(3)
    ]
    with open(path, "wb") as f:
        f.write((json.dumps(good[0]) + "\n").encode())
        for bad in (
            b"[1, 2]",  # not an object
            b'{"text": "no key"}',
            b'{"key": 5, "text": "a key that is not text"}',
            b'{"key": "k", "text": null}',
            b'"a string"',
            b"{bad json",
            b"\xff\xfe not utf-8",
            b"",
        ):
            f.write(bad + b"\n")
        f.write((json.dumps(good[1], ensure_ascii=False) + "\n").encode())
        # a kill -9 in the middle of a multi-byte character of the last line
        f.write(json.dumps({"key": "torn", "text": "café"}, ensure_ascii=False).encode()[:-3])
    caplog.set_level(logging.INFO)
    cache = ReplyCache(path)
    assert [cache.get(g["key"])["text"] for g in good[:2]] == ["a0", "a1"]
    assert "torn" not in cache and cache.malformed == 8
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and path in warnings[0].getMessage()
    assert "8 malformed" in warnings[0].getMessage()
    with open(path, "rb") as f:
        assert f.read().endswith(b"\n"), "the torn tail is cut"

    # the malformed lines' prompts are asked again; the good ones are not
    generator = CachedGenerator(lambda: backend(server.url), MODEL, cache, DECODING, progress=False)
    replies, stats = generator.run([messages(f"q{i}") for i in range(3)], batch_size=1)
    assert stats.calls == 1 and server.prompts == ["q2"] and replies[0].text == "a0"
    assert len(ReplyCache(path)) == 3


def test_a_shifted_embedding_key_file_is_rebuilt_not_used(tmp_path, caplog):
    folder = str(tmp_path / "emb")
    cache = EmbeddingCache(folder, dim=2)
    cache.add(["a", "b", "c"], np.array([[1, 1], [2, 2], [3, 3]], dtype=np.float32))
    reopened = EmbeddingCache(folder, dim=2)
    assert reopened.lookup(["c", "a"])[0].tolist() == [[3, 3], [1, 1]]

    with open(os.path.join(folder, "keys.txt"), "r+", encoding="utf-8") as f:
        keys = f.read()
        f.seek(0)
        f.write("stray\n" + keys)  # every key now sits one row below its vector
    caplog.set_level(logging.WARNING)
    shifted = EmbeddingCache(folder, dim=2)
    assert len(shifted) == 0 and not shifted.lookup(["a", "b", "c", "stray"])[1].any()
    assert "keys.txt' has keys that do not match their recorded hash" in caplog.text
    assert "rebuilt" in caplog.text
    shifted.add(["b"], np.array([[5, 5]], dtype=np.float32))
    assert EmbeddingCache(folder, dim=2).lookup(["b"])[0].tolist() == [[5, 5]]

    # a cache from before the check cannot be verified: rebuilt too
    with open(os.path.join(folder, "meta.json"), "w", encoding="utf-8") as f:
        json.dump({"dim": 2}, f)
    assert len(EmbeddingCache(folder, dim=2)) == 0


def test_two_processes_on_one_cache_make_no_duplicate_requests(tmp_path):
    server = FaultServer(mode="slow", delay=0.05)
    path = str(tmp_path / "shared" / "replies.jsonl")
    requests = [messages(f"prompt {i}") for i in range(12)]
    results = {}

    def one_process(name):
        generator = CachedGenerator(
            lambda: backend(server.url, concurrency=1),
            MODEL,
            ReplyCache(path),
            DECODING,
            progress=False,
        )
        results[name] = generator.run(requests, batch_size=2)

    try:
        workers = [threading.Thread(target=one_process, args=(n,)) for n in ("a", "b")]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
    finally:
        server.close()
    assert sorted(server.prompts) == sorted(m[0]["content"] for m in requests), "each prompt once"
    (a, stats_a), (b, stats_b) = results["a"], results["b"]
    assert [r.text for r in a] == [r.text for r in b] and all(r.text for r in a)
    assert stats_a.calls + stats_b.calls == 12
    assert len(ReplyCache(path)) == 12


def test_a_cache_holds_one_claim_for_its_batches_in_flight_and_others_wait(tmp_path):
    path = str(tmp_path / "replies.jsonl")
    ours, theirs = ReplyCache(path), ReplyCache(path)
    batch = ["key a", "key b"]
    first = ours.acquire(batch, wait=False)
    second = ours.acquire(batch, wait=False)  # another batch of the same slot, in flight too
    assert first is not None and second == first
    assert theirs.acquire(batch, wait=False) is None, "another process waits for both"
    ours.release(first)
    assert theirs.acquire(batch, wait=False) is None, "still held for the second batch"
    ours.release(second)
    slot = theirs.acquire(batch, wait=False)
    assert slot == first
    with ours.claim(batch, wait=False) as claimed:
        assert claimed is False
    theirs.release(slot)
    with ours.claim(batch, wait=False) as claimed:
        assert claimed is True


def test_a_leftover_tmp_of_a_killed_writer_is_removed_by_the_next_write(tmp_path):
    state = tmp_path / "state.pth"
    writer = (
        "import sys, time\n"
        "from recbole_llm.utils import atomic_write\n"
        "atomic_write(sys.argv[1], lambda f: time.sleep(60))\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", writer, str(state)], env=dict(os.environ, PYTHONPATH=REPO)
    )
    deadline = time.time() + 60
    while time.time() < deadline and not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]:
        time.sleep(0.02)
    process.kill()  # kill -9 between creating the temporary file and renaming it
    process.wait()
    (leftover,) = [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    assert os.path.getsize(tmp_path / leftover) == 0
    old_style = tmp_path / ".state.pth.k3j4x9ab.tmp"  # an older version's name, no process id
    old_style.write_bytes(b"")
    os.utime(old_style, (time.time() - 2 * utils.LEFTOVER_SECONDS,) * 2)
    live = tmp_path / f".state.pth.{os.getpid()}-inflight.tmp"  # a writer still running
    live.write_bytes(b"")
    other = tmp_path / f".other.pth.{process.pid}-x.tmp"  # another file's: not touched
    other.write_bytes(b"")

    utils.atomic_write(str(state), lambda f: f.write("state"))
    assert state.read_text() == "state"
    assert sorted(n for n in os.listdir(tmp_path) if n.endswith(".tmp")) == sorted(
        [live.name, other.name]
    )


def test_duplicate_interactions_are_counted_and_warned_about(step, caplog):
    from recbole_llm.quick_start import create_dataset
    from recbole_llm.semantic_step import plain_dataset as _plain_dataset

    def sasrec():
        return Config(model="SASRec", dataset="synth", config_dict=step)

    caplog.set_level(logging.WARNING)
    create_dataset(sasrec())
    assert "repeat an earlier row" not in caplog.text, "no warning on clean data"
    inter = os.path.join(step["data_path"], "synth", "synth.inter")
    with open(inter, encoding="utf-8") as f:
        lines = f.readlines()
    with open(inter, "a", encoding="utf-8") as f:
        f.writelines([lines[1], lines[1], lines[5]])
    total = len(lines) - 1 + 3
    create_dataset(sasrec())
    assert f"3 of {total} interactions repeat an earlier row exactly" in caplog.text
    user, item = lines[1].split("\t")[:2]
    assert f"user_id {user}, item_id {item}" in caplog.text
    caplog.clear()
    _plain_dataset(eimf(step))  # the semantic step reads the same data
    assert "3 of" in caplog.text and "rm_dup_inter" in caplog.text


def test_an_over_long_item_text_is_cut_in_prompts_and_warned_about(step, server, caplog):
    folder = os.path.join(step["data_path"], "synth")
    with open(os.path.join(folder, "synth.inter"), encoding="utf-8") as f:
        items = [line.split("\t")[1] for line in f.readlines()[1:]]
    popular = max(set(items), key=items.count)  # surely in some user's prompt
    item_file = os.path.join(folder, "synth.item")
    with open(item_file, encoding="utf-8") as f:
        lines = f.readlines()
    (row,) = [i for i, line in enumerate(lines) if line.split("\t")[0] == popular]
    fields = lines[row].split("\t")
    fields[1] = "Endless " * 12_500  # a 100 KB title
    lines[row] = "\t".join(fields)
    with open(item_file, "w", encoding="utf-8") as f:
        f.writelines(lines)
    caplog.set_level(logging.WARNING)
    config = eimf(step, llm_base_url=server.url, typical_ratio=1.0)  # every user is prompted
    run_pipeline(config, "eimf")
    assert f"1 item texts are longer than {PROMPT_TEXT_MAX_CHARS} characters" in caplog.text
    assert max(len(p) for p in server.prompts) < 25 * PROMPT_TEXT_MAX_CHARS
    quoted = [line for p in server.prompts for line in p.splitlines() if "Endless" in line]
    assert quoted, "the long item was prompted"
    assert all(len(line) <= PROMPT_TEXT_MAX_CHARS + 5 and line.endswith("...") for line in quoted)


def test_the_regenerate_hint_repeats_the_users_settings_and_never_refresh(
    step, server, tmp_path, monkeypatch
):
    config_file = tmp_path / "mine.yaml"
    config_file.write_text(yaml.safe_dump({"typical_ratio": 0.3, "max_interests": 4}))
    cli = [
        "run_recbole_llm.py",
        "--llm_backend=openai",
        f"--llm_base_url={server.url}",
        "--llm_api_key_env=MY_LLM_KEY",
    ]
    monkeypatch.setattr(sys, "argv", cli)
    user_dict = {k: v for k, v in step.items() if k not in ("llm_backend", "typical_ratio")}
    config = Config(
        model="EIMF", dataset="synth", config_file_list=[str(config_file)], config_dict=user_dict
    )
    hint = command(config, "eimf")
    tokens = shlex.split(hint)
    assert "--refresh" not in tokens and tokens[:4] == [
        "python",
        "run_recbole_llm.py",
        "--model=EIMF",
        "--dataset=synth",
    ]
    for flag in cli[1:]:
        assert flag in tokens, (flag, hint)
    from_file = any(t.startswith("--config_files=") and str(config_file) in t for t in tokens)
    assert from_file or {"--max_interests=4", "--typical_ratio=0.3"} <= set(tokens), hint

    # run as printed, it makes the semantics this run reads, through the same server
    argv = shlex.split(hint)[1:]
    config_files = [a.split("=", 1)[1] for a in argv if a.startswith("--config_files=")]
    monkeypatch.setattr(sys, "argv", [a for a in argv if a != "--semantics"])
    again = Config(config_file_list=config_files[0].split() if config_files else None)
    assert again["model"] == "EIMF" and again["dataset"] == "synth"
    assert step_settings(again, "eimf") == step_settings(config, "eimf")
    assert {k: again[k] for k in STEP_KEYS} == {k: config[k] for k in STEP_KEYS}
