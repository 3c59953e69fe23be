"""Database engine and sessions: SQLite (WAL, FULL sync, IMMEDIATE writes) by default, any URL otherwise."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Engine, create_engine, event, inspect, make_url, text
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from app.storage import tables  # noqa: F401  (registers the tables on SQLModel.metadata)

BUSY_TIMEOUT_MS = 30_000
BUSY_TIMEOUT_S = BUSY_TIMEOUT_MS / 1000
READ_ONLY_OPTION = "playground_read_only"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
BASELINE_REVISION = "0001_baseline"  # the schema release 0.1.0 created with `create_all`
MIGRATION_LOCK_KEY = 7_421_905  # pg_advisory_xact_lock key held while migrating


def database_url(url: str | None, data_dir: Path) -> str:
    """The URL given (`Settings.database_url`), else a SQLite file in the data directory."""
    return url or f"sqlite:///{Path(data_dir) / 'playground.db'}"


def make_engine(url: str | None, data_dir: Path) -> Engine:
    """An engine for `url` (see `database_url`); SQLite gets the pragmas and IMMEDIATE write transactions."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    url = database_url(url, data_dir)
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    in_memory = make_url(url).database in (None, "", ":memory:")
    pool_args = {} if in_memory else {"pool_size": 10, "max_overflow": 30, "pool_timeout": BUSY_TIMEOUT_S}
    engine = create_engine(url, **pool_args)
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    """Take transaction control from the driver and set the pragmas (busy timeout first)."""
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() not in ("wal", "memory"):
            cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _sqlite_on_begin(connection: Any) -> None:
    """Writers take the write lock up front (waiting on busy_timeout); read-only sessions begin deferred."""
    read_only = connection.get_execution_options().get(READ_ONLY_OPTION, False)
    connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def init_db(engine: Engine) -> None:
    """Bring the schema to the newest migration (see `app/storage/migrations/versions`).

    A database the 0.1.0 release made (its tables, no `alembic_version`) is first stamped at the
    baseline, which is that schema. On PostgreSQL an advisory lock keeps replicas that start at the
    same moment from migrating twice.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        config.attributes["connection"] = connection
        existing = set(inspect(connection).get_table_names())
        if "alembic_version" not in existing and "comparisons" in existing:
            command.stamp(config, BASELINE_REVISION)
        command.upgrade(config, "head")


def schema_revision(engine: Engine) -> str | None:
    """The migration the database is at (None before any)."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


_write_locks: dict[str, threading.RLock] = {}  # one per SQLite file, by the database as its URL names it
_write_locks_guard = threading.Lock()


def write_lock(engine: Engine) -> threading.RLock | None:
    """The process's lock for writing to this engine's SQLite file (None for an in-memory or server database)."""
    if engine.dialect.name != "sqlite":
        return None
    database = engine.url.database
    if database in (None, "", ":memory:") or database.startswith("file:"):
        return None
    lock = _write_locks.get(database)
    if lock is None:
        with _write_locks_guard:
            same_file = next((found for name, found in _write_locks.items()
                              if os.path.realpath(name) == os.path.realpath(database)), None)
            lock = _write_locks.setdefault(database, same_file or threading.RLock())
    return lock


@contextmanager
def writing(engine: Engine) -> Iterator[None]:
    """Hold this process's turn to write to a SQLite file while the body's write transaction runs.

    SQLite has one writer at a time; a `BEGIN IMMEDIATE` that finds the file locked sleeps in SQLite's
    busy handler in growing steps (up to 100 ms) however soon the lock comes free, so 16 writers of one
    process queueing that way spend most of their time asleep. Queued on a lock here instead, each starts
    the moment the one before commits; writers of other processes still wait on `busy_timeout`. Gives
    up after that same timeout with SQLite's own "database is locked". A no-op for other databases.
    """
    lock = write_lock(engine)
    if lock is None:
        yield
        return
    if not lock.acquire(timeout=BUSY_TIMEOUT_S):
        raise OperationalError("BEGIN IMMEDIATE", None, sqlite3.OperationalError("database is locked"))
    try:
        yield
    finally:
        lock.release()


@contextmanager
def transaction(engine: Engine) -> Iterator[Connection]:
    """A Core connection in one write transaction: committed on success, rolled back on error."""
    with writing(engine), engine.begin() as connection:
        yield connection


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A Core connection in one read transaction (deferred on SQLite), ended without committing: for a
    query or two where an ORM session would cost more than the query."""
    with engine.connect() as connection:
        connection.execution_options(**{READ_ONLY_OPTION: True})
        yield connection


@contextmanager
def session(engine: Engine, read_only: bool = False) -> Iterator[Session]:
    """A session in one transaction: committed on success, rolled back on error.

    `read_only=True` begins a deferred transaction on SQLite, so readers never hold the write lock,
    and ends it on close without committing; loaded objects stay readable afterwards. A writing
    session on a SQLite file takes this process's turn to write first (see `writing`).
    """
    if read_only:
        with Session(engine.execution_options(**{READ_ONLY_OPTION: True}), expire_on_commit=False) as db:
            try:
                yield db
            except BaseException:
                db.rollback()
                raise
        return
    with writing(engine), Session(engine, expire_on_commit=False) as db:
        try:
            yield db
            db.commit()
        except BaseException:
            db.rollback()
            raise
