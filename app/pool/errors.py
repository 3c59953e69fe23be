"""Why the pool cannot give a request its model now; each message is meant for the person who asked."""

from __future__ import annotations


class PoolError(RuntimeError):
    """A lease that cannot be granted. `retry_after_s`: when trying again may succeed (None: unknown)."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class TooLarge(PoolError):
    """The model needs more memory than the whole budget."""


class Busy(PoolError):
    """The model did not fit, or had no turn free, within the wait limit."""


class TooManyWaiting(PoolError):
    """This client already has as many requests waiting for the model as one client may."""


class Unavailable(PoolError):
    """The model cannot be served (catalogue says so, or its last load failed recently)."""
