"""The suite runner: each (run, seed) without a results row runs in its own worker process
(:mod:`recbole_llm.bench.worker`), resumably, and :func:`suite_status` says where each stands.

However the runner stops (a timeout, Ctrl-C, ``kill``), its worker stops with it; the worker's
training state keeps every validated epoch, so a rerun resumes there.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

from recbole_llm.bench.suite import (
    find_row,
    load_rows,
    read_row,
    row_path,
    shared_config,
    state_path,
    suite_specs,
    worker_log_path,
    write_row,
)
from recbole_llm.compat import CheckpointError, checksum_path, load_checkpoint
from recbole_llm.errors import error_message
from recbole_llm.paths import PACKAGE_DIR
from recbole_llm.training_state import lock_path, state_holder


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


def run_suite(suite, data_path=None, only=None, timeout=None, log=print, seeds=None):
    """Run every (run, seed) of a suite that has no results row yet; returns the rows."""
    specs = suite_specs(suite, only, seeds)
    todo = [s for s in specs if find_row(suite, s) is None]
    log(f"suite {suite['name']}: {len(specs)} runs, {len(specs) - len(todo)} already done")
    if data_path is None and "data_path" not in shared_config(suite):
        data_path = os.path.abspath("dataset")  # RecBole's default root, from where we run
    repo = os.path.dirname(PACKAGE_DIR)
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
            command = [sys.executable, "-m", "recbole_llm.bench.worker"]
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


def suite_status(suite, only=None, seeds=None):
    """One line per (run, seed): done (with its result and time), partial (the epochs and best
    validation score its saved training state holds; training now, or interrupted), started
    (training, nothing validated yet) or to do."""
    metric, split = suite["report"]["compare_metric"], suite["report"]["split"]
    lines = []
    for spec in suite_specs(suite, only, seeds):
        name = f"{spec['label']} seed {spec['seed']} ({spec['hash']})"
        holder = state_holder(state_path(spec))  # the pid training this run now, if any
        found = find_row(suite, spec)
        if found is not None:
            row = read_row(found)
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
