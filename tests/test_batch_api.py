"""Batch jobs (issue 24): ``llm_backend: batch`` writes the prompts the reply cache lacks as an
OpenAI Batch file and stops; ``llm_import_batch`` reads a job's output into the cache, refusing a
broken file whole; then the step finishes from the cache with no LLM.

The batch job itself is played by :func:`run_batch`, a stand-in for ``vllm run-batch`` that turns
a request file into an output file with canned replies, some of them failed or left out."""

import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import REPO, SYNTH_TEXT
from loopback import refused_url

from recbole_llm import utils
from recbole_llm.config import Config
from recbole_llm.errors import UserError
from recbole_llm.semantic_step import run_pipeline
from recbole_llm.semantics import batch, files
from recbole_llm.semantics.batch import BatchExported
from recbole_llm.semantics.cache import ReplyCache, request_key
from recbole_llm.semantics.generator import CachedGenerator

MODEL = "batch-model"
SECRET = "sk-batch-test-0123456789-secret"
EIMF_FILES = ("itemtext", "interest", "usertypical", "eimf.json")
DECODING = {"max_new_tokens": 8, "repetition_penalty": 1.0, "greedy": True}


def run_batch(requests_path, output_path, errors=(), statuses=None, drop=(), extra=()):
    """What ``vllm run-batch -i requests_path -o output_path`` would write, with canned replies
    (two themes per prompt): custom_ids in ``errors`` get an ``error`` object, those in
    ``statuses`` that HTTP status, those in ``drop`` no line at all; ``extra`` lines (text)
    are appended as they are. Returns the custom_ids of the request file."""
    statuses = statuses or {}
    ids, lines = [], []
    with open(requests_path, encoding="utf-8") as f:
        for line in f:
            request = json.loads(line)
            key = request["custom_id"]
            ids.append(key)
            if key in drop:
                continue
            prompt = request["body"]["messages"][-1]["content"]
            answer = f'["theme {len(prompt) % 7}", "motif {len(prompt) % 5}"]'
            record = {"id": f"batch_req_{len(ids)}", "custom_id": key, "error": None}
            if key in errors:
                record["response"] = None
                record["error"] = {"code": "server_error", "message": "the worker crashed"}
            else:
                body = {
                    "id": f"chatcmpl-{len(ids)}",
                    "object": "chat.completion",
                    "model": request["body"]["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": answer},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": 7},
                }
                status = statuses.get(key, 200)
                if status != 200:
                    body = {"error": {"message": "model overloaded"}}
                record["response"] = {"status_code": status, "request_id": key, "body": body}
            lines.append(json.dumps(record) + "\n")
    with open(output_path, "w", encoding="utf-8") as f:
        f.writelines(lines + list(extra))
    return ids


@pytest.fixture
def step(fast_config, synthetic_root, tmp_path):
    """EIMF semantic-step settings on a private copy of ``synth``, through batch jobs."""
    root = tmp_path / "data"
    shutil.copytree(os.path.join(synthetic_root, "synth"), root / "synth")
    return dict(
        fast_config,
        data_path=str(root),
        semantics_cache_dir=str(tmp_path / "cache"),
        llm_backend="batch",
        llm_model=MODEL,
        llm_max_new_tokens=8,
        typical_ratio=0.2,
        **SYNTH_TEXT,
    )


def eimf(step, **extra):
    return Config(model="EIMF", dataset="synth", config_dict=dict(step, **extra))


def cached_replies(config):
    path = os.path.join(config["semantics_cache_dir"], "replies.jsonl")
    return len(ReplyCache(path)) if os.path.exists(path) else 0


def semantic_files(config):
    return [s for s in EIMF_FILES if os.path.exists(files.file_path(config, s))]


def exported(config):
    """Run the step, which must stop with a batch file: ``(message, path, request lines)``."""
    with pytest.raises(BatchExported) as stop:
        run_pipeline(config, "eimf")
    message = str(stop.value)
    path = re.search(r"lacks to (\S+), an OpenAI Batch file", message).group(1)
    with open(path, encoding="utf-8") as f:
        lines = [json.loads(line) for line in f]
    return message, path, lines


