"""Benchmark suites: named suites of (model, dataset, seed, shared config) runs.

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
    python -m recbole_llm.bench benchmarks/suites/multi_interest_ml-100k.yaml   # the same

Modules: :mod:`~recbole_llm.bench.suite` (the suite schema and each run's identity),
:mod:`~recbole_llm.bench.runner` (runs each spec in a worker process, resumably; status),
:mod:`~recbole_llm.bench.worker` (what a worker process does), :mod:`~recbole_llm.bench.report`
(statistics, Markdown and charts) and :mod:`~recbole_llm.bench.cli` (``python -m
recbole_llm.bench``). Their public names are also reachable here, imported on first use (so
that ``python -m recbole_llm.bench.worker`` does not import its own module twice).
"""

_LAZY = {
    **dict.fromkeys(
        [
            "SCHEMA",
            "ROW_SUFFIX",
            "SuiteError",
            "load_suite",
            "shared_config",
            "NEUTRAL_VALUES",
            "resolved_config",
            "run_spec",
            "row_path",
            "suite_specs",
            "state_path",
            "worker_log_path",
            "find_row",
            "read_row",
            "row_bytes",
            "load_rows",
            "write_row",
            "entry_rows",
        ],
        "recbole_llm.bench.suite",
    ),
    **dict.fromkeys(["run_suite", "suite_status"], "recbole_llm.bench.runner"),
    **dict.fromkeys(["execute", "evaluation_keys"], "recbole_llm.bench.worker"),
    **dict.fromkeys(
        ["paired_bootstrap", "compare", "mean_std", "render_report", "write_chart", "write_report"],
        "recbole_llm.bench.report",
    ),
    "main": "recbole_llm.bench.cli",
}

__all__ = list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'recbole_llm.bench' has no attribute {name!r}")
