"""``python benchmarks/run_suite.py SUITE`` (or ``recbole-llm bench SUITE``, ``python -m
recbole_llm.bench SUITE``): run a suite, resumably, and write its report.

A suite file says every run's config, and that config is the run's identity (it names its
results row). So ``--key=value`` on the command line sets only keys that do not change what a
run computes (:data:`recbole_llm.keys.VOLATILE_KEYS`: the device, progress bars, where the
caches are), for every run; any other key is refused, in one line saying to put it in the
suite.
"""

import copy
import os
import signal
import sys

from recbole_llm import keys
from recbole_llm.arguments import CommandParser, UsageError, key_value
from recbole_llm.bench.report import write_report
from recbole_llm.bench.runner import run_suite, suite_status
from recbole_llm.bench.suite import load_rows, load_suite
from recbole_llm.errors import cli_main
from recbole_llm.model.lookup import closest_names
from recbole_llm.sweep_params import config_value

DESCRIPTION = "Run a benchmark suite, resumably, and write its report."
EPILOG = (
    "Any other --key=value sets that config key for every run, if it does not change what a "
    "run computes (device, gpu_id, show_progress, semantics_cache_dir, ...); the suite file "
    "holds every other key. Suites: benchmarks/suites/."
)


def add_arguments(parser):
    """The runner's options (``run_suite.py``, ``recbole-llm bench``)."""
    parser.epilog = EPILOG
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


def build_parser():
    """run_suite.py's parser (:func:`add_arguments`)."""
    parser = CommandParser(description=DESCRIPTION)
    add_arguments(parser)
    return parser


def main(argv=None):
    """``python benchmarks/run_suite.py SUITE [--only LABEL ...] [--report-only]``; a user error
    ends it with one line ``error: ...`` and status 2 (``--debug``: the traceback)."""
    parser = build_parser()
    return cli_main(lambda args: run_command(parser, *parser.parse_known_args(args)), argv)


def run_command(parser, args, extra):
    """Run (or only report, or list) the suite the parsed options ``args`` name; ``extra``
    holds ``--key=value`` arguments for every run."""
    overrides = volatile_values(parser, extra)
    suite = load_suite(args.suite)
    if args.status:
        print("\n".join(suite_status(suite, only=args.only, seeds=args.seeds)))
        return
    if args.report_only:
        rows = load_rows(suite)
    else:
        data_path = os.path.abspath(args.data_path) if args.data_path else None
        running = copy.deepcopy(suite)
        for entry in running["runs"]:  # the report shows the suite's own config
            entry["config"].update(overrides)
        # `kill` (SIGTERM) ends the runner as Ctrl-C does, so that it stops its worker too
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
        try:
            rows = run_suite(
                running, data_path=data_path, only=args.only, timeout=args.timeout, seeds=args.seeds
            )
        finally:
            signal.signal(signal.SIGTERM, previous)
    path, text = write_report(suite, rows)
    print(text)
    if path:
        print(f"written to {path}")


def volatile_values(parser, extra):
    """``{key: value}`` of ``--key=value`` arguments whose keys leave every run's identity
    unchanged; another key is a :class:`UsageError`."""
    values = {}
    for arg in extra:
        key, text = key_value(parser, arg)
        if key not in keys.VOLATILE_KEYS:
            known = key in keys.KEYS or key in keys.recbole_keys()
            close = [] if known else closest_names(key, keys.VOLATILE_KEYS, n=1)
            hint = f"unknown key; did you mean --{close[0]}? Else: " if close else ""
            raise UsageError(
                f"--{key}: {hint}a suite's runs take from the command line only keys that do "
                "not change what a run computes (device, gpu_id, show_progress, "
                "semantics_cache_dir, ...); set it in the suite file's config, where it "
                "becomes part of each run's identity."
            )
        values[key] = config_value(text)
    return values
