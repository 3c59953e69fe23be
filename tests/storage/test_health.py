"""The store's own checks on real files: a damaged SQLite file, a file that is no database, a data
directory that is a file, read-only or full, a schema from a newer release, and the cached probe."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DatabaseError, IntegrityError

from app.storage import health
from app.storage.db import make_engine, session
from app.storage.health import StoreError, StoreMonitor, check_data_dir, check_store, probe, store_failure
from app.storage.tables import Rating
from tests.storage.damage import build_rated_store, damage, quick_check
from tests.storage.mounts import fill, tmpfs
from tests.storage.test_postgres import SQLITE_ONLY, open_unit_store


@pytest.fixture
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Engine:
    """SQLite in a data directory, or the unit tests' own PostgreSQL schema when DATABASE_URL names one."""
    engine = open_unit_store(tmp_path / "data", monkeypatch)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def rated_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory whose playground.db holds thousands of ratings (copied by each test that damages it)."""
    data_dir = tmp_path_factory.mktemp("rated") / "data"
    assert build_rated_store(data_dir) > 10_000
    return data_dir


def damaged_copy(rated_store: Path, tmp_path: Path) -> Path:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "playground.db").write_bytes((rated_store / "playground.db").read_bytes())
    damage(data_dir / "playground.db")
    assert quick_check(data_dir / "playground.db") != "ok"  # SQLite itself sees the damage
    return data_dir


def test_the_store_in_use_passes_every_check(engine: Engine) -> None:
    assert probe(engine) is None
    assert StoreMonitor(engine).problem() is None


@SQLITE_ONLY
def test_damage_in_the_middle_of_a_file_with_many_ratings_is_found(rated_store: Path, tmp_path: Path) -> None:
    check_store(None, rated_store)  # intact: no error
    data_dir = damaged_copy(rated_store, tmp_path)
    with pytest.raises(StoreError) as caught:
        check_store(None, data_dir)
    message = str(caught.value)
    assert message.startswith(f"{data_dir / 'playground.db'} is damaged") and "\n" not in message
    assert "malformed" in message or "quick_check" in message
    assert "restore it from a backup" in message


@SQLITE_ONLY
def test_a_file_that_is_not_a_database_is_named(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "playground.db").write_bytes(b"these are not the pages you are looking for " * 200)
    with pytest.raises(StoreError, match=r"playground\.db is not a SQLite database \(file is not a database\)"):
        check_store(None, data_dir)


def test_a_data_directory_that_is_a_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("oops")
    with pytest.raises(StoreError, match=f"data directory {tmp_path / 'data'} is a file, not a directory"):
        check_data_dir(tmp_path / "data")


def test_a_read_only_data_directory_is_named(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", 256, read_only=True) as data_dir, \
            pytest.raises(StoreError, match=r"is not writable \(Read-only file system\)"):
        check_data_dir(data_dir)


def test_a_full_disk_is_named_with_what_is_left(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "full", 512) as data_dir:
        fill(data_dir)
        with pytest.raises(StoreError, match=r"the disk is full \(No space left on device; \d+ bytes free\)"):
            check_data_dir(data_dir)
        assert [path.name for path in data_dir.iterdir()] == ["filler.bin"]  # the probe left nothing behind


def test_a_schema_from_a_newer_release_is_refused(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0999_from_the_future'"))
    problem = probe(engine)
    assert problem is not None and "is at migration 0999_from_the_future, which this release does not know" in problem


@SQLITE_ONLY
def test_the_monitor_checks_at_most_every_few_seconds_and_hears_of_failures(rated_store: Path,
                                                                            tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "playground.db").write_bytes((rated_store / "playground.db").read_bytes())
    engine = make_engine(None, data_dir)
    watcher = StoreMonitor(engine, min_interval_s=0.5)
    assert watcher.problem() is None
    damage(data_dir / "playground.db")
    assert watcher.problem() is None  # the last check is fresh: /health stays cheap
    deadline = time.monotonic() + 10  # the interval is 0.5 s, or longer when the last probe was slow (a busy CI)
    while (problem := watcher.problem()) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert problem is not None and "is damaged" in problem
    watcher.failed("disk I/O error")
    assert watcher.problem() == f"{data_dir / 'playground.db'}: disk I/O error"
    engine.dispose()


@SQLITE_ONLY
def test_reading_a_damaged_file_is_a_store_failure_and_a_duplicate_is_not(rated_store: Path,
                                                                         tmp_path: Path) -> None:
    engine = make_engine(None, damaged_copy(rated_store, tmp_path))
    with pytest.raises(DatabaseError) as caught, session(engine, read_only=True) as db:
        db.exec(text("SELECT note FROM ratings ORDER BY id")).all()  # type: ignore[call-overload]
    failure = store_failure(caught.value)
    assert failure is not None and not failure.disk_full and "malformed" in failure.cause
    engine.dispose()


def test_a_constraint_violation_is_no_store_failure(engine: Engine) -> None:
    with pytest.raises(IntegrityError) as caught, session(engine) as db:
        db.add(Rating(output_id=424242, score=3))
    assert store_failure(caught.value) is None


def test_a_database_server_that_cannot_be_reached_is_named_without_its_password(tmp_path: Path) -> None:
    url = "postgresql+psycopg://vlm:s3cret@127.0.0.1:9/nothing"  # port 9 (discard): nothing listens
    with pytest.raises(StoreError) as caught:
        check_store(url, tmp_path / "data")
    message = str(caught.value)
    assert message.startswith("cannot use the database postgresql+psycopg://vlm:***@127.0.0.1:9/nothing: ")
    assert "s3cret" not in message and "Connection refused" in message


def test_one_monitor_per_engine(engine: Engine) -> None:
    assert health.monitor(engine) is health.monitor(engine)
