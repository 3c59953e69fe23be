"""Is the store usable? Start-up checks (data directory, database integrity, schema revision), a cached
probe for `/health`, and what a failed database call says about the store."""

from __future__ import annotations

import errno
import os
import re
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.exc import DatabaseError, DBAPIError, OperationalError, SQLAlchemyError

from app.storage.db import MIGRATIONS, READ_ONLY_OPTION, database_url, make_engine

PROBE_BYTES = 256 * 1024  # what the start-up check writes (and removes) to see that the data directory takes data
MIN_INTERVAL_S = 5.0  # /health runs the quick check at most this often ...
COST_FACTOR = 20  # ... and at most once per this many times its last duration (a big file is checked less often)
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)


class StoreError(Exception):
    """The store cannot be used: one line naming the path (or URL) and the cause."""


@dataclass(frozen=True)
class StoreFailure:
    """What a failed database call says: the disk is full, or the store is unusable, and why."""

    disk_full: bool
    cause: str


def cause_of(exc: BaseException) -> str:
    """The driver's message of a database error (else the error's own), on one line."""
    orig = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    text = re.sub(r"\s+", " ", str(orig)).strip()
    return (text or type(orig).__name__)[:300]


def store_failure(exc: BaseException) -> StoreFailure | None:
    """A store failure (corrupt file, cannot open or connect, I/O, disk full), else None: constraint
    violations and SQL mistakes are bugs or conflicts, not a broken store."""
    if not isinstance(exc, OperationalError) and type(exc) is not DatabaseError:
        return None
    cause = cause_of(exc)
    sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None) or ""
    full = sqlstate == "53100" or "disk is full" in cause or "No space left on device" in cause
    return StoreFailure(disk_full=full, cause=cause)


# --- start-up -------------------------------------------------------------------------------------

def check_store(url: str | None, data_dir: Path) -> None:
    """Every start-up check: the data directory takes data, the database opens, is intact, and is at a
    migration this release knows. Raises StoreError."""
    check_data_dir(Path(data_dir))
    check_database(url, Path(data_dir))


def check_data_dir(data_dir: Path) -> None:
    """The data directory exists (or can be made), is a directory, and a file can be written there."""
    if data_dir.exists() and not data_dir.is_dir():
        raise StoreError(f"data directory {data_dir} is a file, not a directory")
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create data directory {data_dir}: {exc.strerror}") from None
    try:
        fd, probe = tempfile.mkstemp(dir=data_dir, prefix=".write-check.", suffix=".tmp")
    except OSError as exc:
        raise _dir_error(data_dir, exc) from None
    try:
        view = memoryview(bytes(PROBE_BYTES))
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except OSError as exc:
        raise _dir_error(data_dir, exc) from None
    finally:
        os.close(fd)
        Path(probe).unlink(missing_ok=True)


def _dir_error(data_dir: Path, exc: OSError) -> StoreError:
    if exc.errno in DISK_FULL:
        return StoreError(f"data directory {data_dir}: the disk is full ({exc.strerror}; "
                          f"{_free(data_dir)} free): free some space and start again")
    if exc.errno in READ_ONLY:
        return StoreError(f"data directory {data_dir} is not writable ({exc.strerror})")
    return StoreError(f"data directory {data_dir}: cannot write there ({exc.strerror})")


def _free(folder: Path) -> str:
    try:
        stats = os.statvfs(folder)
    except OSError:
        return "unknown space"
    free = stats.f_bavail * stats.f_frsize
    return f"{free / 2**20:.1f} MB" if free >= 2**20 else f"{free} bytes"


def check_database(url: str | None, data_dir: Path) -> None:
    """The database opens, passes its integrity check, and is at a known migration (or none yet)."""
    full_url = database_url(url, data_dir)
    sqlite = full_url.startswith("sqlite")
    engine = make_engine(url, data_dir) if sqlite else create_engine(full_url, connect_args={"connect_timeout": 10})
    try:
        problem = probe(engine)
    finally:
        engine.dispose()
    if problem is not None:
        raise StoreError(problem)


