"""The start-up sweep over a real image folder: what an interrupted upload leaves behind."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from sqlalchemy import Engine

from app.storage import comparisons, files
from app.storage.comparisons import OutputInput, StoredImageInput
from app.storage.sweep import ORPHAN_AGE_S, sweep_images

CAT = StoredImageInput("cat.png", b"\x89PNG a cat", "PNG", 4, 3)
DOG = StoredImageInput("dog.jpg", b"\xff\xd8 a dog", "JPEG", 8, 6)


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def leftover(data_dir: Path, data: bytes, fmt: str = "PNG") -> Path:
    """An image file published by an upload that never committed its rows."""
    final = files.image_path(data_dir, hashlib.sha256(data).hexdigest(), fmt)
    final.parent.mkdir(parents=True, exist_ok=True)
    final.write_bytes(data)
    return final


def test_the_sweep_removes_leftovers_and_reports_missing_files(engine: Engine, data_dir: Path) -> None:
    cat, dog = (comparisons.create_comparison(engine, data_dir, "p", {}, "ann", False, [image], [OutputInput("m")])
                for image in (CAT, DOG))
    cat_file = files.image_path(data_dir, cat.image_sha256s[0])
    age(cat_file, 10 * ORPHAN_AGE_S)  # old and named by a row: kept
    files.image_path(data_dir, dog.image_sha256s[0]).unlink()  # a row whose file is gone
    temp = files.write_temp(files.image_path(data_dir, "ab" * 32, "PNG"), b"half an upload")
    old_orphan = leftover(data_dir, b"an upload that crashed before its commit, long ago")
    age(old_orphan, ORPHAN_AGE_S + 60)
    fresh_orphan = leftover(data_dir, b"an upload committing right now", "JPEG")
    stranger = data_dir / "images" / "README.txt"
    stranger.write_text("not ours to remove")

    report = sweep_images(engine, data_dir)

    assert (report.temps_removed, report.orphans_removed, report.missing) == (1, 1, [dog.image_sha256s[0]])
    assert not temp.exists() and not old_orphan.exists()
    assert cat_file.exists() and fresh_orphan.exists() and stranger.exists()
    assert sweep_images(engine, data_dir).temps_removed == 0  # a second sweep finds nothing more


def test_a_recent_temp_file_is_kept_when_asked(engine: Engine, data_dir: Path) -> None:
    """On a shared server database another replica may be writing: only old temp files go."""
    temp = files.write_temp(files.image_path(data_dir, "cd" * 32, "PNG"), b"in flight")
    assert sweep_images(engine, data_dir, temp_age_s=ORPHAN_AGE_S).temps_removed == 0 and temp.exists()
    age(temp, ORPHAN_AGE_S + 1)
    assert sweep_images(engine, data_dir, temp_age_s=ORPHAN_AGE_S).temps_removed == 1 and not temp.exists()


def test_an_empty_data_directory_is_fine(engine: Engine, data_dir: Path) -> None:
    assert sweep_images(engine, data_dir) == sweep_images(engine, data_dir / "nothing-here")
