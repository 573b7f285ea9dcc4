"""Benchmark runner: named suites of (model, dataset, seed, shared config) runs.

A suite is a YAML file::

    name: multi-interest-ml-100k
    dataset: ml-100k
    seeds: [2020, 2021, 2022]
    config_files: [../configs/ml-100k-seq.yaml]   # one shared config for every model
    config: {epochs: 50}                           # more shared keys (optional)
    runs:
      - Pop
      - model: REMI
        label: REMI-SSM                            # row name (default: the model)
        config: {loss_type: SSM}                   # this row's own keys (optional)
        seeds: [2020]                              # this row's seeds (default: the suite's)
    comparisons: [[REMI, SASRec]]                  # paired bootstrap: A minus B
    report: {output: ../../results/x.md, metrics: [recall, ndcg], topk: [10, 20]}
    results_dir: ../../results/runs                # rows, shared by suites (default: runs/
                                                   # beside the report)

Paths are relative to the suite file. Each run is identified by a hash of its full resolved
config (model, dataset, seed, every shared and own key and every default from the YAML
layers) and the package version; after changing a model's *code*, delete its rows. Each run
runs in its own process and writes one JSON
row with RecBole's valid/test results, per-user test metrics, epochs and seconds per epoch.
Finished runs are never redone, so an interrupted suite resumes where it stopped. The Markdown
report gives mean +- std over seeds and, for each comparison, the paired per-user bootstrap 95 %
interval of the difference.

    python benchmarks/run_suite.py benchmarks/suites/multi_interest_ml-100k.yaml
"""

import hashlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import yaml

from recbole_llm.data.prepare import atomic_write
from recbole_llm.errors import (
    DEBUG_FLAG,
    DEBUG_HELP,
    UserError,
    cli_main,
    error_message,
    yaml_problem,
)

SCHEMA = 1


class SuiteError(UserError):
    """A suite file that cannot be run; the message names the file and what is wrong."""


def load_suite(path):
    """Read and check a suite file; returns a dict with absolute paths and expanded runs."""
    if not os.path.isfile(path):
        raise SuiteError(f"Suite file '{path}' does not exist.")
    with open(path, encoding="utf-8") as f:
        try:
            suite = yaml.safe_load(f) or {}
        except yaml.YAMLError as err:
            raise SuiteError(f"Cannot parse suite file '{path}', {yaml_problem(err)}") from err
    if not isinstance(suite, dict):
        raise SuiteError(f"Suite file '{path}' must hold a mapping (name, dataset, runs, ...).")
    base = os.path.dirname(os.path.abspath(path))
    for key in ("name", "dataset", "runs"):
        if key not in suite:
            raise SuiteError(f"Suite '{path}' has no '{key}'.")
    suite["path"] = os.path.abspath(path)
    suite["seeds"] = suite.get("seeds") or [2020]
    suite["config_files"] = [
        os.path.normpath(os.path.join(base, f)) for f in suite.get("config_files") or []
    ]
    suite["config"] = suite.get("config") or {}
    runs = []
    for entry in suite["runs"]:
        entry = {"model": entry} if isinstance(entry, str) else dict(entry)
        if "model" not in entry:
            raise SuiteError(f"Suite '{path}': every run needs a model, got {entry}")
        entry.setdefault("label", entry["model"])
        entry["config"] = entry.get("config") or {}
        entry["seeds"] = entry.get("seeds") or suite["seeds"]  # a costly row may run fewer
        runs.append(entry)
    labels = [r["label"] for r in runs]
    duplicates = {label for label in labels if labels.count(label) > 1}
    if duplicates:
        raise SuiteError(f"Suite '{path}': labels must be unique, repeated: {sorted(duplicates)}")
    for pair in suite.get("comparisons") or []:
        unknown = [label for label in pair if label not in labels]
        if len(pair) != 2 or unknown:
            raise SuiteError(f"Suite '{path}': comparison {pair} must name two run labels")
    suite["runs"] = runs
    if suite.get("findings") is not None and not isinstance(suite["findings"], str):
        raise SuiteError(
            f"Suite '{path}': findings must be Markdown text, got {suite['findings']!r}"
        )
    report = dict(suite.get("report") or {})
    if report.get("output"):
        report["output"] = os.path.normpath(os.path.join(base, report["output"]))
    else:
        report["output"] = None
    report.setdefault("metrics", ["recall", "ndcg", "mrr", "hit"])
    report.setdefault("topk", [10, 20, 50])
    report.setdefault("compare_metric", "ndcg@10")
    # more metrics with a paired-comparison table each (e.g. masked_ndcg@10 beside ndcg@10)
    report.setdefault("also_compare", [])
    if not isinstance(report["also_compare"], list) or not all(
        isinstance(m, str) for m in report["also_compare"]
    ):
        raise SuiteError(
            f"Suite '{path}': report.also_compare must be a list of metric names, got "
            f"{report['also_compare']!r}"
        )
    # "valid": a report for choosing settings, which must never show test results
    report.setdefault("split", "test")
    if report["split"] not in ("test", "valid"):
        raise SuiteError(
            f"Suite '{path}': report.split must be test or valid, got {report['split']}"
        )
    if report["split"] == "valid" and suite.get("comparisons"):
        raise SuiteError(
            f"Suite '{path}': paired comparisons need per-user results, which runs keep for the "
            "test set only; a report with split: valid cannot have comparisons"
        )
    suite["report"] = report
    # rows live in one folder for all suites (default: runs/ beside the report)
    results_dir = suite.get("results_dir") or os.path.join(
        os.path.dirname(report["output"]) if report["output"] else base, "runs"
    )
    suite["results_dir"] = os.path.normpath(os.path.join(base, results_dir))
    return suite


