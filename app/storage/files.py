"""Image files under the data directory, named by their SHA-256, written atomically."""

from __future__ import annotations

import errno
import os
import re
import tempfile
from pathlib import Path

_SHA256 = re.compile(r"[0-9a-f]{64}")
TEMP_SUFFIX = ".tmp"


_EXTENSIONS = {"jpeg": "jpg", "mpo": "jpg", "tiff": "tif"}


def image_extension(fmt: str) -> str:
    """File extension for a Pillow format name ("JPEG" → "jpg", "PNG" → "png")."""
    ext = re.sub(r"[^a-z0-9]", "", fmt.lower())
    if not ext:
        raise ValueError(f"format: not a usable image format name: {fmt!r}")
    return _EXTENSIONS.get(ext, ext)


def image_path(data_dir: Path, sha256: str, fmt: str | None = None) -> Path:
    """Where the image with this hash lives; without `fmt`, the existing file's path is looked up.

    Raises ValueError for anything that is not a lowercase hex SHA-256 (so URLs cannot escape the
    data directory) and FileNotFoundError when `fmt` is not given and no file is stored.
    """
    if not _SHA256.fullmatch(sha256):
        raise ValueError(f"sha256: expected 64 lowercase hex characters, got {sha256!r}")
    folder = Path(data_dir) / "images" / sha256[:2]
    if fmt is not None:
        return folder / f"{sha256}.{image_extension(fmt)}"
    for candidate in sorted(folder.glob(f"{sha256}.*")):
        return candidate
    raise FileNotFoundError(f"no stored image {sha256}")


class DiskFull(Exception):
    """The disk (or the quota) is full: nothing of the upload was kept."""

    def __init__(self, folder: Path, cause: str) -> None:
        super().__init__(f"the server's disk is full: the upload was not stored; free space under {folder} "
                         f"and try again ({cause})")


def write_temp(final: Path, data: bytes) -> Path:
    """Write `data` durably to a hidden temp file beside `final`; return its path.

    Raises DiskFull when the disk or quota is full (the temp file is removed)."""
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.stem}.", suffix=TEMP_SUFFIX)
    except OSError as exc:
        raise _disk_full(final.parent.parent, exc) or exc from None
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException as exc:
        Path(temp).unlink(missing_ok=True)
        full = _disk_full(final.parent.parent, exc)
        if full is not None:
            raise full from None
        raise
    return Path(temp)


def _disk_full(folder: Path, exc: BaseException) -> DiskFull | None:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(folder, exc.strerror or "no space left")
    return None


def touch(path: Path) -> bool:
    """Mark an existing file as just used (so the start-up sweep keeps it); False if it is gone."""
    try:
        os.utime(path)
    except FileNotFoundError:
        return False
    except OSError:
        return path.exists()
    return True


def _fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (best effort where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(temps: dict[Path, Path]) -> None:
    """Rename each temp file onto its final name (atomic; same content if it already exists)."""
    for final, temp in list(temps.items()):
        os.replace(temp, final)
        del temps[final]
        _fsync_dir(final.parent)


def discard(temps: dict[Path, Path]) -> None:
    """Remove temp files that were not published."""
    for temp in temps.values():
        temp.unlink(missing_ok=True)
