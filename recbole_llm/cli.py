"""Command line of run_recbole_llm.py (also installed as ``recbole-llm``).

RecBole's run_recbole.py flags, plus every ``--key=value`` passed through to the config exactly
as RecBole does (its Config reads them from ``sys.argv``). A user error (an unknown model, a
config file that is not YAML, ...) ends it with one line ``error: ...`` on stderr and status 2;
``--debug`` shows the traceback instead. A generation shard that has done its share, and
``--llm_backend=batch`` once it has written its batch file, print one line saying what to do
next and exit 0.
"""

import argparse
import sys

from recbole_llm.errors import DEBUG_FLAG, DEBUG_HELP, cli_main
from recbole_llm.quick_start import run, run_semantics
from recbole_llm.semantics.batch import BatchExported
from recbole_llm.semantics.generator import ShardDone


def build_parser():
    """The argument parser: RecBole's flags; unknown ``--key=value`` flags are left to Config."""
    parser = argparse.ArgumentParser(
        description="Train and evaluate a recbole_llm or RecBole model.",
        epilog="Any other --key=value sets that config key, as with RecBole's run_recbole.py.",
    )
    parser.add_argument("--model", "-m", type=str, default="EIMF", help="model class name")
    parser.add_argument(
        "--dataset", "-d", type=str, default=None, help="dataset (default: the model's, or ml-100k)"
    )
    parser.add_argument("--config_files", type=str, default=None, help="space-separated YAMLs")
    parser.add_argument("--nproc", type=int, default=1, help="processes on this machine")
    parser.add_argument("--ip", type=str, default="localhost", help="address of rank 0")
    parser.add_argument("--port", type=str, default="5678", help="port of rank 0")
    parser.add_argument("--world_size", type=int, default=-1, help="processes on all machines")
    parser.add_argument("--group_offset", type=int, default=0, help="first global rank here")
    parser.add_argument(
        "--semantics",
        action="store_true",
        help="only run the LLM-semantics step for this model and dataset (EIMF, LLM4SBR)",
    )
    parser.add_argument(
        "--refresh", action="store_true", help="with --semantics: regenerate cached LLM replies"
    )
    parser.add_argument(DEBUG_FLAG, action="store_true", help=DEBUG_HELP)
    return parser


OUR_FLAGS = ("--semantics", "--refresh", DEBUG_FLAG)


def main(argv=None):
    """Parse the command line and run; returns the result dict, or the semantic manifest's path
    with ``--semantics`` (None on non-zero ranks, and when an ``llm_shard`` has done its
    share, or ``llm_backend: batch`` has written its batch file). A user error prints
    ``error: <message>`` and exits with status 2."""
    return cli_main(_run, argv)


def _run(argv):
    try:
        return _main(argv)
    except (ShardDone, BatchExported) as done:
        # one of several generation processes finished its share, or the prompts were written
        # to a batch file to run elsewhere: not a failure
        print(done)
        return None


def _main(argv):
    args, _ = build_parser().parse_known_args(argv)
    # RecBole's Config reads sys.argv itself; our plain flags are not config keys
    sys.argv = [a for a in sys.argv if a not in OUR_FLAGS]
    config_file_list = args.config_files.strip().split(" ") if args.config_files else None
    if args.semantics:
        return run_semantics(
            args.model, args.dataset, config_file_list=config_file_list, refresh=args.refresh
        )
    return run(
        args.model,
        args.dataset,
        config_file_list=config_file_list,
        nproc=args.nproc,
        world_size=args.world_size,
        ip=args.ip,
        port=args.port,
        group_offset=args.group_offset,
    )
