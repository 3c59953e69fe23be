"""The log-flood guard on a real logger: one record per kind per window, then one that counts the rest."""

from __future__ import annotations

import io
import logging

from app.web.logguard import RepeatGuard, guard_logs


def logger_with(guard: RepeatGuard, name: str) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    logger = logging.getLogger(name)
    logger.propagate = False
    logger.handlers = [logging.StreamHandler(out)]
    logger.filters = [guard]
    return logger, out


def accept_failure(logger: logging.Logger) -> None:
    try:
        raise OSError(24, "Too many open files")
    except OSError:
        logger.exception("socket.accept() out of system resource")


def test_identical_tracebacks_pass_once_a_minute_then_say_how_many_were_held_back():
    now = [0.0]
    logger, out = logger_with(RepeatGuard(60, clock=lambda: now[0]), "test.guard.flood")
    for _ in range(10_000):
        accept_failure(logger)
    assert out.getvalue().count("socket.accept() out of system resource") == 1
    assert out.getvalue().count("Traceback") == 1
    now[0] = 30.0
    accept_failure(logger)
    assert out.getvalue().count("Traceback") == 1
    now[0] = 61.0
    accept_failure(logger)
    lines = [line for line in out.getvalue().splitlines() if "out of system resource" in line]
    assert lines[-1] == "socket.accept() out of system resource … repeated 10000 times before this"
    now[0] = 200.0
    accept_failure(logger)  # a quiet minute: nothing was held back, nothing to count
    assert out.getvalue().splitlines().count("socket.accept() out of system resource") == 2


def test_different_messages_levels_and_exceptions_are_kinds_of_their_own():
    logger, out = logger_with(RepeatGuard(60), "test.guard.kinds")
    logger.warning("disk %s full", "a")
    logger.warning("disk %s full", "b")  # same template: held back
    logger.error("disk %s full", "a")
    logger.warning("other")
    accept_failure(logger)
    try:
        raise ValueError("x")
    except ValueError:
        logger.exception("socket.accept() out of system resource")
    assert out.getvalue().count("disk a full") == 2 and "disk b full" not in out.getvalue()
    assert out.getvalue().count("Traceback") == 2 and "other" in out.getvalue()


def test_guard_logs_installs_one_guard_per_logger():
    guard_logs(("test.guard.installed",))
    guard_logs(("test.guard.installed",))
    assert sum(isinstance(f, RepeatGuard) for f in logging.getLogger("test.guard.installed").filters) == 1