def test_export_import_and_the_step_finishes_from_the_cache(step, monkeypatch, caplog, tmp_path):
    monkeypatch.setenv("BATCH_TEST_KEY", SECRET)
    config = eimf(step, llm_api_key_env="BATCH_TEST_KEY")
    message, path, lines = exported(config)

    # the request file: one OpenAI Batch request a prompt, keyed by its reply-cache key
    assert "\n" not in message and f"wrote the {len(lines)} prompts" in message
    assert path.startswith(os.path.join(str(tmp_path / "cache"), "batches", "synth-typical-users"))
    prompts = len(lines)
    assert prompts > 5 and len({line["custom_id"] for line in lines}) == prompts
    # its name hashes its custom_ids, in the file's order (written a chunk at a time)
    digest = hashlib.sha256("\n".join(line["custom_id"] for line in lines).encode()).hexdigest()
    assert path.endswith(f"-{digest[:12]}.requests.jsonl")
    decoding = {"max_new_tokens": 8, "repetition_penalty": 1.3, "greedy": True}
    for line in lines:
        assert (line["method"], line["url"]) == ("POST", "/v1/chat/completions")
        body = line["body"]
        assert body["model"] == MODEL and body["max_tokens"] == 8 and body["temperature"] == 0
        assert line["custom_id"] == request_key(f"served:{MODEL}", body["messages"], decoding)
    with open(path, encoding="utf-8") as f:
        assert SECRET not in f.read(), "no API key in a batch file"
    assert semantic_files(config) == [] and cached_replies(config) == 0
    output = path.replace(".requests.jsonl", ".output.jsonl")
    assert f"vllm run-batch -i {path} -o {output} --model {MODEL}" in message
    assert message.endswith(f"--llm_import_batch={output}")

    # a broken output (a line cut short, a custom_id of other settings) is refused whole
    foreign = json.dumps({"custom_id": "f" * 64, "response": {"status_code": 200}}) + "\n"
    torn = '{"custom_id": "0000", "response": {"status_code": 2'
    ids = run_batch(path, output, extra=[foreign, torn])
    with pytest.raises(UserError) as refused:
        run_pipeline(eimf(step, llm_import_batch=output), "eimf")
    text = str(refused.value)
    assert "1 malformed line(s) (line " in text and ": not JSON)" in text
    assert f"1 custom_id(s) that are none of this step's requests ('{'f' * 64}')" in text
    assert f"beside them {prompts} replies and 0 failed requests" in text
    assert "Nothing was imported" in text and cached_replies(config) == 0

    # a job where one request failed, one got a 500 and one is missing: the rest is cached, and
    # with llm_max_failure_ratio 0 those three go to a new batch file
    run_batch(path, output, errors={ids[0]}, statuses={ids[1]: 500}, drop={ids[2]})
    caplog.set_level(logging.INFO)
    message, again, lines = exported(eimf(step, llm_import_batch=output))
    assert cached_replies(config) == prompts - 3 and again != path
    assert sorted(line["custom_id"] for line in lines) == sorted(ids[:3])
    warning = [r.getMessage() for r in caplog.records if "still without a reply" in r.getMessage()]
    assert len(warning) == 1 and f"imported {prompts - 3} replies from '{output}'" in warning[0]
    for part in (
        "batch error server_error x 1",
        "HTTP 500 x 1",
        "missing from the batch output x 1",
    ):
        assert part in warning[0], warning[0]

    # the new job succeeds: after its import the step finishes from the cache, asking no LLM
    second = again.replace(".requests.jsonl", ".output.jsonl")
    run_batch(again, second)
    done = eimf(step, llm_import_batch=second)
    manifest = json.load(open(run_pipeline(done, "eimf")))
    assert semantic_files(done) == list(EIMF_FILES)
    assert manifest["generation"]["calls"] == 0 and manifest["generation"]["failed"] == 0
    assert manifest["generation"]["replies_by_backend"] == {"batch": prompts}
    assert manifest["counts"]["typical_users_from_llm"] == prompts
    assert manifest["counts"]["typical_users_echoing_example"] == 0  # themes, not the example
    assert manifest["llm"] == {"backend": "batch", "model": MODEL}

    # the replies are keyed as the openai backend keys them: a served run of the same model
    # finds them all (its server would refuse every connection)
    served = eimf(step, llm_backend="openai", llm_base_url=refused_url())
    manifest = json.load(open(run_pipeline(served, "eimf")))
    assert manifest["generation"]["calls"] == 0 and manifest["generation"]["cached"] == prompts


def test_failures_within_the_ratio_finish_with_counted_fallbacks(step):
    config = eimf(step, llm_max_failure_ratio=0.5)
    _, path, lines = exported(config)
    output = path + ".out"
    ids = run_batch(
        path, output, statuses={lines[0]["custom_id"]: 500}, drop={lines[1]["custom_id"]}
    )
    manifest = json.load(
        open(run_pipeline(eimf(step, llm_max_failure_ratio=0.5, llm_import_batch=output), "eimf"))
    )
    assert manifest["counts"]["typical_users_failed"] == 2
    assert manifest["counts"]["typical_users_from_llm"] == len(ids) - 2
    failures = manifest["generation"]["failures"]
    assert (
        failures["HTTP 500"]["count"] == 1 and "model overloaded" in failures["HTTP 500"]["sample"]
    )
    assert failures["missing from the batch output"]["count"] == 1
    assert cached_replies(config) == len(ids) - 2, "a failure is never cached"


def test_settings_that_cannot_work_fail_before_any_data_is_read(step, tmp_path):
    missing = str(tmp_path / "no-such-output.jsonl")
    with pytest.raises(
        UserError, match=r"llm_import_batch: '.*no-such-output.jsonl' is not a file"
    ):
        run_pipeline(eimf(step, llm_import_batch=missing), "eimf")
    with pytest.raises(UserError, match=r"llm_shard \(\[0, 2\]\) splits .* drop llm_shard"):
        run_pipeline(eimf(step, llm_shard=[0, 2]), "eimf")
    (tmp_path / "output.jsonl").write_text("")
    with pytest.raises(UserError, match="--refresh with llm_import_batch"):
        run_pipeline(
            eimf(step, llm_import_batch=str(tmp_path / "output.jsonl")), "eimf", refresh=True
        )


