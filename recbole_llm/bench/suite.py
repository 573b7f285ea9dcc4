"""Suite files and run identity: what a suite asks for, and what identifies each run.

A run's identity is a hash of its *resolved* config (every YAML layer and default included,
without :data:`recbole_llm.keys.VOLATILE_KEYS` and keys at their :data:`NEUTRAL_VALUES`) and the
package version; it names the run's results row, so rows are shared by suites that share a run
and kept across reruns. See :mod:`recbole_llm.bench` for the suite format.
"""

import gzip
import hashlib
import io
import json
import os
import sys

import yaml

from recbole_llm import __version__, keys
from recbole_llm.config import Config
from recbole_llm.errors import UserError, yaml_problem
from recbole_llm.paths import runs_dir
from recbole_llm.utils import atomic_write

SCHEMA = 1

#: a results row's file name ends so; rows of older commits end in ``.json``
ROW_SUFFIX = ".json.gz"


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
    # LLM4SBR's paper mode: each metric's best test value over epochs (needs test_every_epoch)
    report.setdefault("paper_mode", False)
    if report["paper_mode"] not in (True, False) or (
        report["paper_mode"] and report["split"] != "test"
    ):
        raise SuiteError(
            f"Suite '{path}': report.paper_mode must be True or False, and needs split: test "
            f"(it reports test values), got {report['paper_mode']!r} with split {report['split']}"
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


#: Keys added after runs were committed, at the value that computes exactly what those runs
#: computed, and keys only one model reads: both left out of a run's identity, so the
#: committed rows stay current (declared in :data:`recbole_llm.keys.KEYS`).
NEUTRAL_VALUES = keys.NEUTRAL_VALUES
ONLY_FOR = keys.ONLY_FOR
_NO_VALUE = object()

_resolved = {}


def resolved_config(model, dataset, config_dict):
    """The full config RecBole will run with (all YAML layers merged), without volatile keys."""
    key = json.dumps([model, dataset, config_dict], sort_keys=True, default=str)
    if key not in _resolved:
        _resolved[key] = _resolve(model, dataset, config_dict)
    return _resolved[key]


def _resolve(model, dataset, config_dict):
    argv, sys.argv = sys.argv, sys.argv[:1]  # Config reads the command line
    try:
        config = Config(model=model, dataset=dataset, config_dict=dict(config_dict))
    finally:
        sys.argv = argv
    return {
        k: v
        for k, v in config.final_config_dict.items()
        if k not in keys.VOLATILE_KEYS
        and NEUTRAL_VALUES.get(k, _NO_VALUE) != v
        and ONLY_FOR.get(k, model) == model
    }


def run_spec(suite, entry, seed):
    """Everything that defines one run. Its identity is a hash of the *resolved* config (every
    default included, so a changed model default is a new run) and the package version."""
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
    suite's label, so suites that share a run (a backbone in two suites) share its row. They are
    gzipped JSON (``zcat`` shows one; most of a row is its per-user test metrics, one number per
    user, which compress about 17x); a plain ``.json`` row beside it, as a worktree of an older
    commit writes, is read the same (:func:`find_row`) until ``benchmarks/compress_rows.py``
    compresses it."""
    name = f"{spec['model']}-{spec['dataset']}-seed{spec['seed']}-{spec['hash']}{ROW_SUFFIX}"
    return os.path.join(suite["results_dir"], name)


def find_row(suite, spec):
    """The path of a run's row on disk (compressed, else plain ``.json``), or None."""
    path = row_path(suite, spec)
    legacy = path[: -len(ROW_SUFFIX)] + ".json"
    return next((p for p in (path, legacy) if os.path.exists(p)), None)


def read_row(path):
    """A results row, from a gzipped (``.json.gz``) or plain JSON file."""
    if path.endswith(".gz"):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return json.load(f)
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def row_bytes(row):
    """A row's file content: its JSON text (sorted keys, indent 1), gzipped with no name and no
    time stamp, so the same row always gives the same bytes."""
    text = json.dumps(row, indent=1, sort_keys=True).encode("utf-8")
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", filename="", mtime=0, compresslevel=9) as f:
        f.write(text)
    return buffer.getvalue()


def state_path(spec):
    """Where a run keeps its training state between interruptions (deleted once its row is
    written): ``<cache root>/runs/``, outside the repository."""
    name = f"{spec['model']}-{spec['dataset']}-seed{spec['seed']}-{spec['hash']}.state.pth"
    return os.path.join(runs_dir(), name)


def worker_log_path(spec):
    """Where a run's worker writes its output (RecBole's log lines), beside its state."""
    return state_path(spec)[: -len(".state.pth")] + ".log"


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


def load_rows(suite):
    """Rows of the suite's current specs that exist on disk, keyed by (label, seed)."""
    rows = {}
    for entry in suite["runs"]:
        for seed in entry["seeds"]:
            path = find_row(suite, run_spec(suite, entry, seed))
            if path is not None:
                rows[(entry["label"], seed)] = read_row(path)
    return rows


def write_row(path, row):
    """Write a results row atomically, gzipped (:func:`row_bytes`)."""
    atomic_write(path, lambda f: f.write(row_bytes(row)), binary=True)


def entry_rows(rows, entry):
    """The rows a suite entry has so far, in the order of its seeds."""
    return [rows[(entry["label"], s)] for s in entry["seeds"] if (entry["label"], s) in rows]
