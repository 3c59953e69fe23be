"""An upload the disk has no room for: DiskFull with a message, and nothing half-written (no row, no
image file, no `.tmp`); the same upload is stored once there is room again."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from sqlalchemy import Engine, func
from sqlmodel import select

from app.storage import comparisons, files
from app.storage.comparisons import OutputInput, StoredImageInput
from app.storage.db import session
from app.storage.files import DiskFull
from app.storage.tables import Comparison, Image, Output
from tests.storage.mounts import fill, tmpfs
from tests.storage.test_postgres import open_unit_store

BIG = StoredImageInput("big.png", os.urandom(300_000), "PNG", 400, 300)
SMALL = StoredImageInput("small.png", b"\x89PNG small", "PNG", 2, 2)


def store(engine: Engine, data_dir: Path, images: list[StoredImageInput]) -> comparisons.CreatedComparison:
    return comparisons.create_comparison(engine, data_dir, "What is this?", {}, "ann", False, images,
                                         [OutputInput("m1")])


def counts(engine: Engine) -> tuple[int, int, int]:
    with session(engine, read_only=True) as db:
        return tuple(db.exec(select(func.count()).select_from(table)).one()  # type: ignore[return-value]
                     for table in (Comparison, Image, Output))


def image_dir_files(data_dir: Path) -> list[str]:
    folder = data_dir / "images"
    return sorted(path.name for path in folder.rglob("*") if path.is_file()) if folder.exists() else []




def test_a_full_tmpfs_refuses_the_upload_and_keeps_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real full disk: the data directory is a 1 MB tmpfs with 64 KB left when a 300 KB image arrives."""
    with tmpfs(tmp_path / "small-disk", 1024) as data_dir:
        engine = open_unit_store(data_dir, monkeypatch)
        kept = store(engine, data_dir, [SMALL])
        before = counts(engine)
        filler = fill(data_dir, leave_bytes=64 * 1024)
        with pytest.raises(DiskFull, match=r"^the server's disk is full: the upload was not stored; free space "
                                           rf"under {data_dir / 'images'} and try again \(No space left on device\)"):
            store(engine, data_dir, [SMALL, BIG])
        assert counts(engine) == before
        assert image_dir_files(data_dir) == [files.image_path(data_dir, kept.image_sha256s[0], "PNG").name]
        filler.unlink()
        stored = store(engine, data_dir, [SMALL, BIG])  # room again: the same upload is stored whole
        assert files.image_path(data_dir, stored.image_sha256s[1]).read_bytes() == BIG.data
        engine.dispose()


def test_a_write_refused_midway_keeps_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stands in for a full disk (or quota) where tmpfs cannot be mounted: the OS write of the image
    file fails with ENOSPC / EDQUOT after part of it is written."""
    data_dir = tmp_path / "data"
    engine = open_unit_store(data_dir, monkeypatch)
    real_write = os.write
    for code in (errno.ENOSPC, errno.EDQUOT):
        calls = {"n": 0}

        def write_then_fail(fd: int, data: bytes | memoryview, code: int = code, calls: dict = calls) -> int:
            calls["n"] += 1
            if calls["n"] > 1:
                raise OSError(code, os.strerror(code))
            return real_write(fd, bytes(data)[:4096])  # a part of the file reached the disk

        monkeypatch.setattr(files.os, "write", write_then_fail)
        with pytest.raises(DiskFull, match=os.strerror(code)):
            store(engine, data_dir, [BIG])
        monkeypatch.setattr(files.os, "write", real_write)
        assert calls["n"] == 2
        assert counts(engine) == (0, 0, 0) and image_dir_files(data_dir) == []
    engine.dispose()