def small_batch(tmp_path):
    """A generator over a fresh cache, its four requests, and their batch file."""
    cache = ReplyCache(str(tmp_path / "cache" / "replies.jsonl"))
    generator = CachedGenerator(
        lambda: pytest.fail("an import asks no LLM"), f"served:{MODEL}", cache, DECODING
    )
    requests = [[{"role": "user", "content": f"prompt {i}"}] for i in range(4)]
    path = str(tmp_path / "requests.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        for key, messages in zip(generator.keys(requests), requests):
            f.write(json.dumps(batch.request_line(key, MODEL, messages, DECODING)) + "\n")
    return generator, requests, path


#: a broken output file, made from a good one's lines, and what the refusal says about it
BROKEN = {
    "torn": (
        lambda ls: ls[:-1] + [ls[-1][: len(ls[-1]) // 2]],
        "1 malformed line(s) (line 4: not JSON)",
    ),
    "html": (lambda ls: ls + ["<html>502 Bad Gateway</html>\n"], "(line 5: not JSON)"),
    "no id": (lambda ls: ls + ['{"response": {"status_code": 200}}\n'], "(line 5: no custom_id)"),
    "request file": (lambda ls: ls + ['{"custom_id": "x"}\n'], "neither a response nor an error"),
    "foreign id": (
        lambda ls: ls + [ls[0].replace('"custom_id": "', '"custom_id": "0')],
        "1 custom_id(s) that are none of this step's requests ('0",
    ),
}


@pytest.mark.parametrize("broken", list(BROKEN))
def test_a_broken_output_caches_nothing(tmp_path, broken):
    generator, requests, path = small_batch(tmp_path)
    generator.cache.put_many([{"key": "earlier", "text": "an earlier reply"}])
    before = open(generator.cache.path, "rb").read()
    output = str(tmp_path / "output.jsonl")
    run_batch(path, output)
    lines = open(output, encoding="utf-8").readlines()
    make, says = BROKEN[broken]
    with open(output, "w", encoding="utf-8") as f:
        f.writelines(make(lines))
    with pytest.raises(UserError, match="Nothing was imported") as refused:
        batch.import_batch(output, generator, requests, "typical users")
    assert says in str(refused.value), str(refused.value)
    assert open(generator.cache.path, "rb").read() == before
    assert len(ReplyCache(generator.cache.path)) == 1


def test_an_interrupted_import_leaves_the_cache_as_it_was(tmp_path, monkeypatch):
    generator, requests, path = small_batch(tmp_path)
    generator.cache.put_many([{"key": "earlier", "text": "an earlier reply"}])
    before = open(generator.cache.path, "rb").read()
    output = str(tmp_path / "output.jsonl")
    run_batch(path, output)

    def killed(source, target):
        raise KeyboardInterrupt  # the moment before the rename

    monkeypatch.setattr(utils.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        batch.import_batch(output, generator, requests, "typical users")
    monkeypatch.undo()
    assert open(generator.cache.path, "rb").read() == before
    assert [n for n in os.listdir(tmp_path / "cache") if n.endswith(".tmp")] == []
    left = batch.import_batch(output, generator, requests, "typical users")
    assert left == {} and len(ReplyCache(generator.cache.path)) == 5
    replies, stats = generator.run(requests, batch_size=2)
    assert stats.calls == 0 and stats.replies_by_backend == {"batch": 4}
    assert replies[1].text == '["theme 1", "motif 3"]' and replies[1].completion_tokens == 7


def test_the_command_line_prints_the_file_and_the_import_command_that_works(step, tmp_path):
    config_file = tmp_path / "batch.yaml"
    config_file.write_text(yaml.safe_dump(step))
    script = os.path.join(REPO, "run_recbole_llm.py")
    environment = dict(os.environ, PYTHONPATH=REPO, HF_HUB_OFFLINE="1")
    result = subprocess.run(
        [
            sys.executable,
            script,
            "--model=EIMF",
            "--dataset=synth",
            "--semantics",
            f"--config_files={config_file}",
        ],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("LLM batch (typical users): wrote the "), last
    path = re.search(r"lacks to (\S+), an OpenAI Batch file", last).group(1)
    command = last.split("then import its output: ")[1]
    output = shlex.split(command)[-1].split("=", 1)[1]
    run_batch(path, output)
    # the printed command, run as printed (with this interpreter and the checkout's script)
    assert command.startswith("python run_recbole_llm.py ")
    command = command.replace("python run_recbole_llm.py", f"{sys.executable} {script}", 1)
    result = subprocess.run(
        command,
        shell=True,
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    config = eimf(step)
    assert semantic_files(config) == list(EIMF_FILES)
    manifest = json.load(open(files.manifest_path(config, "eimf")))
    assert manifest["generation"]["calls"] == 0 and manifest["generation"]["failed"] == 0
