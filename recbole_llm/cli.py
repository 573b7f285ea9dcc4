"""``recbole-llm``, the one command line (``run_recbole_llm.py`` is the same), with subcommands:

    recbole-llm [train] --model=EIMF --dataset=ml-100k --epochs=20   # train is the default
    recbole-llm semantics --model=LLM4SBR --dataset=ml-100k-session
    recbole-llm sweep --model=EIMF --params_file=sweeps/eimf.yaml --epochs=20
    recbole-llm bench benchmarks/suites/multi_interest_ml-100k.yaml --only REMI
    recbole-llm prepare ml-1m --data_path=dataset
    recbole-llm assets

``train`` and ``semantics`` take RecBole's run_recbole.py flags and pass every other
``--key=value`` to the config exactly as RecBole does (its Config reads them from
``sys.argv``); ``sweep`` fixes them for every trial; ``bench`` passes those that leave a run's
identity unchanged. Every command parses in one style (:mod:`recbole_llm.arguments`): a user
error (an unknown command, option, model, a config file that is not YAML, ...) ends it with one
line ``error: ...`` on stderr and status 2; ``--debug`` shows the traceback instead. A
generation shard that has done its share, and ``--llm_backend=batch`` once it has written its
batch file, print one line saying what to do next and exit 0.
"""

import argparse
import os
import sys

from recbole_llm import assets, hyper
from recbole_llm.arguments import CommandParser, UsageError, key_value
from recbole_llm.bench import cli as bench_cli
from recbole_llm.data import prepare
from recbole_llm.errors import DEBUG_FLAG, cli_main
from recbole_llm.model.lookup import closest_names
from recbole_llm.quick_start import run, run_semantics
from recbole_llm.semantics.batch import BatchExported
from recbole_llm.semantics.generator import ShardDone

CONFIG_EPILOG = "Any other --key=value sets that config key, as with RecBole's run_recbole.py."


def add_train_arguments(parser, semantics_only=False):
    """``train``'s options: RecBole's run_recbole.py flags and ours (``semantics``: the ones
    the semantic step reads); unknown ``--key=value`` flags are left to Config."""
    parser.epilog = CONFIG_EPILOG
    parser.add_argument("--model", "-m", type=str, default="EIMF", help="model class name")
    parser.add_argument(
        "--dataset", "-d", type=str, default=None, help="dataset (default: the model's, or ml-100k)"
    )
    parser.add_argument("--config_files", type=str, default=None, help="space-separated YAMLs")
    if not semantics_only:
        parser.add_argument("--nproc", type=int, default=1, help="processes on this machine")
        parser.add_argument("--ip", type=str, default="localhost", help="address of rank 0")
        parser.add_argument("--port", type=str, default="5678", help="port of rank 0")
        parser.add_argument("--world_size", type=int, default=-1, help="processes on all machines")
        parser.add_argument("--group_offset", type=int, default=0, help="first global rank here")
        parser.add_argument(
            "--semantics",
            action="store_true",
            help="only run the LLM-semantics step (the same as recbole-llm semantics)",
        )
    parser.add_argument(
        "--refresh",
        action="store_true",
        help=("" if semantics_only else "with --semantics: ") + "regenerate cached LLM replies",
    )


def add_semantics_arguments(parser):
    """``semantics``'s options (:func:`add_train_arguments` without the distributed ones)."""
    add_train_arguments(parser, semantics_only=True)


def add_no_arguments(parser):
    """A command without options of its own (``assets``)."""


#: Our flags that are not config keys: RecBole's Config must not read them from ``sys.argv``.
OUR_FLAGS = ("--semantics", "--refresh", DEBUG_FLAG)


def _config_from_command_line(parser, args, extra, argv):
    """Let RecBole's Config read the config keys from ``sys.argv``, which holds the command's
    ``argv`` without our flags from now on; returns the ``--config_files`` list."""
    for arg in extra:
        key_value(parser, arg)  # RecBole would drop --epochs 1 with a warning: refuse it
    sys.argv = [sys.argv[0], *[a for a in argv if a not in OUR_FLAGS]]
    return args.config_files.strip().split(" ") if args.config_files else None


def train_command(parser, args, extra, argv):
    """``recbole-llm [train]``: train and test (``--semantics``: :func:`semantics_command`)."""
    if args.semantics:
        return semantics_command(parser, args, extra, argv)
    config_file_list = _config_from_command_line(parser, args, extra, argv)
    return _until_generation_stops(
        run,
        args.model,
        args.dataset,
        config_file_list=config_file_list,
        nproc=args.nproc,
        world_size=args.world_size,
        ip=args.ip,
        port=args.port,
        group_offset=args.group_offset,
    )


def semantics_command(parser, args, extra, argv):
    """``recbole-llm semantics``: only the LLM-semantics step; returns the manifest's path."""
    config_file_list = _config_from_command_line(parser, args, extra, argv)
    return _until_generation_stops(
        run_semantics,
        args.model,
        args.dataset,
        config_file_list=config_file_list,
        refresh=args.refresh,
    )


