"""The one error the command line knows: a message a person can act on (one line, exit status 2)."""


class CommandError(Exception):
    """An error a person can act on: printed as one line, exit status 2."""