def shared_config(suite):
    """The shared config of a suite: its config files merged in order, then ``config``."""
    merged = {}
    for path in suite["config_files"]:
        if not os.path.isfile(path):
            raise SuiteError(f"Config file '{path}' of suite '{suite.get('path')}' does not exist.")
        with open(path, encoding="utf-8") as f:
            try:
                content = yaml.safe_load(f) or {}
            except yaml.YAMLError as err:
                raise SuiteError(
                    f"Cannot parse config file '{path}' of suite '{suite.get('path')}', "
                    f"{yaml_problem(err)}; fix the file."
                ) from err
        if not isinstance(content, dict):
            raise SuiteError(f"Config file '{path}' must hold a mapping of keys to values.")
        merged.update(content)
    merged.update(suite["config"])
    return merged


#: Keys that say where or how verbosely a run happens, not what it computes.
VOLATILE_KEYS = {
    "data_path",
    "checkpoint_dir",
    "device",
    "gpu_id",
    "use_gpu",
    "local_rank",
    "single_spec",
    "state",
    "show_progress",
    "verbose",
    "log_wandb",
    "wandb_project",
    "worker",
    "save_dataset",
    "dataset_save_path",
    "save_dataloaders",
    "dataloaders_save_path",
    "semantics_cache_dir",
    "auto_prepare",
    "source_dir",
    "auto_semantics",
    "llm_shard",
    "llm_export_replies",
    "llm_backoff",
    "llm_backoff_max",
    "training_state_file",
    "strict_keys",
    "trust_checkpoint",
}


#: Keys added after runs were committed, at the value that computes exactly what those runs
#: computed: left out of a run's identity at that value, so the committed rows stay current.
#: (Issue 20 changed LLM4SBR's and EIMF's defaults; the suites measured before it pin these
#: values in their ``config``, which reproduces their rows bit for bit.)
NEUTRAL_VALUES = {
    "mask_history": False,
    "fusion": "paper",
    "global_pool": "sum",
    "intent_control": "none",
    "intent_control_phase": "both",
    "multi_positive": False,
    "semantic_targets": "text",
    "semantic_control": "none",
    "llm_max_failure_ratio": 0.0,
}
_NO_VALUE = object()

_resolved = {}


def resolved_config(model, dataset, config_dict):
    """The full config RecBole will run with (all YAML layers merged), without volatile keys."""
    key = json.dumps([model, dataset, config_dict], sort_keys=True, default=str)
    if key not in _resolved:
        _resolved[key] = _resolve(model, dataset, config_dict)
    return _resolved[key]


def _resolve(model, dataset, config_dict):
    from recbole_llm.config import Config

    argv, sys.argv = sys.argv, sys.argv[:1]  # Config reads the command line
    try:
        config = Config(model=model, dataset=dataset, config_dict=dict(config_dict))
    finally:
        sys.argv = argv
    return {
        k: v
        for k, v in config.final_config_dict.items()
        if k not in VOLATILE_KEYS and NEUTRAL_VALUES.get(k, _NO_VALUE) != v
    }


