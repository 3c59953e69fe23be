"""`vlm-playground serve` on a store it cannot use: one line naming the path and the cause, exit
status 2, no traceback, nothing served. Real subprocesses on real files and mounts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from sqlalchemy import text

from app.storage.db import init_db, make_engine
from tests.helpers import ROOT, free_port
from tests.storage.damage import build_rated_store, damage, quick_check
from tests.storage.mounts import fill, tmpfs


def serve(catalog: Path, data_dir: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    return subprocess.run([sys.executable, "-m", "app.cli", "serve", "--models", str(catalog), "--data-dir",
                           str(data_dir), "--port", str(free_port())], capture_output=True, text=True, cwd=ROOT,
                          timeout=120, env={**environment, **(env or {})})


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "VLM Playground on http" not in result.stdout  # it never started serving
    return lines[0]


def test_a_data_directory_that_is_a_file(tiny_catalog_path: Path, tmp_path: Path) -> None:
    (tmp_path / "data").write_text("I am a file")
    line = one_line_error(serve(tiny_catalog_path, tmp_path / "data"))
    assert line == f"error: data directory {tmp_path / 'data'} is a file, not a directory"


def test_a_database_file_full_of_garbage(tiny_catalog_path: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "playground.db").write_bytes(os.urandom(64 * 1024))
    line = one_line_error(serve(tiny_catalog_path, data_dir))
    assert line.startswith(f"error: {data_dir / 'playground.db'} is not a SQLite database (file is not a database)")


def test_a_damaged_database_with_many_ratings(tiny_catalog_path: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    build_rated_store(data_dir)
    damage(data_dir / "playground.db")
    assert quick_check(data_dir / "playground.db") != "ok"
    line = one_line_error(serve(tiny_catalog_path, data_dir))
    assert line.startswith(f"error: {data_dir / 'playground.db'} is damaged")
    assert line.endswith("restore it from a backup")


def test_a_database_from_a_newer_release(tiny_catalog_path: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    engine = make_engine(None, data_dir)
    init_db(engine)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0042_future'"))
    engine.dispose()
    line = one_line_error(serve(tiny_catalog_path, data_dir))
    assert "is at migration 0042_future, which this release does not know" in line


def test_a_database_url_that_cannot_connect(tiny_catalog_path: Path, tmp_path: Path) -> None:
    url = "postgresql+psycopg://vlm:hunter2@127.0.0.1:9/playground"
    line = one_line_error(serve(tiny_catalog_path, tmp_path / "data", env={"DATABASE_URL": url}))
    assert line.startswith("error: cannot use the database postgresql+psycopg://vlm:***@127.0.0.1:9/playground: ")
    assert "Connection refused" in line and "hunter2" not in line


def test_a_read_only_data_directory(tiny_catalog_path: Path, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", 256, read_only=True) as data_dir:
        line = one_line_error(serve(tiny_catalog_path, data_dir))
    assert line == f"error: data directory {data_dir} is not writable (Read-only file system)"


def test_a_full_disk(tiny_catalog_path: Path, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "full", 2048) as data_dir:
        seed = tmp_path / "seed"  # a healthy store, on a disk with no room left
        build_rated_store(seed, count=3, raters=2)
        shutil.copy(seed / "playground.db", data_dir / "playground.db")
        fill(data_dir)
        line = one_line_error(serve(tiny_catalog_path, data_dir))
    assert line.startswith(f"error: data directory {data_dir}: the disk is full (No space left on device; ")
    assert line.endswith("free): free some space and start again")
