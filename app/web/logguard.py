"""A log-flood guard: an identical record (logger, level, message template, exception type) passes at most
once per window; the next one after it says how many were held back."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable

GUARDED_LOGGERS = ("asyncio", "uvicorn", "uvicorn.error", "uvicorn.access")
MAX_KINDS = 1024  # distinct kinds remembered; expired ones are dropped past it


class RepeatGuard(logging.Filter):
    """Let one record of each kind through per `window_s`; count the rest and report the count once."""

    def __init__(self, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window_s = window_s
        self.clock = clock
        self._kinds: dict[Hashable, list[float]] = {}  # kind → [window end, records held back]

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        kind = (record.name, record.levelno, str(record.msg), type(exc).__name__ if exc else None)
        now = self.clock()
        seen = self._kinds.get(kind)
        if seen is not None and now < seen[0]:
            seen[1] += 1
            return False
        if len(self._kinds) >= MAX_KINDS:
            self._kinds = {key: value for key, value in self._kinds.items() if now < value[0]}
        self._kinds[kind] = [now + self.window_s, 0]
        if seen is not None and seen[1]:
            record.msg = f"{record.msg} … repeated {int(seen[1])} times before this"
        return True


def guard_logs(names: tuple[str, ...] = GUARDED_LOGGERS, window_s: float = 60.0) -> RepeatGuard:
    """Install one `RepeatGuard` on each named logger (filters are per logger: children need their own)."""
    guard = RepeatGuard(window_s)
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, RepeatGuard) for existing in logger.filters):
            logger.addFilter(guard)
    return guard
