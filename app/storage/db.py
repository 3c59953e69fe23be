"""Database engine and sessions: SQLite (WAL, FULL sync, IMMEDIATE writes) by default, any URL otherwise."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, create_engine, event, inspect, make_url, text
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


@contextmanager
def session(engine: Engine, read_only: bool = False) -> Iterator[Session]:
    """A session in one transaction: committed on success, rolled back on error.

    `read_only=True` begins a deferred transaction on SQLite, so readers never hold the write lock,
    and ends it on close without committing; loaded objects stay readable afterwards.
    """
    bind = engine.execution_options(**{READ_ONLY_OPTION: True}) if read_only else engine
    with Session(bind, expire_on_commit=False) as db:
        try:
            yield db
            if not read_only:
                db.commit()
        except BaseException:
            db.rollback()
            raise
