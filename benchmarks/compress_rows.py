"""Compress plain-JSON results rows into the gzipped rows the runner now writes.

    python benchmarks/compress_rows.py               # every results/runs/*.json
    python benchmarks/compress_rows.py --check       # exit 1 if a plain row is left

A worktree at a commit older than compressed rows writes ``<name>.json``; after copying its rows
into ``results/runs/``, this turns each into ``<name>.json.gz`` holding the same row (read back
and compared before the plain file is removed). The gzip bytes carry no name or time stamp, so
compressing one row twice gives the same file, and reports rebuilt from the compressed rows are
byte-identical to those from the plain ones. A plain row whose compressed twin already exists
is kept only if the two differ (then it says so and stops: which is right is for you to decide).
"""

import argparse
import glob
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = os.path.join(REPO, "results", "runs")


def compress(runs=RUNS, log=print):
    """Compress every plain row under ``runs``; returns how many it compressed."""
    from recbole_llm.bench.suite import read_row, write_row
    from recbole_llm.errors import UserError

    done = 0
    for plain in sorted(glob.glob(os.path.join(runs, "*.json"))):
        row = read_row(plain)
        packed = plain + ".gz"
        if os.path.exists(packed):
            if read_row(packed) != row:
                raise UserError(
                    f"{packed} and {plain} hold different rows: delete the wrong one, then rerun"
                )
        else:
            write_row(packed, row)
            if read_row(packed) != row:  # not expected; never lose the plain row if it happens
                raise UserError(f"{packed}: the compressed row does not read back as {plain}")
        os.remove(plain)
        done += 1
    log(f"compressed {done} row(s) in {runs}")
    return done


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default=RUNS, help="the rows' folder (default: results/runs)")
    parser.add_argument("--check", action="store_true", help="exit 1 if a plain row is left")
    args = parser.parse_args(argv)
    if args.check:
        plain = sorted(glob.glob(os.path.join(args.runs, "*.json")))
        for path in plain:
            print(f"plain row: {path} (run benchmarks/compress_rows.py)")
        return 1 if plain else 0
    from recbole_llm.errors import UserError, error_message

    try:
        compress(args.runs)
    except UserError as err:
        print(f"error: {error_message(err)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
