"""The benchmark runner: run identity, resume, per-user rows, report and bootstrap."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from recbole_llm import bench as benchmark
from recbole_llm.training_state import lock_path, state_lock


@pytest.fixture
def tiny_suite(tmp_path, synthetic_root):
    shared = {
        "epochs": 1,
        "MAX_ITEM_LIST_LENGTH": 10,
        "hidden_size": 16,
        "train_batch_size": 256,
        "metrics": ["Recall", "NDCG", "MRR", "Hit"],
        "topk": [5, 10],
        "valid_metric": "NDCG@10",
        "state": "ERROR",
        "show_progress": False,
        "data_path": synthetic_root,
        "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"]},
    }
    (tmp_path / "shared.yaml").write_text(yaml.safe_dump(shared))
    suite = {
        "name": "tiny",
        "dataset": "synth",
        "seeds": [1, 2],
        "config_files": ["shared.yaml"],
        "runs": [
            "Pop",
            {
                "model": "SASRec",
                "label": "SASRec-fast",
                "config": {"learning_rate": 0.01},
                "seeds": [1],
            },
        ],
        "comparisons": [["SASRec-fast", "Pop"]],
        "report": {"output": "out/tiny.md", "metrics": ["recall", "ndcg"], "topk": [5, 10]},
    }
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    return str(path)


def _script(name):
    """A script of benchmarks/ as a module."""
    path = os.path.join(os.path.dirname(__file__), "..", "benchmarks", f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_suite_runs_resumes_and_reports(tiny_suite, tmp_path, private_cache):
    suite = benchmark.load_suite(tiny_suite)
    logs = []
    rows = benchmark.run_suite(suite, log=logs.append)
    assert len(rows) == 3, "Pop on seeds 1 and 2, SASRec-fast on its own seed 1 only"
    row = rows[("SASRec-fast", 1)]
    assert row["status"] == "ok" and row["epochs"] == 1 and row["seconds_per_epoch"] > 0
    assert row["resumed_at"] == [] and "training_state_file" not in row["config"]
    spec = benchmark.run_spec(suite, suite["runs"][1], 1)
    assert benchmark.state_path(spec).startswith(os.path.join(private_cache, "runs"))
    assert not os.listdir(os.path.join(private_cache, "runs")), "states go once rows are written"
    assert row["config"]["learning_rate"] == 0.01 and row["config"]["seed"] == 1
    per_user = np.array(row["per_user_test"]["ndcg@10"])
    assert len(per_user) == len(row["users"]) == 60
    for metric in ("recall@5", "ndcg@10", "mrr@10", "hit@5"):
        values = np.array(row["per_user_test"][metric])
        assert abs(values.mean() - row["test"][metric]) < 1e-4, f"{metric}: mean of per-user values"

    files = sorted(os.listdir(suite["results_dir"]))
    assert len(files) == 3 and files[0].startswith("Pop-synth-seed1-")
    first = os.path.join(suite["results_dir"], files[0])
    assert files[0].endswith(".json.gz") and benchmark.read_row(first)["model"] == "Pop"
    with open(first, "rb") as f:
        assert f.read() == benchmark.row_bytes(rows[("Pop", 1)]), "the same row, the same bytes"
    # a plain-JSON row (as a worktree of an older commit writes) counts as done, reads the same,
    # and compress_rows turns it back into the same compressed file
    plain = first[: -len(".gz")]
    with open(plain, "w", encoding="utf-8") as f:
        json.dump(rows[("Pop", 1)], f, indent=1, sort_keys=True)
    os.remove(first)
    assert benchmark.load_rows(suite) == rows
    compress_rows = _script("compress_rows")
    assert compress_rows.main(["--runs", suite["results_dir"], "--check"]) == 1
    assert compress_rows.compress(suite["results_dir"], log=lambda *_: None) == 1
    assert sorted(os.listdir(suite["results_dir"])) == files and benchmark.load_rows(suite) == rows

    # resume: nothing is rerun
    logs.clear()
    benchmark.run_suite(suite, log=logs.append)
    assert "3 runs, 3 already done" in logs[0] and len(logs) == 1

    # --only restricts the runs: a missing SASRec row is not redone when only Pop is asked for
    os.remove(os.path.join(suite["results_dir"], files[-1]))
    assert len(benchmark.run_suite(suite, only=["Pop"], log=lambda *_: None)) == 2
    # --seeds likewise: SASRec-fast runs on seed 1 only, so asking for seed 2 skips it
    logs.clear()
    assert len(benchmark.run_suite(suite, seeds=[2], log=logs.append)) == 2
    assert "1 runs, 1 already done" in logs[0]

    # a run that stopped after its last validation, before its row (SASRec-fast's row is still
    # missing): the rerun resumes from its training state instead of training again, and the
    # state goes once the row is written
    spec = benchmark.run_spec(suite, suite["runs"][1], 1)
    assert benchmark.suite_status(suite)[1] == f"to do        SASRec-fast seed 1 ({spec['hash']})"
    benchmark.execute(spec, workdir=str(tmp_path / "interrupted"))
    status = benchmark.suite_status(suite)
    assert sum(line.startswith("done") for line in status) == 2
    assert [line for line in status if line.startswith("partial")] == [
        f"partial      SASRec-fast seed 1 ({spec['hash']}): 1 epochs trained (0 min, best valid "
        f"{row['valid']['ndcg@10']:.4f}); a rerun resumes there"
    ]
    resumed = benchmark.run_suite(suite, log=lambda *_: None)[("SASRec-fast", 1)]
    assert resumed["resumed_at"] == [1] and resumed["test"] == row["test"]
    assert not os.path.exists(benchmark.state_path(spec))

    # a changed shared key is a new run identity
    changed = dict(suite, config={"learning_rate": 0.002})
    assert benchmark.run_spec(changed, suite["runs"][0], 1)["hash"] != row_hash(suite, "Pop", 1)

    path, text = benchmark.write_report(suite, benchmark.run_suite(suite, log=lambda *_: None))
    assert os.path.exists(path) and path.endswith(os.path.join("out", "tiny.md"))
    assert "| SASRec-fast |" in text and " ± " in text and "2/2" in text and "1/1" in text
    assert "| SASRec-fast | Pop |" in text and "95 % interval" in text
    assert "learning_rate" in text and "run_suite.py" in text
    with open(os.path.join(os.path.dirname(path), "tiny.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n", "the bar chart is written beside the report"
    assert "![test ndcg@10 by model](tiny.png)" in text


def test_a_killed_runner_stops_its_worker(tiny_suite, private_cache):
    """`kill` on the runner stops the run it started (no orphan left training); the worker's
    output is in its log, and its validated epochs stay in its state for the next run."""
    with open(tiny_suite, encoding="utf-8") as f:
        raw = yaml.safe_load(f)
    raw["config"] = {"epochs": 500, "stopping_step": 500}  # long enough to be caught training
    raw["runs"], raw["comparisons"] = raw["runs"][1:], []
    with open(tiny_suite, "w", encoding="utf-8") as f:
        yaml.safe_dump(raw, f)
    spec = benchmark.run_spec(benchmark.load_suite(tiny_suite), raw["runs"][0], 1)
    lock = lock_path(benchmark.state_path(spec))
    with state_lock(benchmark.state_path(spec)):  # as a worker holds it before its first epoch
        assert benchmark.suite_status(benchmark.load_suite(tiny_suite)) == [
            f"started      SASRec-fast seed 1 ({spec['hash']}): training now "
            f"(pid {os.getpid()}), no epoch validated yet"
        ]
    runner = subprocess.Popen(
        [sys.executable, "-m", "recbole_llm.bench", tiny_suite],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ, RECBOLE_LLM_CACHE=private_cache),
    )
    try:
        deadline = time.time() + 240
        while not (os.path.exists(benchmark.state_path(spec)) and os.path.getsize(lock)):
            assert runner.poll() is None and time.time() < deadline, "the worker never trained"
            time.sleep(0.2)
        with open(lock, encoding="utf-8") as f:
            worker = int(f.read())
        status = benchmark.suite_status(benchmark.load_suite(tiny_suite))[0]
        assert status.endswith(f"training now (pid {worker})")
        runner.send_signal(signal.SIGTERM)
        assert runner.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        runner.kill()
        runner.wait()
    with pytest.raises(ProcessLookupError):
        os.kill(worker, 0)  # the runner waited for it, so it is gone, not a zombie
    with open(benchmark.worker_log_path(spec), encoding="utf-8") as f:
        assert "=== worker started" in f.read()
    status = benchmark.suite_status(benchmark.load_suite(tiny_suite))[0]
    assert status.startswith("partial") and status.endswith("a rerun resumes there")


def row_hash(suite, label, seed):
    entry = next(e for e in suite["runs"] if e["label"] == label)
    return benchmark.run_spec(suite, entry, seed)["hash"]


def test_bad_suites_are_rejected(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "dataset": "d", "runs": ["A", "A"]}))
    with pytest.raises(ValueError, match="labels must be unique"):
        benchmark.load_suite(str(path))
    path.write_text(
        yaml.safe_dump({"name": "x", "dataset": "d", "runs": ["A"], "comparisons": [["A", "B"]]})
    )
    with pytest.raises(ValueError, match="must name two run labels"):
        benchmark.load_suite(str(path))
    path.write_text(yaml.safe_dump({"name": "x", "runs": ["A"]}))
    with pytest.raises(ValueError, match="has no 'dataset'"):
        benchmark.load_suite(str(path))


def test_a_validation_report_shows_no_test_result(tmp_path):
    """``report.split: valid`` is for choosing settings: its table and chart use validation
    results only, and it cannot carry paired comparisons (runs keep per-user test values only)."""
    suite = {
        "name": "pick",
        "dataset": "d",
        "seeds": [1, 2],
        "runs": ["A", {"model": "A", "label": "A-big", "config": {"hidden_size": 128}}],
        "report": {"output": "pick.md", "metrics": ["ndcg"], "topk": [10], "split": "valid"},
    }
    path = tmp_path / "pick.yaml"
    path.write_text(yaml.safe_dump(suite))
    loaded = benchmark.load_suite(str(path))

    def row(valid, test):
        return {
            "valid": {"ndcg@10": valid},
            "test": {"ndcg@10": test},
            "epochs": 3,
            "seconds_per_epoch": 1.0,
        }

    rows = {("A", 1): row(0.5, 0.111), ("A", 2): row(0.3, 0.222), ("A-big", 1): row(0.7, 0.333)}
    text = benchmark.render_report(loaded, rows)
    assert "| A | 0.4000 ± 0.1414 |" in text and "| A-big | 0.7000 |" in text
    assert "validation metrics only" in text
    assert not any(value in text for value in ("0.111", "0.222", "0.333", "0.1110", "0.3330"))

    for bad, match in (
        ({"split": "train"}, "report.split must be test or valid"),
        ({"split": "valid", "comparisons": [["A-big", "A"]]}, "cannot have comparisons"),
    ):
        broken = dict(suite, report=dict(suite["report"], split=bad["split"]))
        if "comparisons" in bad:
            broken["comparisons"] = bad["comparisons"]
        path.write_text(yaml.safe_dump(broken))
        with pytest.raises(ValueError, match=match):
            benchmark.load_suite(str(path))


def test_rows_with_history_masked_get_their_own_table(tmp_path):
    """A leaderboard whose metrics are unmasked shows the masked metrics of the rows that have
    them (general models run with mask_history) in a table of their own, and only those rows;
    a report whose metrics are masked already has no such table."""
    report = {"output": "board.md", "metrics": ["ndcg"], "topk": [10]}
    suite = {"name": "board", "dataset": "d", "seeds": [1, 2], "runs": ["Seq", "Graph"]}
    path = tmp_path / "board.yaml"
    path.write_text(yaml.safe_dump(dict(suite, report=report)))

    def row(test):
        return {"valid": test, "test": test, "epochs": 3, "seconds_per_epoch": 1.0}

    rows = {
        ("Seq", 1): row({"ndcg@10": 0.5}),
        ("Graph", 1): row({"ndcg@10": 0.1, "masked_ndcg@10": 0.3}),
        ("Graph", 2): row({"ndcg@10": 0.2, "masked_ndcg@10": 0.5}),
    }
    text = benchmark.render_report(benchmark.load_suite(str(path)), rows)
    masked = text[text.index("## With each user's history masked") :]
    assert "| model | masked_ndcg@10 | runs |" in masked
    assert "| Graph | 0.4000 ± 0.1414 | 2 |" in masked and "| Seq |" not in masked
    assert "| Graph | 0.1500 ± 0.0707 |" in text[: text.index("## With each")]
    for value in rows.values():
        value["test"].pop("masked_ndcg@10", None)
    assert "history masked" not in benchmark.render_report(benchmark.load_suite(str(path)), rows)
    path.write_text(yaml.safe_dump(dict(suite, report=dict(report, metrics=["masked_ndcg"]))))
    rows[("Graph", 1)]["test"]["masked_ndcg@10"] = 0.3
    text = benchmark.render_report(benchmark.load_suite(str(path)), rows)
    assert "## With each user's history masked" not in text


def test_paired_bootstrap_and_comparison_from_known_rows(tmp_path):
    assert benchmark.paired_bootstrap([0.1] * 50) == pytest.approx((0.1, 0.1, 0.1))
    mean, low, high = benchmark.paired_bootstrap(np.linspace(-1, 3, 401))
    assert mean == pytest.approx(1.0) and low < 1.0 < high and high - low < 0.5

    def row(values, users, epoch=10.0, test_time=2.0):
        return {
            "per_user_test": {"ndcg@10": values},
            "users": users,
            "test": {"ndcg@10": np.mean(values)},
            "seconds_per_epoch": epoch,
            "test_eval_seconds": test_time,
        }

    rows = {
        ("A", 1): row([0.5, 0.4, 0.3], ["u1", "u2", "u3"], epoch=12.0, test_time=2.0),
        ("B", 1): row([0.2, 0.4, 0.1], ["u3", "u2", "u1"]),  # other order: paired by user id
        ("A", 2): row([0.6, 0.4, 0.3], ["u1", "u2", "u3"], epoch=18.0, test_time=3.0),
        ("B", 2): row([0.3, 0.3, 0.1], ["u1", "u2", "u3"]),
    }
    result = benchmark.compare(rows, "A", "B", [1, 2], "ndcg@10")
    # per-user deltas: u1 (0.4, 0.3), u2 (0.0, 0.1), u3 (0.1, 0.2) -> means 0.35, 0.05, 0.15
    assert result["mean"] == pytest.approx((0.35 + 0.05 + 0.15) / 3)
    assert result["users"] == 3
    # time ratios: A's mean seconds over B's on the same seeds
    assert result["epoch_ratio"] == pytest.approx(15.0 / 10.0)
    assert result["test_time_ratio"] == pytest.approx(2.5 / 2.0)
    path = tmp_path / "pair.yaml"
    report = {"output": "pair.md", "metrics": ["ndcg"], "topk": [10], "compare_metric": "ndcg@10"}
    suite = {"name": "pair", "dataset": "d", "seeds": [1, 2], "runs": ["A", "B"], "report": report}
    path.write_text(yaml.safe_dump(dict(suite, comparisons=[["A", "B"]])))
    for value in rows.values():
        value["epochs"] = 3
    text = benchmark.render_report(benchmark.load_suite(str(path)), rows)
    assert "| A | B | +0.1833 | +78.6 % |" in text and "| 1, 2 | 1.50x | 1.25x |" in text
    assert "## Findings" not in text
    # hand-written findings follow the tables, before the configuration
    path.write_text(yaml.safe_dump(dict(suite, comparisons=[["A", "B"]], findings="A beats B.\n")))
    text = benchmark.render_report(benchmark.load_suite(str(path)), rows)
    assert (
        text.index("1.25x |")
        < text.index("## Findings\n\nA beats B.\n")
        < text.index("## Configuration")
    )
    # a second metric gets its own table (here the same metric again: the same numbers twice)
    also = dict(report, also_compare=["ndcg@10"])
    path.write_text(yaml.safe_dump(dict(suite, report=also, comparisons=[["A", "B"]])))
    text = benchmark.render_report(benchmark.load_suite(str(path)), rows)
    assert text.count("| A | B | +0.1833 | +78.6 % |") == 2
    path.write_text(yaml.safe_dump(dict(suite, report=dict(report, also_compare="ndcg@10"))))
    with pytest.raises(ValueError, match="also_compare must be a list"):
        benchmark.load_suite(str(path))
    path.write_text(yaml.safe_dump(dict(suite, findings=["A", "B"])))
    with pytest.raises(ValueError, match="findings must be Markdown text"):
        benchmark.load_suite(str(path))
    assert benchmark.compare(rows, "A", "C", [1, 2], "ndcg@10") is None
    # B ran on a seed A did not: the relative change is against B on the common seed only
    rows[("B", 3)] = row([0.9, 0.9, 0.9], ["u1", "u2", "u3"])
    result = benchmark.compare(rows, "A", "B", [1, 2, 3], "ndcg@10")
    assert result["seeds"] == [1, 2]
    assert result["relative"] == pytest.approx(result["mean"] / np.mean([0.7 / 3, 0.7 / 3]))


SUITES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


@pytest.mark.parametrize(
    "name", sorted(f for f in os.listdir(os.path.join(SUITES, "suites")) if f.endswith(".yaml"))
)
def test_shipped_suites_load_and_name_real_models(name):
    """Every suite we ship parses, its config files exist, and every run resolves to a model
    and a run identity (so a suite never fails hours into a benchmark on a typo)."""
    from recbole_llm.registry import get_model

    suite = benchmark.load_suite(os.path.join(SUITES, "suites", name))
    assert all(os.path.isfile(f) for f in suite["config_files"]), suite["config_files"]
    assert suite["report"]["output"].startswith(os.path.join(os.path.dirname(SUITES), "results"))
    hashes = set()
    for entry in suite["runs"]:
        get_model(entry["model"])
        hashes.add(benchmark.run_spec(suite, entry, entry["seeds"][0])["hash"])
    assert len(hashes) == len(suite["runs"]), "two rows of one suite would share a run"


def test_committed_rows_keep_their_run_identity():
    """Every row in results/runs is named by the hash the current code gives its config. A new
    config key that cannot change a result (where or how a run happens) belongs in
    VOLATILE_KEYS; otherwise it renames every run, and the committed rows silently drop out of
    the reports. A changed default that does change results must retire the rows it affects."""
    own_hash = _script("pin_row_default").own_hash
    runs = os.path.join(os.path.dirname(SUITES), "results", "runs")
    stale = []
    names = sorted(os.listdir(runs))
    plain = [name for name in names if not name.endswith(benchmark.ROW_SUFFIX)]
    assert not plain, f"{plain}: compress them with benchmarks/compress_rows.py"
    for name in names:
        row = benchmark.read_row(os.path.join(runs, name))
        now = own_hash(row, row["config"])
        if now != row["hash"] or not name.endswith(f"-{row['hash']}.json.gz"):
            stale.append(f"{name}: now {now}")
    assert not stale, stale


def test_pin_row_default_restores_a_row_that_relied_on_a_changed_default(tmp_path):
    """A row that ran with LLM4SBR's old default fusion, stored without the key, resolves to
    another hash once the default changed; pin_row_default writes the old value back, and only
    where that gives the row its own hash."""
    pin = _script("pin_row_default")
    runs = os.path.join(os.path.dirname(SUITES), "results", "runs")
    name = "LLM4SBR-ml-100k-session-seed2020-02513c15cd07.json.gz"  # LLM4SBR-SASRec, residual
    with open(os.path.join(runs, name), "rb") as f:
        committed = f.read()
    row = benchmark.read_row(os.path.join(runs, name))
    assert row["config"]["fusion"] == "residual"
    bare = {k: v for k, v in row["config"].items() if k != "fusion"}
    benchmark.write_row(str(tmp_path / name), {**row, "config": bare})
    wrong = "LLM4SBR-ml-100k-session-seed2020-000000000000.json.gz"
    benchmark.write_row(str(tmp_path / wrong), {**row, "config": bare, "hash": "0" * 12})
    assert pin.own_hash(row, bare) != row["hash"]  # the default is score now
    assert pin.pin("LLM4SBR", "fusion", "paper", str(tmp_path), log=lambda m: None)[0] == []
    pinned, left = pin.pin("LLM4SBR", "fusion", "residual", str(tmp_path), log=lambda m: None)
    assert pinned == [name] and left == [wrong]
    with open(tmp_path / name, "rb") as f:
        assert f.read() == committed  # the same bytes as the committed, pinned row
    assert pin.main(["LLM4SBR", "fusion", "residual", "--runs", str(tmp_path), "--check"]) == 0


def test_llm_size_costs_come_from_manifests_else_from_the_ledger():
    """A fresh clone has the committed rows but not the semantic manifests (they live in the
    data root); the report then takes each row's cost from the committed ledger."""
    report = _script("report_llm_size")
    eimf = {"model": "EIMF", "label": "EIMF-REMI"}
    manifest = {
        "counts": {"typical_users": 46, "typical_users_from_llm": 38},
        "generation": {
            "requests": 46,
            "total_prompt_tokens": 20427,
            "total_completion_tokens": 2208,
            "total_seconds": 375.6,
        },
    }
    ledger = {}
    made = report.row_cost(eimf, manifest, ledger)
    assert made == ["46", "20427", "2208", "376", "38 / 46 typical users"]
    assert report.row_cost(eimf, None, ledger) == made
    assert report.row_cost(eimf, None, {}) == ["-"] * 5
    assert report.row_cost({"model": "REMI", "label": "REMI"}, None, ledger)[:4] == ["0"] * 4
    controls = {"counts": {"typical_users": 46, "typical_users_from_llm": 0}, "generation": None}
    assert (
        report.row_cost(eimf, controls, ledger)[:4] == ["0"] * 4 and ledger["EIMF-REMI"][0] == "0"
    )


