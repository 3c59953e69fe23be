"""Real small or read-only file systems for disk-failure tests (tmpfs; the test skips where mounting is
not permitted)."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def tmpfs(where: Path, size_kb: int, read_only: bool = False) -> Iterator[Path]:
    """A tmpfs of `size_kb` KiB mounted on `where` (made empty), unmounted afterwards."""
    where.mkdir(parents=True, exist_ok=True)
    options = f"size={size_kb}k" + (",ro" if read_only else "")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True,
                            text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip() or result.returncode}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(folder: Path, leave_bytes: int = 0) -> Path:
    """Write a filler file in `folder` until its file system has at most `leave_bytes` free."""
    filler = folder / "filler.bin"
    with filler.open("wb", buffering=0) as handle:
        while True:
            stats = os.statvfs(folder)
            room = stats.f_bavail * stats.f_frsize - leave_bytes
            if room <= 0:
                break
            try:
                handle.write(b"\0" * min(room, 1 << 20))
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    return filler
