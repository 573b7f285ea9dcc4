"""Every model RecBole 1.2.1 ships, through our entry point: does it run here, how long is one
training epoch, and what does it need if it does not run. Writes ``results/recbole-compat.md``.

    OMP_NUM_THREADS=1 python benchmarks/recbole_compat.py            # every model, ml-100k
    python benchmarks/recbole_compat.py --models LightGCN NGCF      # some, report not written
    python benchmarks/recbole_compat.py --report-only               # the report from the rows

The models are the names RecBole's model sub-packages import
(:func:`recbole_llm.model.lookup.recbole_models`), so a model added to RecBole is not missed.
Each runs in its own process (RecBole's settings are process-wide), through
``recbole_llm.quick_start.train_and_test`` (what ``run_recbole_llm`` runs): RecBole's defaults
for the model, one epoch, :data:`RUN_SETTINGS` (what a model needs beyond its own YAML; the
test of every model, ``tests/test_recbole_models.py``, uses the same), ``--max_runtime`` seconds
at most. It runs on ml-100k (RecBole's copy, with its knowledge graph, prepared into the data
root) unless the dataset lacks files the model reads (pre-trained KG vectors), or ml-100k cannot
be prepared: then on the test dataset, built here by ``tests/synthetic.py``; the report says
which for each model. A model whose optional package is missing is not run: the report gives
our entry point's one-line message. Rows are kept in ``--rows`` (one JSON line per model) so an
interrupted run resumes; ``--fresh`` starts over.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPORT = os.path.join(REPO, "results", "recbole-compat.md")
TEST_DATASET = "synth-kg"

#: The pre-trained entity and relation vectors KSR (both) and GRU4RecKG (entities) read, as
#: RecBole's atomic files ``.ent`` / ``.rel`` (no shipped dataset has them).
KG_VECTOR_FILES = {
    "additional_feat_suffix": ["ent", "rel"],
    "alias_of_entity_id": ["ent_id"],
    "alias_of_relation_id": ["rel_id"],
    "preload_weight": {"ent_id": "ent_emb", "rel_id": "rel_emb"},
}

#: What a RecBole 1.2.1 model needs beyond its own YAML to train and be evaluated, by
#: sub-package, then by model (RecBole's own tests/model/test_model_auto.py sets the same).
RUN_SETTINGS = {
    # CTR models are trained and evaluated on labels: a rating of 4 or more is a positive
    "context_aware_recommender": {"threshold": {"rating": 4}},
    "exlib_recommender": {"threshold": {"rating": 4}},
    # RecBole 1.2.1 ships no YAML for the two boosting models
    "XGBoost": {
        "xgb_params": {
            "booster": "gbtree",
            "objective": "binary:logistic",
            "eval_metric": ["auc", "logloss"],
        },
        "xgb_num_boost_round": 1,
    },
    "LightGBM": {
        "lgb_params": {"boosting": "gbdt", "objective": "binary", "metric": ["auc"]},
        "lgb_num_boost_round": 1,
    },
    # its default of 1000 prototypes exceeds ml-100k's 943 users (faiss refuses k > n)
    "NCL": {"num_clusters": 100},
    # its default train_stage pre-trains for 500 epochs: one, like every other model
    "S3Rec": {"pretrain_epochs": 1},
    # sequential_embedding_model.yaml replaces RecBole's sequential defaults for these two
    "KSR": dict(
        KG_VECTOR_FILES,
        load_col={
            "inter": ["user_id", "item_id", "rating", "timestamp"],
            "kg": ["head_id", "relation_id", "tail_id"],
            "link": ["item_id", "entity_id"],
            "ent": ["ent_id", "ent_emb"],
            "rel": ["rel_id", "rel_emb"],
        },
        eval_args={"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full"},
    ),
}
RUN_SETTINGS["GRU4RecKG"] = RUN_SETTINGS["KSR"]


def run_settings(model, family):
    """The settings of :data:`RUN_SETTINGS` for ``model`` of RecBole sub-package ``family``."""
    return {**RUN_SETTINGS.get(family, {}), **RUN_SETTINGS.get(model, {})}


def needed_files(settings):
    """Atomic-file suffixes beyond RecBole's usual ones that a model's settings read."""
    return list(settings.get("additional_feat_suffix", []))


#: settings of every run here (``--max_seq_length`` is added for sequential models)
COMMON = {"epochs": 1, "show_progress": False, "state": "WARNING", "seed": 2020}


def run_one(model, dataset, data_path, workdir, max_seq_length):
    """Train ``model`` one epoch on ``dataset`` in this process and evaluate it; a row."""
    import numpy as np
    from recbole.utils import init_logger, init_seed

    from recbole_llm.config import Config
    from recbole_llm.model.lookup import recbole_models
    from recbole_llm.quick_start import make_output_dirs, train_and_test

    family = recbole_models()[model]
    config_dict = dict(COMMON, data_path=data_path, checkpoint_dir=os.path.join(workdir, "saved"))
    if family == "sequential_recommender":
        config_dict["MAX_ITEM_LIST_LENGTH"] = max_seq_length
    config_dict.update(run_settings(model, family))
    start = time.perf_counter()
    config = Config(model=model, dataset=dataset, config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    make_output_dirs(config)
    init_logger(config)
    result, trainer, _ = train_and_test(config, saved=False, verbose=False)
    epochs = getattr(trainer, "epoch_seconds", None)
    test = {k: float(v) for k, v in result["test_result"].items()}
    return {
        "status": "runs" if all(np.isfinite(list(test.values()))) else "not finite",
        "epoch_seconds": round(epochs[0], 2) if epochs else None,
        "wall_seconds": round(time.perf_counter() - start, 1),
        "test": test,
    }


def child(args):
    """``--one MODEL``: one row as a ``ROW {json}`` line on stdout."""
    from recbole_llm.errors import UserError, error_message
    from recbole_llm.model.lookup import MissingPackageError, check_optional_package

    try:
        check_optional_package(args.one)
        row = run_one(args.one, args.dataset, args.data_path, os.getcwd(), args.max_seq_length)
    except MissingPackageError as err:
        row = {"status": "needs a package", "needs": error_message(err)}
    except UserError as err:
        row = {"status": "refused", "needs": error_message(err)}
    except Exception as err:  # recorded in the report: what breaks, and where
        import traceback

        where = traceback.extract_tb(err.__traceback__)[-1]
        first = (str(err).strip().splitlines() or [""])[0][:300]
        row = {
            "status": "fails",
            "needs": f"{type(err).__name__}: {first} ({os.path.basename(where.filename)}:"
            f"{where.lineno})",
        }
    print("ROW " + json.dumps(row), flush=True)


def prepare_data(root):
    """``(ml-100k or None, root)``: ml-100k prepared into ``root`` and the test dataset
    written beside it."""
    sys.path.insert(0, os.path.join(REPO, "tests"))
    from synthetic import write_synthetic_knowledge

    from recbole_llm.data.prepare import prepare_dataset

    write_synthetic_knowledge(root, TEST_DATASET)
    try:
        prepare_dataset("ml-100k", root)
    except Exception as err:  # the report then says every model ran on the test dataset
        print(f"ml-100k not available ({err}); every model runs on the test dataset")
        return None, root
    return "ml-100k", root


def dataset_for(model, family, main, root):
    """The dataset a model runs on: ``main`` unless it lacks files the model reads."""
    if main is None:
        return TEST_DATASET
    missing = [
        suffix
        for suffix in needed_files(run_settings(model, family))
        if not os.path.isfile(os.path.join(root, main, f"{main}.{suffix}"))
    ]
    return TEST_DATASET if missing else main


def measure(args, models, families, rows):
    root = os.path.abspath(args.data_root)
    main, root = prepare_data(root)
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for model in models:
        if model in rows:
            continue
        dataset = dataset_for(model, families[model], main, root)
        command = [sys.executable, os.path.abspath(__file__), "--one", model]
        command += ["--dataset", dataset, "--data_path", root]
        command += ["--max_seq_length", str(args.max_seq_length)]
        with tempfile.TemporaryDirectory() as workdir:
            start = time.perf_counter()
            try:
                proc = subprocess.run(
                    command,
                    cwd=workdir,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=args.max_runtime,
                )
                lines = [line for line in proc.stdout.splitlines() if line.startswith("ROW ")]
                if lines:
                    row = json.loads(lines[-1][4:])
                else:
                    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]
                    row = {"status": "fails", "needs": f"process ended: {tail}"}
            except subprocess.TimeoutExpired:
                row = {"status": "too slow", "needs": f"no result in {args.max_runtime} s"}
        row.update(model=model, family=families[model], dataset=dataset)
        row["process_seconds"] = round(time.perf_counter() - start, 1)
        rows[model] = row
        with open(args.rows, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        print(
            f"{model:12s} {dataset:8s} {row['status']:15s} {row.get('epoch_seconds')}", flush=True
        )


def read_rows(path):
    rows = {}
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    rows[row["model"]] = row
    return rows


FAMILY_NAMES = {
    "general_recommender": "general",
    "context_aware_recommender": "context-aware",
    "sequential_recommender": "sequential",
    "knowledge_aware_recommender": "knowledge-aware",
    "exlib_recommender": "boosting (exlib)",
}


def _main_metric(test):
    for key in ("ndcg@10", "auc"):
        if key in test:
            return f"{key} {test[key]:.3f}"
    return ""


def write_report(rows, models, args):
    import recbole
    import scipy
    import torch

    runs = [m for m in models if rows[m]["status"] == "runs"]
    datasets = sorted({rows[m]["dataset"] for m in models})
    lines = [
        "# Every RecBole model through recbole_llm",
        "",
        f"Generated by `OMP_NUM_THREADS=1 python benchmarks/recbole_compat.py` "
        f"({time.strftime('%Y-%m-%d')}; RecBole {recbole.__version__}, torch "
        f"{torch.__version__}, scipy {scipy.__version__}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPU cores shared with other jobs, one thread). Do not edit by hand.",
        "",
        f"**{len(runs)} of {len(models)}** models RecBole ships run here through our entry "
        f"point (`train_and_test`, what `run_recbole_llm` runs). Each model: RecBole's defaults, "
        f"one training epoch, then the test evaluation (full ranking for top-k models, labelled "
        f"for CTR models), in a process of its own; sequential models with "
        f"`MAX_ITEM_LIST_LENGTH: {args.max_seq_length}` (RecBole's 50 would take about 2.5x "
        "longer), and what a model needs beyond its YAML (`RUN_SETTINGS` in the script: CTR "
        "labels from `rating >= 4`, the boosting parameters, NCL's clusters, one S3Rec "
        "pre-training epoch). Pop is ours (`recbole_llm/model/pop.py`, which our registry "
        "finds first: [compat.md](../docs/compat.md)).",
        "",
        "Datasets: `ml-100k` is RecBole's copy (with its knowledge graph), prepared into the "
        f"data root; `{TEST_DATASET}` is the test dataset of `tests/synthetic.py` (60 users, 48 "
        "items, a knowledge graph and random 64-d entity vectors), used where ml-100k lacks "
        "files a model reads. Epoch s: seconds of the one training epoch (for LightGBM and "
        "XGBoost, which have no epochs, empty); run s: the whole run (config, dataset, training, "
        "evaluation) in its process.",
        "",
        f"Datasets used: {', '.join(f'`{d}`' for d in datasets)}. "
        "The test `tests/test_recbole_models.py` trains every model on the test dataset "
        "(`RECBOLE_LLM_ALL_MODELS=1`; by default a subset).",
        "",
        "| model | family | runs here | dataset | epoch s | run s | test | what it needs |",
        "|---|---|---|---|---:|---:|---|---|",
    ]
    for model in models:
        row = rows[model]
        epoch = row.get("epoch_seconds")
        cells = [
            f"`{model}`",
            FAMILY_NAMES.get(row["family"], row["family"]),
            "yes" if row["status"] == "runs" else f"no ({row['status']})",
            f"`{row['dataset']}`",
            "" if epoch is None else f"{epoch:.1f}",
            "" if row.get("wall_seconds") is None else f"{row['wall_seconds']:.0f}",
            _main_metric(row.get("test", {})),
            row.get("needs", "").replace("|", "\\|"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    with open(REPORT, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {REPORT}: {len(runs)} of {len(models)} run")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", help="only these (the report is not written)")
    parser.add_argument("--data_root", default=os.path.join(REPO, "dataset"))
    parser.add_argument("--rows", default=os.path.join(REPO, "saved", "recbole-compat.jsonl"))
    parser.add_argument("--fresh", action="store_true", help="forget the rows of earlier runs")
    parser.add_argument("--report-only", action="store_true", help="write the report, run nothing")
    parser.add_argument("--max_runtime", type=int, default=900, help="seconds per model")
    parser.add_argument("--max_seq_length", type=int, default=20)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    parser.add_argument("--data_path", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        sys.argv = sys.argv[:1]  # RecBole's Config reads sys.argv
        return child(args)

    from recbole_llm.model.lookup import recbole_models

    families = recbole_models()
    models = args.models or list(families)
    os.makedirs(os.path.dirname(os.path.abspath(args.rows)), exist_ok=True)
    if args.fresh and os.path.exists(args.rows):
        os.remove(args.rows)
    rows = read_rows(args.rows)
    if not args.report_only:
        measure(args, models, families, rows)
    if args.models is None:
        missing = [m for m in models if m not in rows]
        if missing:
            raise SystemExit(f"no rows for {', '.join(missing)}: run without --report-only")
        write_report(rows, models, args)


if __name__ == "__main__":
    main()