def test_probe_replies_counts_distinct_replies_and_phrases(tmp_path, monkeypatch):
    probe = _script("probe_replies")
    path = tmp_path / "x.replies.jsonl"
    replies = ['["eye makeup", "hair care"]'] * 3 + ['["nail polish"]', "plain | text"]
    with open(path, "w") as f:
        for k, text in enumerate(replies):
            f.write(json.dumps({"key": str(k), "text": text, "completion_tokens": 2 * k}) + "\n")
    s = probe.summarise(str(path), top=2)
    assert (s["replies"], s["distinct"], s["phrases"]) == (5, 3, 4)
    assert s["top1"] == 0.6 and s["topn"] == 0.8 and s["tokens"] == 4.0
    out = tmp_path / "out.md"
    monkeypatch.setattr(sys, "argv", ["probe_replies.py", str(path), "--output", str(out)])
    probe.main()
    assert "plain \\| text" in out.read_text()  # a reply cannot break the table
    (tmp_path / "bad.jsonl").write_text('{"key": 1}\n')
    with pytest.raises(SystemExit, match="no 'text' field"):
        probe.summarise(str(tmp_path / "bad.jsonl"), top=2)


def test_probe_eimf_prompts_variants_and_ranking():
    """The probe's "own example" prompt is the semantic step's own; the others differ only in
    the example shown; a masked item never outranks the target."""
    from recbole_llm.semantics import prompts

    probe = _script("probe_eimf_prompts")
    items = ["OPI (Makeup, Nails, Nail Polish)", "Dove (Bath & Body)"]
    own = probe.variant_messages("own example", items, 5, "product", "bought")
    assert own == prompts.eimf_messages(items, 5, noun="product", verb="bought")
    other = probe.variant_messages("other example", items, 5, "product", "bought")
    assert other[1]["content"].startswith("A user watched these movies")
    assert other[0] == own[0] and other[3] == own[3]
    bare = probe.variant_messages("no example", items, 5, "product", "bought")
    assert [m["role"] for m in bare] == ["system", "user"] and bare[1] == own[3]
    scores = np.array([0.0, 0.9, 0.5, 0.8, 0.1])
    assert probe.rank_metrics(scores, 2, set()) == (1 / np.log2(4), 1.0)  # rank 3
    assert probe.rank_metrics(scores, 2, {1, 3}) == (1.0, 1.0)  # the two above masked
    assert probe.rank_metrics(scores, 1, {1}) == (1.0, 1.0)  # a target is never masked
