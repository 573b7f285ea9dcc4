"""``python benchmarks/run_suite.py SUITE`` (or ``python -m recbole_llm.bench SUITE``): run a
suite, resumably, and write its report."""

import argparse
import os
import signal
import sys

from recbole_llm.bench.report import write_report
from recbole_llm.bench.runner import run_suite, suite_status
from recbole_llm.bench.suite import load_rows, load_suite
from recbole_llm.errors import DEBUG_FLAG, DEBUG_HELP, cli_main


def main(argv=None):
    """``python benchmarks/run_suite.py SUITE [--only LABEL ...] [--report-only]``; a user error
    ends it with one line ``error: ...`` and status 2 (``--debug``: the traceback)."""
    return cli_main(_main, argv)


def _main(argv):
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
