"""The one command-line style of every command (``recbole-llm`` and its subcommands, and the
scripts that wrap them): argparse without abbreviations (``--data=...`` is a config key, not
``--dataset``), ``--debug`` everywhere, and every mistake a :class:`UsageError`, which
:func:`recbole_llm.errors.cli_main` prints as one line ``error: ...`` (argparse prints its
usage and exits from deep inside), naming the closest option when there is one.

Config keys are given as one argument each, ``--key=value``; :func:`key_value` refuses the
other shapes (``--epochs 1``) instead of letting RecBole drop them with a warning.
"""

import argparse
import difflib

from recbole_llm.errors import DEBUG_FLAG, DEBUG_HELP, UserError


class UsageError(UserError):
    """A command line that cannot be run: an unknown command, option or argument."""


class CommandParser(argparse.ArgumentParser):
    """An ``argparse.ArgumentParser`` whose errors are :class:`UsageError` (one line) and that
    takes no abbreviations and ``--debug``; subcommand parsers are of this class too."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self.add_argument(DEBUG_FLAG, action="store_true", help=DEBUG_HELP)

    def error(self, message):
        raise UsageError(f"{message} ({self.prog} --help lists the options)")

    def parse_args(self, args=None, namespace=None):
        """As argparse's, but an argument it does not know is a :class:`UsageError` that
        names the closest option."""
        known, extra = self.parse_known_args(args, namespace)
        if extra:
            raise UsageError(self.unexpected(extra[0]))
        return known

    def options(self):
        """The long options this parser takes (``--model``, ...)."""
        return [o for action in self._actions for o in action.option_strings if o[:2] == "--"]

    def unexpected(self, arg, what=None):
        """The message for an argument this command does not take: the closest option if one
        is close, else ``what`` may be given instead."""
        name = arg.partition("=")[0]
        close = difflib.get_close_matches(name, self.options(), n=1, cutoff=0.7)
        message = f"unexpected argument '{arg}'"
        if close and name.startswith("-"):
            message += f"; did you mean {close[0]}?"
        elif what:
            message += f": {what}"
        return f"{message} ({self.prog} --help lists the options)"


def key_value(parser, arg):
    """``(key, text)`` of a ``--key=value`` argument; anything else is a :class:`UsageError`
    (``--epochs 1`` gives two arguments, which RecBole would silently drop)."""
    key, equals, text = arg[2:].partition("=")
    if arg.startswith("--") and equals and key:
        return key, text
    shape = f"--{arg.lstrip('-')}=VALUE" if arg.startswith("-") else "--key=value"
    raise UsageError(parser.unexpected(arg, f"a config key is one argument, {shape}"))
