"""Write a changed default's old value into the committed rows that ran with it.

    python benchmarks/pin_row_default.py LLM4SBR fusion residual            # rewrite the rows
    python benchmarks/pin_row_default.py LLM4SBR fusion residual --check    # exit 1 if any left

A row stores the config its suite gave, not the model's defaults; its name is the hash of the
resolved config (defaults included). When a model default changes, a row that relied on the
old default no longer resolves to its own hash, so it drops out of the reports. This adds
``key: value`` to the stored config of each row of ``model`` that lacks the key, and only where
the hash the current code gives the config with it is the row's own: that proves the run used
that value. Nothing else in the row changes; a row whose hash does not match is left alone and
named. The suites that made those rows must pin the same value on those entries.
"""

import argparse
import glob
import os
import sys

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = os.path.join(REPO, "results", "runs")


def own_hash(row, config):
    """The hash the current code gives ``row``'s run with ``config`` as its stored config."""
    from recbole_llm.bench.suite import run_spec

    suite = {"config_files": [], "config": config, "dataset": row["dataset"]}
    entry = {"model": row["model"], "config": {}, "label": row["model"]}
    return run_spec(suite, entry, row["seed"])["hash"]


def pin(model, key, value, runs=RUNS, write=True, log=print):
    """``(pinned, left)``: the rows given ``key: value`` (or that would be, without ``write``)
    and those of ``model`` lacking the key whose hash it does not restore."""
    from recbole_llm.bench.suite import ROW_SUFFIX, read_row, write_row

    pinned, left = [], []
    for path in sorted(glob.glob(os.path.join(runs, f"*{ROW_SUFFIX}"))):
        row = read_row(path)
        if row["model"] != model or key in row["config"]:
            continue
        if own_hash(row, row["config"]) == row["hash"]:
            continue  # still resolves to itself: nothing to do
        config = {**row["config"], key: value}
        if own_hash(row, config) != row["hash"]:
            left.append(os.path.basename(path))
            continue
        if write:
            write_row(path, {**row, "config": config})
            if read_row(path)["config"] != config:  # not expected
                raise RuntimeError(f"{path}: the rewritten row does not read back")
        pinned.append(os.path.basename(path))
    for name in left:
        log(f"left alone (its hash is not restored by {key}: {value}): {name}")
    log(f"{'pinned' if write else 'to pin'}: {len(pinned)} row(s) of {model} with {key}: {value}")
    return pinned, left


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("key")
    parser.add_argument("value", help="the old default, as YAML (residual, 0.1, true, ...)")
    parser.add_argument("--runs", default=RUNS, help="the rows' folder (default: results/runs)")
    parser.add_argument("--check", action="store_true", help="exit 1 if a row needs pinning")
    args = parser.parse_args(argv)
    value = yaml.safe_load(args.value)
    pinned, _ = pin(args.model, args.key, value, args.runs, write=not args.check)
    return 1 if args.check and pinned else 0


if __name__ == "__main__":
    sys.exit(main())
