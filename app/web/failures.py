"""Answers for a store that fails under a request: 503 while the database is unusable, 507 when the
disk is full; never a 500 with a traceback."""

from __future__ import annotations

import logging
import time

from fastapi import Request
from fastapi.responses import JSONResponse

from app.storage.files import DiskFull
from app.storage.health import monitor, store_failure

log = logging.getLogger("vlm_playground")
RETRY_AFTER_S = 30
LOG_EVERY_S = 60.0
_last_logged: dict[str, float] = {}
SEE = "see /health, the server log and the README's 'When the store fails'"


async def store_failed(request: Request, exc: Exception) -> JSONResponse:
    """A SQLAlchemy DatabaseError: 503 (or 507 for a full disk) when it says the store is broken;
    anything else (a constraint, a SQL mistake) is re-raised as the bug it is."""
    failure = store_failure(exc)
    if failure is None:
        raise exc
    running = getattr(request.app.state, "services", None)
    if running is not None:
        monitor(running.engine).failed(failure.cause)
    _log_once_a_minute(f"the database failed under {request.method} {request.url.path}: {failure.cause}",
                       failure.cause)
    if failure.disk_full:
        return JSONResponse({"detail": f"the server's disk is full: the change was not stored; {SEE} "
                                       f"({failure.cause})"}, status_code=507)
    return JSONResponse({"detail": f"the database is unusable: {failure.cause}; {SEE}"}, status_code=503,
                        headers={"Retry-After": str(RETRY_AFTER_S)})


def _log_once_a_minute(line: str, cause: str) -> None:
    """Log the failure; the same cause again only once a minute, so a broken store does not flood the log."""
    now = time.monotonic()
    if _last_logged.get(cause, float("-inf")) > now - LOG_EVERY_S:
        return
    _last_logged.clear()
    _last_logged[cause] = now
    log.error("%s", line)


async def disk_full(request: Request, exc: Exception) -> JSONResponse:
    """An upload the disk had no room for (nothing of it was kept): 507."""
    assert isinstance(exc, DiskFull)
    _log_once_a_minute(f"{request.method} {request.url.path}: {exc}", "disk full")
    return JSONResponse({"detail": str(exc)}, status_code=507)
