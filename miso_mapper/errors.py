"""Exceptions that carry a message meant for the user.

The CLI turns a :class:`MisoError` into one line on stderr and its ``exit_code``; anything else is a bug
and keeps its traceback.
"""


class MisoError(Exception):
    """A problem the user can fix (bad input, missing file, unreachable server). Exit code 1."""

    exit_code = 1


class UsageError(MisoError):
    """Invalid command-line use or an invalid workflow file. Exit code 2."""

    exit_code = 2


class ConfigError(UsageError):
    """A workflow file that cannot be read or does not validate. Exit code 2."""
