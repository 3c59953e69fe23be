"""Image files under the data directory, named by their SHA-256, written atomically."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

_SHA256 = re.compile(r"[0-9a-f]{64}")


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


def write_temp(final: Path, data: bytes) -> Path:
    """Write `data` durably to a hidden temp file beside `final`; return its path."""
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return Path(temp)


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
