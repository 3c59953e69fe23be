"""Fixtures of the storage tests: a data directory and the store opened in it."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine

from tests.storage.test_postgres import open_unit_store


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def engine(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Engine:
    """SQLite in the data directory; a schema emptied per test when DATABASE_URL names a PostgreSQL database."""
    engine = open_unit_store(data_dir, monkeypatch)
    yield engine
    engine.dispose()