def run_spec(suite, entry, seed):
    """Everything that defines one run. Its identity is a hash of the *resolved* config (every
    default included, so a changed model default is a new run) and the package version."""
    from recbole_llm import __version__

    config = shared_config(suite)
    config.update(entry["config"])
    config["seed"] = seed
    spec = {"model": entry["model"], "dataset": suite["dataset"], "seed": seed, "config": config}
    identity = {
        "model": entry["model"],
        "dataset": suite["dataset"],
        "version": __version__,
        "config": resolved_config(entry["model"], suite["dataset"], config),
    }
    canonical = json.dumps(identity, sort_keys=True, default=str)
    spec["hash"] = hashlib.sha256(canonical.encode()).hexdigest()[:12]
    spec["label"] = entry["label"]
    return spec


def row_path(suite, spec):
    """A run's results row. Rows are named by model, dataset, seed and config hash, not by the
    suite's label, so suites that share a run (a backbone in two suites) share its row."""
    name = f"{spec['model']}-{spec['dataset']}-seed{spec['seed']}-{spec['hash']}.json"
    return os.path.join(suite["results_dir"], name)


def _to_builtin(value):
    if isinstance(value, dict):
        return {str(k): _to_builtin(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_builtin(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def evaluation_keys(loader):
    """One key per evaluated row, in evaluation order: the user id (sequential and session
    datasets evaluate one row per user or sample; a repeated id gets ``#n``)."""
    if getattr(loader, "is_sequential", True) or not hasattr(loader, "uid_list"):
        uid_field = loader._dataset.uid_field
        ids = loader._dataset.inter_feat[uid_field].tolist()
    else:
        ids = loader.uid_list.tolist()
    seen, keys = {}, []
    for uid in ids:
        seen[uid] = seen.get(uid, 0) + 1
        keys.append(str(uid) if seen[uid] == 1 else f"{uid}#{seen[uid]}")
    return keys


def execute(spec, data_path=None, workdir=None):
    """Run one spec in this process and return its results row (the worker's job)."""
    import torch
    from recbole.utils import init_logger, init_seed

    from recbole_llm.config import Config
    from recbole_llm.quick_start import _make_output_dirs, train_and_test

    config_dict = dict(spec["config"])
    if data_path:
        config_dict["data_path"] = data_path
    workdir = workdir or os.getcwd()
    config_dict.setdefault("checkpoint_dir", os.path.join(workdir, "saved"))
    config_dict.setdefault("training_state_file", state_path(spec))
    config = Config(model=spec["model"], dataset=spec["dataset"], config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    _make_output_dirs(config)
    init_logger(config)
    start = time.perf_counter()
    result, trainer, test_data = train_and_test(config, saved=True)
    wall = time.perf_counter() - start
    per_user = trainer.per_user_metrics()
    return _to_builtin(
        {
            "schema": SCHEMA,
            **{k: spec[k] for k in ("label", "model", "dataset", "seed", "hash", "config")},
            "status": "ok",
            "valid": dict(result["best_valid_result"] or {}),
            "test": dict(result["test_result"]),
            "per_user_test": {k: np.round(v, 6) for k, v in per_user.items()},
            "users": evaluation_keys(test_data),
            "epochs": len(trainer.epoch_seconds),
            # the median: robust to an epoch stretched by a paused or busy machine
            "seconds_per_epoch": (
                float(np.median(trainer.epoch_seconds)) if trainer.epoch_seconds else 0.0
            ),
            "epoch_seconds": [round(float(t), 3) for t in trainer.epoch_seconds],
            # epochs at which an interrupted run resumed; wall_seconds is the last process's
            "resumed_at": list(trainer.resumed_at),
            "test_eval_seconds": trainer.eval_seconds,
            "wall_seconds": wall,
            "versions": {"python": platform.python_version(), "torch": torch.__version__},
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
    )


def state_path(spec):
    """Where a run keeps its training state between interruptions (deleted once its row is
    written): ``<cache root>/runs/``, outside the repository."""
    from recbole_llm.semantics.llm import cache_root

    name = f"{spec['model']}-{spec['dataset']}-seed{spec['seed']}-{spec['hash']}.state.pth"
    return os.path.join(cache_root(), "runs", name)


def worker_log_path(spec):
    """Where a run's worker writes its output (RecBole's log lines), beside its state."""
    return state_path(spec)[: -len(".state.pth")] + ".log"


def _run_worker(command, workdir, env, output, timeout):
    """Run a worker process with its output appended to ``output``; its exit status.

    However the runner stops (a timeout, Ctrl-C, ``kill``: see :func:`main`), the worker is
    stopped with it rather than left training on its own; its state file keeps every
    validated epoch for the next run.
    """
    os.makedirs(os.path.dirname(output), exist_ok=True)
    with open(output, "a", encoding="utf-8") as out:
        out.write(f"=== worker started {time.strftime('%Y-%m-%d %H:%M:%S')} ===\n")
        out.flush()
        proc = subprocess.Popen(command, cwd=workdir, env=env, stdout=out, stderr=out)
        try:
            return proc.wait(timeout=timeout)
        except BaseException:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise


def _tail(path, chars):
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()[-chars:]


def _worker_main(spec_file, out_file, data_path):
    with open(spec_file, encoding="utf-8") as f:
        spec = json.load(f)
    row = execute(spec, data_path=data_path or None)
    tmp = out_file + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(row, f)
    os.replace(tmp, out_file)


def write_row(path, row):
    """Write a results row atomically."""
    atomic_write(path, lambda f: json.dump(row, f, indent=1, sort_keys=True))


def suite_specs(suite, only=None, seeds=None):
    """The specs of a suite's (run, seed) pairs, seed by seed (so that a partial suite already
    compares every row), restricted to labels or models in ``only`` and to ``seeds``."""
    all_seeds = list(dict.fromkeys(suite["seeds"] + [s for e in suite["runs"] for s in e["seeds"]]))
    specs = [
        run_spec(suite, entry, seed)
        for seed in all_seeds
        for entry in suite["runs"]
        if seed in entry["seeds"]
    ]
    if only:
        specs = [s for s in specs if s["label"] in only or s["model"] in only]
    if seeds:
        specs = [s for s in specs if s["seed"] in seeds]
    return specs


def suite_status(suite, only=None, seeds=None):
    """One line per (run, seed): done (with its result and time), partial (the epochs and best
    validation score its saved training state holds; training now, or interrupted), started
    (training, nothing validated yet) or to do."""
    from recbole_llm.compat import CheckpointError, load_checkpoint
    from recbole_llm.trainer import state_holder

    metric, split = suite["report"]["compare_metric"], suite["report"]["split"]
    lines = []
    for spec in suite_specs(suite, only, seeds):
        name = f"{spec['label']} seed {spec['seed']} ({spec['hash']})"
        holder = state_holder(state_path(spec))  # the pid training this run now, if any
        if os.path.exists(row_path(suite, spec)):
            with open(row_path(suite, spec), encoding="utf-8") as f:
                row = json.load(f)
            lines.append(
                f"done         {name}: {split} {metric} {row[split].get(metric)}, "
                f"{row['epochs']} epochs x {row['seconds_per_epoch']:.1f} s"
            )
        elif os.path.exists(state_path(spec)):
            try:
                state = load_checkpoint(state_path(spec), map_location="cpu")
            except CheckpointError as err:  # e.g. a state of an older version, or damaged
                lines.append(f"partial      {name}: {error_message(err)}")
                continue
            lines.append(
                f"partial      {name}: {state['epoch'] + 1} epochs trained "
                f"({sum(state['epoch_seconds']) / 60:.0f} min, best valid "
                f"{state['best_valid_score']:.4f}); "
                + (f"training now (pid {holder})" if holder else "a rerun resumes there")
            )
        elif holder:
            lines.append(
                f"started      {name}: training now (pid {holder}), no epoch validated yet"
            )
        else:
            lines.append(f"to do        {name}")
    return lines


def run_suite(suite, data_path=None, only=None, timeout=None, log=print, seeds=None):
    """Run every (run, seed) of a suite that has no results row yet; returns the rows."""
    from recbole_llm.compat import checksum_path
    from recbole_llm.trainer import lock_path

    specs = suite_specs(suite, only, seeds)
    todo = [s for s in specs if not os.path.exists(row_path(suite, s))]
    log(f"suite {suite['name']}: {len(specs)} runs, {len(specs) - len(todo)} already done")
    if data_path is None and "data_path" not in shared_config(suite):
        data_path = os.path.abspath("dataset")  # RecBole's default root, from where we run
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=repo + os.pathsep + os.environ.get("PYTHONPATH", ""))
    started = time.time()
    for index, spec in enumerate(todo, 1):
        output = worker_log_path(spec)
        log(
            f"[{index}/{len(todo)}] {spec['label']} seed {spec['seed']} ({spec['hash']}) ... "
            f"(its output: {output})"
        )
        run_start = time.time()
        with tempfile.TemporaryDirectory(prefix="recbole-llm-run-") as workdir:
            spec_file = os.path.join(workdir, "spec.json")
            out_file = os.path.join(workdir, "row.json")
            with open(spec_file, "w", encoding="utf-8") as f:
                json.dump(spec, f)
            command = [sys.executable, "-m", "recbole_llm.benchmark", "--worker"]
            returncode = _run_worker(
                command + [spec_file, out_file, data_path or ""], workdir, env, output, timeout
            )
            if returncode != 0 or not os.path.exists(out_file):
                log(
                    f"    FAILED (exit {returncode}); not recorded, rerun to retry:\n"
                    f"{_tail(output, 2000)}"
                )
                continue
            with open(out_file, encoding="utf-8") as f:
                row = json.load(f)
        write_row(row_path(suite, spec), row)
        state = state_path(spec)
        for leftover in (state, checksum_path(state), lock_path(state), output):
            if os.path.exists(leftover):
                os.remove(leftover)
        elapsed = time.time() - started
        eta = elapsed / index * (len(todo) - index)
        metric, split = suite["report"]["compare_metric"], suite["report"]["split"]
        log(
            f"    done in {time.time() - run_start:.0f} s: {split} {metric} "
            f"{row[split].get(metric)}, "
            f"{row['epochs']} epochs x {row['seconds_per_epoch']:.1f} s; ETA {eta / 60:.0f} min"
        )
    return load_rows(suite)


def load_rows(suite):
    """Rows of the suite's current specs that exist on disk, keyed by (label, seed)."""
    rows = {}
    for entry in suite["runs"]:
        for seed in entry["seeds"]:
            path = row_path(suite, run_spec(suite, entry, seed))
            if os.path.exists(path):
                with open(path, encoding="utf-8") as f:
                    rows[(entry["label"], seed)] = json.load(f)
    return rows


def paired_bootstrap(deltas, n_resamples=2000, seed=0):
    """Mean and 95 % percentile interval of the mean of per-user differences."""
    deltas = np.asarray(deltas, dtype=float)
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(deltas), size=(n_resamples, len(deltas)))
    means = deltas[index].mean(axis=1)
    return float(deltas.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def compare(rows, label_a, label_b, seeds, metric):
    """Paired per-user comparison of two labels on one metric, pooled over common seeds.

    Users are paired by id within a seed; each user's difference is averaged over seeds, then
    users are resampled. Returns None when no seed has both runs.
    """
    per_user, common = {}, []
    for seed in seeds:
        a, b = rows.get((label_a, seed)), rows.get((label_b, seed))
        if not a or not b:
            continue
        common.append(seed)
        users_a = a.get("users") or list(range(len(a["per_user_test"][metric])))
        users_b = b.get("users") or list(range(len(b["per_user_test"][metric])))
        values_b = dict(zip(users_b, b["per_user_test"][metric]))
        for user, value in zip(users_a, a["per_user_test"][metric]):
            if user in values_b:
                per_user.setdefault(user, []).append(value - values_b[user])
    if not per_user:
        return None
    deltas = [np.mean(v) for v in per_user.values()]
    mean, low, high = paired_bootstrap(deltas)
    # relative to B on the same seeds as the differences (B may have run on more)
    base = np.mean([rows[(label_b, s)]["test"][metric] for s in common])
    return {
        "mean": mean,
        "low": low,
        "high": high,
        "relative": mean / base if base else None,
        "users": len(deltas),
        "seeds": common,
        "epoch_ratio": _time_ratio(rows, label_a, label_b, common, "seconds_per_epoch"),
        "test_time_ratio": _time_ratio(rows, label_a, label_b, common, "test_eval_seconds"),
    }


def _time_ratio(rows, label_a, label_b, seeds, key):
    """A's mean ``key`` (seconds) over B's on the same seeds; None if a row lacks it."""
    times = [[rows[(label, s)].get(key) for s in seeds] for label in (label_a, label_b)]
    if any(t is None for side in times for t in side) or not np.mean(times[1]):
        return None
    return float(np.mean(times[0]) / np.mean(times[1]))


def entry_rows(rows, entry):
    """The rows a suite entry has so far, in the order of its seeds."""
    return [rows[(entry["label"], s)] for s in entry["seeds"] if (entry["label"], s) in rows]


def _mean_std(values, digits=4):
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def _comparison_lines(suite, rows, seeds, metric):
    """The paired-comparison table of a report for one metric."""
    lines = [
        "",
        f"Paired per-user bootstrap (2,000 resamples) of the test {metric} difference A − B, "
        "each user's difference averaged over seeds. Time A / B: A's seconds per training "
        "epoch and for the test evaluation over B's, on the same seeds (runs may have shared "
        "the CPU; `benchmarks/bench_model_speed.py` measures the ratios on an idle one):",
        "",
        "| A | B | A − B | relative | 95 % interval | users | seeds | epoch time A / B "
        "| test time A / B |",
        "|---|---|---:|---:|---|---:|---|---:|---:|",
    ]
    for label_a, label_b in suite["comparisons"]:
        result = compare(rows, label_a, label_b, seeds, metric)
        if result is None:
            lines.append(f"| {label_a} | {label_b} | - | - | - | - | - | - | - |")
            continue
        relative = f"{100 * result['relative']:+.1f} %" if result["relative"] is not None else "-"
        ratios = [
            f"{ratio:.2f}x" if ratio is not None else "-"
            for ratio in (result["epoch_ratio"], result["test_time_ratio"])
        ]
        lines.append(
            f"| {label_a} | {label_b} | {result['mean']:+.4f} | {relative} | "
            f"[{result['low']:+.4f}, {result['high']:+.4f}] | {result['users']} | "
            + ", ".join(str(seed) for seed in result["seeds"])
            + f" | {ratios[0]} | {ratios[1]} |"
        )
    return lines


def render_report(suite, rows, chart=None):
    """The suite's Markdown report (``chart``: a PNG file name to show, beside the report)."""
    report = suite["report"]
    metric_keys = [f"{m}@{k}" for k in report["topk"] for m in report["metrics"]]
    lines = [f"# {suite.get('title', suite['name'])}", ""]
    if suite.get("description"):
        lines += [suite["description"].strip(), ""]
    seeds = suite["seeds"]
    split = report["split"]
    what = (
        "test metrics (full ranking)"
        if split == "test"
        else "validation metrics only (full ranking; this report is for choosing settings, so "
        "it shows no test result)"
    )
    lines += [
        f"Dataset `{suite['dataset']}`, seeds {seeds}; {what}, mean ± std "
        "over seeds; the checkpoint is the epoch with the best validation "
        f"`{shared_config(suite).get('valid_metric', 'MRR@10')}`. Epochs: trained, including "
        "the early-stopping patience. s/epoch: the median epoch of each run, averaged; runs "
        "may share the CPU with others, so compare speed with the benchmark scripts instead.",
        "",
        "| model | " + " | ".join(metric_keys) + " | epochs | s/epoch | runs |",
        "|---|" + "---:|" * (len(metric_keys) + 3),
    ]
    for entry in suite["runs"]:
        found = entry_rows(rows, entry)
        cells = [_mean_std([r[split][k] for r in found if k in r[split]]) for k in metric_keys]
        epochs = _mean_std([r["epochs"] for r in found], digits=1)
        seconds = f"{np.mean([r['seconds_per_epoch'] for r in found]):.1f}" if found else "-"
        lines.append(
            f"| {entry['label']} | "
            + " | ".join(cells)
            + f" | {epochs} | {seconds} | {len(found)}/{len(entry['seeds'])} |"
        )
    if chart:
        lines += ["", f"![{split} {report['compare_metric']} by model]({chart})"]
    if suite.get("comparisons"):
        for metric in [report["compare_metric"], *report["also_compare"]]:
            lines += _comparison_lines(suite, rows, seeds, metric)
    if suite.get("findings"):
        # hand-written: what the tables mean, where a goal falls short and why
        lines += ["", "## Findings", "", suite["findings"].strip()]
    lines += [
        "",
        "## Configuration",
        "",
        "Shared by every row:",
        "",
        "```yaml",
        yaml.safe_dump(shared_config(suite), sort_keys=True).strip(),
        "```",
        "",
    ]
    own = [
        (e["label"], e["model"], e["config"])
        for e in suite["runs"]
        if e["config"] or e["label"] != e["model"]
    ]
    if own:
        lines += ["Rows with their own keys:", ""]
        for label, model, config in own:
            lines.append(f"- {label}: model `{model}`, `{json.dumps(config, sort_keys=True)}`")
        lines.append("")
    relative_suite = os.path.relpath(suite["path"], os.getcwd())
    lines += [
        f"Reproduce: `python benchmarks/run_suite.py {relative_suite}` (finished runs are reused; "
        f"rows are in `{os.path.relpath(suite['results_dir'], os.path.dirname(report['output'] or suite['path']))}/`).",
        "",
    ]
    return "\n".join(lines)


def write_chart(suite, rows, path, log=print):
    """A bar chart of ``compare_metric`` on the report's split (mean ± std over seeds) per
    row, as PNG.

    Needs matplotlib (the ``bench`` extra); without it, says so and returns None.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("no chart: matplotlib is missing (pip install 'recbole-llm[bench]')")
        return None
    metric, split = suite["report"]["compare_metric"], suite["report"]["split"]
    labels, means, stds = [], [], []
    for entry in suite["runs"]:
        values = [r[split][metric] for r in entry_rows(rows, entry) if metric in r[split]]
        if values:
            labels.append(f"{entry['label']} ({len(values)}/{len(entry['seeds'])})")
            means.append(float(np.mean(values)))
            stds.append(float(np.std(values, ddof=1)) if len(values) > 1 else 0.0)
    if not labels:
        return None
    figure, axes = plt.subplots(figsize=(7, 0.45 * len(labels) + 1.2))
    positions = np.arange(len(labels))[::-1]  # suite order, top to bottom
    axes.barh(positions, means, xerr=stds, color="#4c72b0", ecolor="#333333", capsize=3)
    axes.set_yticks(positions, labels)
    axes.set_xlabel(f"{split} {metric} (mean ± std over seeds; runs done / planned)")
    axes.set_title(suite.get("title", suite["name"]), fontsize=10)
    figure.tight_layout()
    tmp = f"{path}.{os.getpid()}.tmp"
    figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)
    os.replace(tmp, path)
    return path


def write_report(suite, rows):
    """Write the suite's report to ``report.output`` and its chart beside it (``.png``),
    atomically; returns the report's path and text."""
    path = suite["report"]["output"]
    chart = None
    if path:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        chart = write_chart(suite, rows, os.path.splitext(path)[0] + ".png")
    text = render_report(suite, rows, chart=chart and os.path.basename(chart))
    if path:
        atomic_write(path, lambda f: f.write(text))
    return path, text


def main(argv=None):
    """``python benchmarks/run_suite.py SUITE [--only LABEL ...] [--report-only]``; a user error
    ends it with one line ``error: ...`` and status 2 (``--debug``: the traceback)."""
    return cli_main(_main, argv)


def _main(argv):
    import argparse

    parser = argparse.ArgumentParser(description="Run a benchmark suite and write its report.")
    parser.add_argument("suite", help="suite YAML file")
    parser.add_argument("--only", nargs="*", help="run only these labels or models")
    parser.add_argument("--seeds", nargs="*", type=int, help="run only these seeds")
    parser.add_argument("--report-only", action="store_true", help="write the report, run nothing")
    parser.add_argument(
        "--status",
        action="store_true",
        help="list done, partial and remaining runs; run nothing",
    )
    parser.add_argument(
        "--data_path", default=None, help="data root (default: the suite's, else ./dataset)"
    )
    parser.add_argument("--timeout", type=float, default=None, help="seconds per run")
    parser.add_argument(DEBUG_FLAG, action="store_true", help=DEBUG_HELP)
    args = parser.parse_args(argv)
    suite = load_suite(args.suite)
    if args.status:
        print("\n".join(suite_status(suite, only=args.only, seeds=args.seeds)))
        return
    if args.report_only:
        rows = load_rows(suite)
    else:
        data_path = os.path.abspath(args.data_path) if args.data_path else None
        # `kill` (SIGTERM) ends the runner as Ctrl-C does, so that it stops its worker too
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
        try:
            rows = run_suite(
                suite, data_path=data_path, only=args.only, timeout=args.timeout, seeds=args.seeds
            )
        finally:
            signal.signal(signal.SIGTERM, previous)
    path, text = write_report(suite, rows)
    print(text)
    if path:
        print(f"written to {path}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _worker_main(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else "")
    else:
        main()
