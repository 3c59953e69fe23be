"""PostgreSQL as the shared store of several app replicas; these run only when DATABASE_URL points at one.

`.ci/run` starts a throwaway PostgreSQL server and runs this file, the storage, export and API tests with
`DATABASE_URL=postgresql+psycopg://…`. The helpers here are what the storage and export fixtures use to
point at that server and give every test an empty schema of its own; the API tests' servers use
`DATABASE_URL` as it is, as a deployment would.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from sqlalchemy import Engine, make_url, text
from sqlmodel import select

from app.storage import comparisons, ratings
from app.storage.comparisons import OutputInput, StoredImageInput
from app.storage.db import init_db, make_engine, session
from app.storage.tables import Rating

TEST_SCHEMA = "vlm_unit_tests"


def postgres_url() -> str | None:
    """`DATABASE_URL` when it names a PostgreSQL database, else None (the tests then use SQLite)."""
    url = os.environ.get("DATABASE_URL")
    if not url:
        return None
    return url if make_url(url).get_backend_name() == "postgresql" else None


def unit_test_url() -> str | None:
    """`DATABASE_URL` with its search path set to a schema of the unit tests' own, else None.

    The storage and export tests empty that schema before each test, while servers started by other
    tests (which take `DATABASE_URL` from the environment) keep the `public` schema to themselves.
    """
    url = postgres_url()
    if url is None:
        return None
    own_schema = make_url(url).update_query_dict({"options": f"-csearch_path={TEST_SCHEMA}"})
    return own_schema.render_as_string(hide_password=False)


ON_POSTGRES = postgres_url() is not None
SQLITE_ONLY = pytest.mark.skipif(ON_POSTGRES, reason="checks SQLite itself; DATABASE_URL points at PostgreSQL")
pytestmark = pytest.mark.skipif(not ON_POSTGRES, reason="set DATABASE_URL=postgresql+psycopg://… to run")


def open_unit_store(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Engine:
    """SQLite in `data_dir`, or the unit tests' own PostgreSQL schema (emptied) when DATABASE_URL names one."""
    url = unit_test_url()
    if url is None:
        monkeypatch.delenv("DATABASE_URL", raising=False)
    engine = make_engine(url, data_dir)
    if url is None:
        init_db(engine)
    else:
        reset_schema(engine)
    return engine


def reset_schema(engine: Engine) -> None:
    """Drop the unit tests' schema with everything in it, and create it again with the app's tables, empty."""
    with engine.begin() as connection:
        connection.exec_driver_sql(f"DROP SCHEMA IF EXISTS {TEST_SCHEMA} CASCADE")
        connection.exec_driver_sql(f"CREATE SCHEMA {TEST_SCHEMA}")
    init_db(engine)


@pytest.fixture
def pg_engine(tmp_path: Path) -> Engine:
    engine = make_engine(unit_test_url(), tmp_path / "data")
    reset_schema(engine)
    yield engine
    engine.dispose()


def test_the_app_engine_takes_database_url_from_the_environment(tmp_path: Path) -> None:
    from app.core.settings import Settings

    engine = make_engine(Settings().database_url, tmp_path / "data")
    try:
        with engine.connect() as connection:
            assert connection.execute(text("SELECT current_schema()")).scalar() == "public"
        assert engine.dialect.name == "postgresql"
        assert not (tmp_path / "data" / "playground.db").exists()
    finally:
        engine.dispose()


def test_database_url_reaches_a_postgresql_server(pg_engine: Engine) -> None:
    assert pg_engine.dialect.name == "postgresql" and pg_engine.driver == "psycopg"
    with pg_engine.connect() as connection:
        version = connection.execute(text("SHOW server_version_num")).scalar()
        schema = connection.execute(text("SELECT current_schema()")).scalar()
        tables = set(connection.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = :schema"),
                                        {"schema": TEST_SCHEMA}).scalars())
    assert int(version) >= 130000 and schema == TEST_SCHEMA
    assert {"comparisons", "images", "comparison_images", "outputs", "ratings", "measured_sizes"} <= tables


def test_two_replicas_rating_the_same_output_keep_one_rating_per_rater(pg_engine: Engine, tmp_path: Path) -> None:
    """Two app replicas (two engines, two data directories) race to rate one output under the same names."""
    image = StoredImageInput("a.png", b"png bytes", "PNG", 2, 2)
    created = comparisons.create_comparison(pg_engine, tmp_path / "data", "p", {}, "", False, [image],
                                            [OutputInput("m")])
    output_id = created.output_ids[0]
    replicas = [make_engine(unit_test_url(), tmp_path / f"replica-{index}") for index in range(2)]
    threads, rounds = 12, 5
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def rater(index: int) -> None:
        try:
            barrier.wait()
            for round_ in range(rounds):
                ratings.rate(replicas[index % 2], output_id, 1 + (index + round_) % 5, f"{index}/{round_}",
                           f"rater-{index % 3}")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=rater, args=(index,)) for index in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    for replica in replicas:
        replica.dispose()
    assert errors == []
    with session(pg_engine, read_only=True) as db:
        raters = sorted(db.exec(select(Rating.rater).where(Rating.output_id == output_id)).all())
    assert raters == ["rater-0", "rater-1", "rater-2"]
