"""What a benchmark worker process does: run one spec and write its results row.

    python -m recbole_llm.bench.worker SPEC_JSON ROW_JSON [DATA_PATH]

The runner (:mod:`recbole_llm.bench.runner`) starts one per run, so that every run starts
from a fresh process, and stops it with itself.
"""

import json
import os
import platform
import sys
import time

import numpy as np
import torch
from recbole.utils import init_logger, init_seed

from recbole_llm.bench.runner import state_path
from recbole_llm.bench.suite import SCHEMA
from recbole_llm.config import Config
from recbole_llm.quick_start import make_output_dirs, train_and_test


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
    config_dict = dict(spec["config"])
    if data_path:
        config_dict["data_path"] = data_path
    workdir = workdir or os.getcwd()
    config_dict.setdefault("checkpoint_dir", os.path.join(workdir, "saved"))
    config_dict.setdefault("training_state_file", state_path(spec))
    config = Config(model=spec["model"], dataset=spec["dataset"], config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    make_output_dirs(config)
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
            # test_every_epoch (LLM4SBR's paper mode): each validated epoch's test metrics
            **(
                {"epoch_test": result["epoch_test_results"]}
                if "epoch_test_results" in result
                else {}
            ),
            "wall_seconds": wall,
            "versions": {"python": platform.python_version(), "torch": torch.__version__},
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
    )


def worker_main(spec_file, out_file, data_path):
    with open(spec_file, encoding="utf-8") as f:
        spec = json.load(f)
    row = execute(spec, data_path=data_path or None)
    tmp = out_file + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(row, f)
    os.replace(tmp, out_file)


if __name__ == "__main__":
    worker_main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "")