def describe(engine: Engine) -> str:
    """The database as a person names it: the SQLite file, or the URL without its password."""
    if engine.url.get_backend_name() == "sqlite":
        return engine.url.database or ":memory:"
    return engine.url.render_as_string(hide_password=True)


def known_revisions() -> set[str]:
    """The migrations this release has."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return {script.revision for script in ScriptDirectory.from_config(config).walk_revisions()}


def probe(engine: Engine) -> str | None:
    """One look at the store: None when usable, else what is wrong (naming the file or URL)."""
    where = describe(engine)
    sqlite = engine.url.get_backend_name() == "sqlite"
    try:
        with engine.execution_options(**{READ_ONLY_OPTION: True}).connect() as connection:
            if sqlite:
                problem = _quick_check(connection, where)
                if problem:
                    return problem
            else:
                connection.exec_driver_sql("SELECT 1").scalar()
            revision = MigrationContext.configure(connection).get_current_revision()
    except DatabaseError as exc:
        return _open_error(where, sqlite, exc)
    except SQLAlchemyError as exc:
        return f"{where}: {cause_of(exc)}"
    if revision is not None and revision not in known_revisions():
        return (f"{where} is at migration {revision}, which this release does not know "
                f"(made by a newer release?): run that release, or restore a backup")
    return None


def _quick_check(connection: Connection, where: str) -> str | None:
    rows = [str(row[0]) for row in connection.exec_driver_sql("PRAGMA quick_check").fetchall()]
    if rows == ["ok"]:
        return None
    lines = [line for row in rows for line in row.splitlines() if line and not line.startswith("***")]
    more = f" (and {len(lines) - 1} more problems)" if len(lines) > 1 else ""
    first = lines[0] if lines else "no details"
    return f"{where} is damaged: PRAGMA quick_check found {first}{more}; restore it from a backup"


def _open_error(where: str, sqlite: bool, exc: DatabaseError) -> str:
    cause = cause_of(exc)
    if sqlite and "not a database" in cause:
        return f"{where} is not a SQLite database ({cause}): move it away or restore it from a backup"
    if sqlite and "malformed" in cause:
        return f"{where} is damaged ({cause}): restore it from a backup"
    if sqlite:
        return f"{where} cannot be used: {cause}"
    return f"cannot use the database {where}: {cause}"


# --- while serving --------------------------------------------------------------------------------

class StoreMonitor:
    """The store's state for `/health`: a probe at most every few seconds, and any failure a request saw."""

    def __init__(self, engine: Engine, min_interval_s: float = MIN_INTERVAL_S) -> None:
        self.engine = engine
        self.min_interval_s = min_interval_s
        self._problem: str | None = None
        self._checked_at = float("-inf")
        self._cost_s = 0.0
        self._running = threading.Lock()

    def problem(self) -> str | None:
        """None while the store is usable, else what is wrong; blocking (run it in a thread)."""
        interval = max(self.min_interval_s, COST_FACTOR * self._cost_s)
        if time.monotonic() - self._checked_at < interval or not self._running.acquire(blocking=False):
            return self._problem  # fresh enough, or another caller is checking right now
        try:
            started = time.monotonic()
            self._problem = probe(self.engine)
            self._cost_s = time.monotonic() - started
            self._checked_at = time.monotonic()
        finally:
            self._running.release()
        return self._problem

    def failed(self, cause: str) -> None:
        """A request's database call failed: report it until the next probe says otherwise."""
        self._problem = f"{describe(self.engine)}: {cause}"
        self._checked_at = time.monotonic()


_monitors: weakref.WeakKeyDictionary[Engine, StoreMonitor] = weakref.WeakKeyDictionary()
_monitors_lock = threading.Lock()


def monitor(engine: Engine) -> StoreMonitor:
    """The one monitor of this engine's store."""
    with _monitors_lock:
        found = _monitors.get(engine)
        if found is None:
            found = _monitors[engine] = StoreMonitor(engine)
        return found