def _until_generation_stops(func, *args, **kwargs):
    """``func(*args, **kwargs)``, or None after printing why the semantic step stopped early
    on purpose: one of several generation processes finished its share, or the prompts were
    written to a batch file to run elsewhere (not a failure)."""
    try:
        return func(*args, **kwargs)
    except (ShardDone, BatchExported) as done:
        print(done)
        return None


def sweep_command(parser, args, extra, argv):
    """``recbole-llm sweep``: :func:`recbole_llm.hyper.run_command`."""
    return hyper.run_command(args, extra)


def bench_command(parser, args, extra, argv):
    """``recbole-llm bench``: :func:`recbole_llm.bench.cli.run_command`."""
    return bench_cli.run_command(parser, args, extra)


def prepare_command(parser, args, extra, argv):
    """``recbole-llm prepare NAME``: :func:`recbole_llm.data.prepare.run_command`."""
    if extra:
        raise UsageError(parser.unexpected(extra[0]))
    return prepare.run_command(args)


def assets_command(parser, args, extra, argv):
    """``recbole-llm assets``: :func:`recbole_llm.assets.main`; returns its exit status."""
    if extra:
        raise UsageError(parser.unexpected(extra[0]))
    return assets.main()


#: name -> (one-line summary, the options, what runs them), in the order --help lists them.
COMMANDS = {
    "train": (
        "train and evaluate a model (the default command)",
        add_train_arguments,
        train_command,
    ),
    "semantics": (
        "only make the LLM semantics a model reads (EIMF, LLM4SBR), do not train",
        add_semantics_arguments,
        semantics_command,
    ),
    "sweep": ("sweep hyper-parameters (as run_hyper.py)", hyper.add_arguments, sweep_command),
    "bench": (
        "run a benchmark suite, resumably, and write its report",
        bench_cli.add_arguments,
        bench_command,
    ),
    "prepare": (
        "prepare a known dataset in the data root",
        prepare.add_arguments,
        prepare_command,
    ),
    "assets": (
        "find the offline model weights and data, and verify their hashes",
        add_no_arguments,
        assets_command,
    ),
}


def command_parsers(prog=None):
    """The top-level parser (its --help lists the commands, one line each) and each
    command's parser."""
    prog = prog or os.path.basename(sys.argv[0])
    width = max(len(name) for name in COMMANDS) + 2
    listing = "\n".join(f"  {name:<{width}}{summary}" for name, (summary, _, _) in COMMANDS.items())
    top = CommandParser(
        prog=prog,
        usage="%(prog)s [COMMAND] [options] [--key=value ...]",
        description="Train, evaluate and benchmark recbole_llm's and RecBole's models.\n\n"
        f"commands:\n{listing}",
        epilog="Without a command: train (recbole-llm --model=EIMF is recbole-llm train "
        "--model=EIMF).\nEvery --key=value sets that config key (bench: only the keys that "
        "leave a run's identity\nunchanged). recbole-llm COMMAND --help: the command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parsers = {}
    for name, (summary, add_arguments, _) in COMMANDS.items():
        description = summary[0].upper() + summary[1:] + "."
        parsers[name] = CommandParser(prog=f"{prog} {name}", description=description)
        add_arguments(parsers[name])
    return top, parsers


def main(argv=None):
    """Run the command line (``argv``, else ``sys.argv[1:]``) and return what its command
    returns: train's result dict, the semantic manifest's path (None on non-zero ranks, and
    when an ``llm_shard`` has done its share or ``llm_backend: batch`` has written its batch
    file), the sweep's trials, the prepared folder, assets' exit status. A user error prints
    ``error: <message>`` and exits with status 2."""
    return cli_main(_dispatch, argv)


def console():
    """The ``recbole-llm`` console script: :func:`main`, with an exit status for the shell
    (0, or ``assets``' own) instead of the returned result."""
    result = main()
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


def _dispatch(argv):
    arguments = sys.argv[1:] if argv is None else list(argv)
    top, parsers = command_parsers()
    if arguments[:1] in (["-h"], ["--help"]):
        top.print_help()
        return None
    name = "train"
    if arguments and not arguments[0].startswith("-"):
        name, arguments = arguments[0], arguments[1:]
        if name not in COMMANDS:
            close = closest_names(name, COMMANDS, n=1)
            hint = f"; did you mean {close[0]}?" if close else "."
            raise UsageError(
                f"unknown command '{name}'{hint} Commands: {', '.join(COMMANDS)} "
                f"({top.prog} --help); without one, {top.prog} trains."
            )
    parser = parsers[name]
    args, extra = parser.parse_known_args(arguments)
    saved_argv = sys.argv
    try:
        return COMMANDS[name][2](parser, args, extra, arguments)
    finally:
        sys.argv = saved_argv
