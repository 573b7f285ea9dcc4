"""Command line of run_recbole_llm.py (also installed as ``recbole-llm``).

RecBole's run_recbole.py flags, plus every ``--key=value`` passed through to the config exactly
as RecBole does (its Config reads them from ``sys.argv``).
"""

import argparse


def build_parser():
    """The argument parser: RecBole's flags; unknown ``--key=value`` flags are left to Config."""
    parser = argparse.ArgumentParser(
        description="Train and evaluate a recbole_llm or RecBole model.",
        epilog="Any other --key=value sets that config key, as with RecBole's run_recbole.py.",
    )
    parser.add_argument("--model", "-m", type=str, default="SASRec", help="model class name")
    parser.add_argument(
        "--dataset", "-d", type=str, default=None, help="dataset (default: the model's, or ml-100k)"
    )
    parser.add_argument("--config_files", type=str, default=None, help="space-separated YAMLs")
    parser.add_argument("--nproc", type=int, default=1, help="processes on this machine")
    parser.add_argument("--ip", type=str, default="localhost", help="address of rank 0")
    parser.add_argument("--port", type=str, default="5678", help="port of rank 0")
    parser.add_argument("--world_size", type=int, default=-1, help="processes on all machines")
    parser.add_argument("--group_offset", type=int, default=0, help="first global rank here")
    return parser


def main(argv=None):
    """Parse the command line and run; returns the result dict (None on non-zero ranks)."""
    from recbole_llm.quick_start import run

    args, _ = build_parser().parse_known_args(argv)
    config_file_list = args.config_files.strip().split(" ") if args.config_files else None
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
