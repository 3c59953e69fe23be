"""The start-up sweep of the image folder: leftovers of uploads a crash cut short, and the prepared
images a crashed server was sharing with its workers."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import select

from app.storage.db import session
from app.storage.files import TEMP_SUFFIX
from app.storage.tables import Image

ORPHAN_AGE_S = 3600.0  # a file no row names is removed once it is this old (an upload may still be committing)


@dataclass(frozen=True)
class SweepReport:
    """What the sweep did: temp files and orphan files removed; stored images whose file is missing."""

    temps_removed: int = 0
    orphans_removed: int = 0
    missing: list[str] = field(default_factory=list)


def sweep_images(engine: Engine, data_dir: Path, orphan_age_s: float = ORPHAN_AGE_S,
                 temp_age_s: float = 0.0) -> SweepReport:
    """Remove `.tmp` files (older than `temp_age_s`) and image files no row names (older than
    `orphan_age_s`) under `data_dir/images`; list the stored images whose file is missing.

    A file is published before its row is committed, so a crash leaves files without rows, never the
    reverse; rows without a file come from older releases or from files removed by hand.
    """
    folder = Path(data_dir) / "images"
    with session(engine, read_only=True) as db:
        stored = set(db.exec(select(Image.sha256)).all())
    now = time.time()
    temps = orphans = 0
    present: set[str] = set()
    for path in sorted(folder.glob("*/*")) if folder.is_dir() else []:
        if not path.is_file():
            continue
        if path.name.startswith(".") and path.name.endswith(TEMP_SUFFIX):
            temps += _remove_if_older(path, now - temp_age_s)
            continue
        sha = path.name.partition(".")[0]
        if sha in stored:
            present.add(sha)
        elif len(sha) == 64 and path.parent.name == sha[:2]:
            orphans += _remove_if_older(path, now - orphan_age_s)
    return SweepReport(temps, orphans, sorted(stored - present))


def _remove_if_older(path: Path, cutoff: float) -> int:
    """Remove the file if it was last changed before `cutoff`; 1 if removed."""
    try:
        if path.stat().st_mtime > cutoff:
            return 0
        path.unlink()
    except FileNotFoundError:
        return 0
    return 1


SHARED_STALE_S = 24 * 3600.0  # a shared-image folder left this long belongs to no running server


def sweep_shared(folder: Path, keep: Path | None = None, stale_s: float = SHARED_STALE_S) -> int:
    """Remove the shared-image folders (`app.core.shared_images`) under `folder` that nothing has changed
    for `stale_s`, except `keep`: what a server that crashed or was killed left. A running server removes
    each file once the requests using it have ended, and its folder when it stops; a folder this old is a
    leftover, or the empty folder of a server idle that long, which makes it again when it next needs it.
    Returns how many were removed."""
    if not folder.is_dir():
        return 0
    cutoff = time.time() - stale_s
    removed = 0
    for path in sorted(folder.iterdir()):
        if path == keep or not path.is_dir() or path.is_symlink():
            continue
        try:
            if path.stat().st_mtime > cutoff:
                continue
        except FileNotFoundError:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed += 1
    return removed
