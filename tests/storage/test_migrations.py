"""Schema migrations: databases written by earlier releases upgrade in place, and every table change
comes with a migration. `tests/data/release-0.1.0.sql` is a database the 0.1.0 release wrote (its own
`create_all` and store, dumped with sqlite3's `iterdump`)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text
from sqlmodel import SQLModel

from app.storage import comparisons, ratings
from app.storage.db import BASELINE_REVISION, MIGRATIONS, init_db, make_engine, schema_revision
from tests.helpers import ROOT
from tests.storage.test_postgres import ON_POSTGRES, SQLITE_ONLY, TEST_SCHEMA, reset_schema, unit_test_url

RELEASE_0_1_0 = ROOT / "tests" / "data" / "release-0.1.0.sql"
TABLES = ("comparisons", "images", "comparison_images", "outputs", "ratings", "measured_sizes")


def head_revision() -> str:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def table_rows(engine: Engine) -> dict[str, list[tuple]]:
    with engine.connect() as connection:
        return {table: [tuple(row) for row in connection.execute(text(f"SELECT * FROM {table} ORDER BY 1"))]
                for table in TABLES}


def schema_drift(engine: Engine) -> list:
    with engine.connect() as connection:
        return compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}),
                                SQLModel.metadata)


@pytest.fixture
def release_db(tmp_path: Path) -> Path:
    path = tmp_path / "playground.db"
    with sqlite3.connect(path) as connection:
        connection.executescript(RELEASE_0_1_0.read_text(encoding="utf-8"))
    return path


@SQLITE_ONLY
def test_a_database_written_by_release_0_1_0_upgrades_with_every_row_intact(release_db: Path, tmp_path: Path):
    engine = make_engine(f"sqlite:///{release_db}", tmp_path)
    assert "alembic_version" not in inspect(engine).get_table_names()
    before = table_rows(engine)
    assert len(before["ratings"]) == 2 and len(before["outputs"]) == 3
    init_db(engine)
    assert schema_revision(engine) == head_revision()
    assert table_rows(engine) == before
    assert schema_drift(engine) == [], "the baseline is not the schema release 0.1.0 made"
    stored = comparisons.get_comparison(engine, 1)
    assert [r["note"] for r in stored["outputs"][0]["ratings"]] == ["good, brief", ""]
    _, created = ratings.rate(engine, stored["outputs"][0]["id"], 5, "", "cat")  # and it takes writes
    assert created
    init_db(engine)  # a second start changes nothing
    assert schema_revision(engine) == head_revision()


@SQLITE_ONLY
def test_a_new_database_is_created_by_the_migrations(tmp_path: Path):
    engine = make_engine(None, tmp_path)
    init_db(engine)
    assert schema_revision(engine) == head_revision()
    assert set(TABLES) <= set(inspect(engine).get_table_names())


def test_every_table_change_has_a_migration(tmp_path: Path):
    """Autogenerate against a database at head finds nothing: a changed table without a migration fails here."""
    engine = make_engine(unit_test_url(), tmp_path)
    if ON_POSTGRES:
        reset_schema(engine)
    init_db(engine)
    assert schema_drift(engine) == []
    assert schema_revision(engine) == head_revision()


@pytest.mark.skipif(not ON_POSTGRES, reason="set DATABASE_URL=postgresql+psycopg://… to run")
def test_a_postgresql_database_of_release_0_1_0_upgrades_in_place(tmp_path: Path):
    """On PostgreSQL: the 0.1.0 schema (the baseline, without a version table, as its create_all left it)
    with rows in it; two replicas start at once and both upgrade it, once, keeping every row."""
    import threading

    from alembic import command
    from alembic.config import Config

    engine = make_engine(unit_test_url(), tmp_path)
    with engine.begin() as connection:
        connection.exec_driver_sql(f"DROP SCHEMA IF EXISTS {TEST_SCHEMA} CASCADE")
        connection.exec_driver_sql(f"CREATE SCHEMA {TEST_SCHEMA}")
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = connection
        command.upgrade(config, BASELINE_REVISION)
        connection.exec_driver_sql("DROP TABLE alembic_version")
    image = comparisons.StoredImageInput("a.png", b"png bytes", "PNG", 2, 2)
    created = comparisons.create_comparison(engine, tmp_path / "data", "p", {"seed": 1}, "ann", False, [image],
                                            [comparisons.OutputInput("m1"), comparisons.OutputInput("m2")])
    ratings.rate(engine, created.output_ids[0], 4, "kept", "ann")
    before = table_rows(engine)
    replicas = [make_engine(unit_test_url(), tmp_path / f"replica-{i}") for i in range(2)]
    errors: list[BaseException] = []

    def start(replica: Engine) -> None:
        try:
            init_db(replica)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(replica,)) for replica in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert schema_revision(engine) == head_revision()
    assert table_rows(engine) == before
    assert schema_drift(engine) == []
