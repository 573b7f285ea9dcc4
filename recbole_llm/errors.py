"""The one exception type for mistakes in what a user gave, and how the commands report it.

Every error a user can fix (a config key, a file, a flag, a dataset) derives from
:class:`UserError`. The command-line entry points run through :func:`cli_main`, which turns such
an error into one line, ``error: <message>``, on stderr and exit status 2 (argparse's status for
a usage error); ``--debug`` on the command line shows the traceback instead. Any other
exception is a bug and keeps its traceback.

This module imports nothing from the package, so that every layer may raise a UserError.
"""

import sys

#: The flag every command accepts to see the traceback of a user error.
DEBUG_FLAG = "--debug"
DEBUG_HELP = "show the traceback of an error instead of the one-line message"

#: Exit status of a command stopped by a user error.
USER_ERROR_STATUS = 2


class UserError(ValueError):
    """An error in what the user gave: config, file, flag, data; the message says what to do."""


def error_message(err):
    """The message of an error as written (``str`` of a KeyError adds quotes around it)."""
    if len(err.args) == 1 and isinstance(err.args[0], str):
        return err.args[0]
    return str(err)


def yaml_problem(err):
    """A YAML parser error in one short phrase: ``line 2, column 1: expected ',' or ']'``."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err)
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else problem


def cli_main(func, argv=None):
    """Run a command's ``func(argv)`` and return its result; a :class:`UserError` prints
    ``error: <message>`` to stderr and exits with status 2, unless ``--debug`` is among the
    arguments (``argv``, else ``sys.argv[1:]``), which lets it propagate with its traceback."""
    arguments = sys.argv[1:] if argv is None else argv
    try:
        return func(argv)
    except UserError as err:
        if DEBUG_FLAG in arguments:
            raise
        print(f"error: {' '.join(error_message(err).split())}", file=sys.stderr)
        raise SystemExit(USER_ERROR_STATUS) from None
