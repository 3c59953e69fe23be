"""Prepared images shared by hash between the server and its local workers, so none is decoded twice.

The server decodes each upload once (the decode that checks it), sizes it for each model, and writes
each prepared image once into its shared folder as a binary PPM: a header such as `P6\\n448 336\\n255\\n`,
then the RGB bytes, named by the SHA-256 of the whole file. A local worker is sent
`vlm-image:sha256:<64 hex>` instead of the image as base64; loading it is a file read and a copy,
not a decode (a 12-megapixel JPEG takes about 57 ms to decode here, its PPM about 16 ms to load). Remote
endpoints, and workers the server gave no folder, still get data: URLs.

A worker reads only a 64-hex name directly inside the folder its server named in `VLM_SHARED_IMAGES`
(a regular file, not followed through a link): nothing a request spells can make it read another
path. The server counts the requests using each file and removes it when the last one ends, so the
folder holds only the images of answers in flight; each server process has a folder of its own, and
what a crash leaves is removed at a later start (`app.storage.sweep.sweep_shared`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import stat
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

from PIL import Image

from app.core.images import ImageError, decode_image
from app.core.protocol import SHA256_HEX, ImagePart

SHARED_ENV = "VLM_SHARED_IMAGES"  # the folder a worker reads shared images from, set by its server
SUFFIX = ".ppm"
_HEADER = re.compile(rb"P6\n([1-9][0-9]{0,5}) ([1-9][0-9]{0,5})\n255\n")
_STRIP_BYTES = 4 << 20  # rows are written in strips of about this size: no full-size copy of the pixels


def shared_folder() -> Path | None:
    """This worker's shared folder, as its server set it; None when it set none."""
    folder = os.environ.get(SHARED_ENV)
    return Path(folder) if folder else None


class SharedImages:
    """A server's shared folder: each prepared image written once, kept while a request uses it."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._uses: Counter[str] = Counter()
        self._lock = threading.Lock()

    def put(self, image: Image.Image) -> str:
        """Write an RGB image (unless the same bytes are there already) and count one more use of it;
        returns its name, the SHA-256 of the file. Each `put` needs one `release`."""
        if image.mode != "RGB":
            raise ValueError(f"a shared image is RGB, not {image.mode}")
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=self.folder, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as file:
                digest = hashlib.sha256()
                for chunk in _ppm_chunks(image):
                    digest.update(chunk)
                    file.write(chunk)
            name = digest.hexdigest()
            with self._lock:
                if self._uses[name] == 0:  # not there (or left by an earlier run of this folder): publish it
                    os.replace(temp, self.folder / f"{name}{SUFFIX}")
                self._uses[name] += 1
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
        return name

    def release(self, name: str) -> None:
        """One use fewer; the file is removed when no request uses it any more."""
        with self._lock:
            self._uses[name] -= 1
            if self._uses[name] > 0:
                return
            del self._uses[name]
            with contextlib.suppress(FileNotFoundError):
                (self.folder / f"{name}{SUFFIX}").unlink()

    def in_use(self) -> dict[str, int]:
        with self._lock:
            return dict(self._uses)

    def remove(self) -> None:
        """Remove the whole folder (the server is stopping: no worker will read it again)."""
        with self._lock:
            self._uses.clear()
            shutil.rmtree(self.folder, ignore_errors=True)


def _ppm_chunks(image: Image.Image) -> Iterator[bytes]:
    """The PPM file of an RGB image: its header, then its rows a strip at a time."""
    width, height = image.size
    yield f"P6\n{width} {height}\n255\n".encode("ascii")
    rows = max(1, _STRIP_BYTES // (3 * width))
    for top in range(0, height, rows):
        strip = image if rows >= height else image.crop((0, top, width, min(height, top + rows)))
        yield strip.tobytes()


def read_shared(folder: Path, name: str, label: str = "image") -> Image.Image:
    """The RGB image a server shared as `name` in `folder`. Raises ImageError (naming `label`) for a
    name that is not 64 lowercase hex digits, a file that is missing, not a regular file, or not a
    complete PPM of ours."""
    if not SHA256_HEX.fullmatch(name):
        raise ImageError(f"{label}: a shared image is named by 64 lowercase hex digits, never a path")
    short = f"{name[:12]}…"
    try:
        fd = os.open(folder / f"{name}{SUFFIX}", os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise ImageError(f"{label}: no shared image {short} in this worker's folder (its request ended, or "
                         "another server shared it); send it as a data: URL") from None
    except OSError as exc:
        raise ImageError(f"{label}: the shared image {short} cannot be read ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ImageError(f"{label}: the shared image {short} is not a regular file")
        header = _HEADER.match(file.read(32))
        if header is None:
            raise ImageError(f"{label}: the shared image {short} is not a PPM of this playground's")
        width, height = int(header[1]), int(header[2])
        if info.st_size != header.end() + 3 * width * height:
            raise ImageError(f"{label}: the shared image {short} is incomplete ({info.st_size:,} bytes for "
                             f"{width}×{height})")
        limit = Image.MAX_IMAGE_PIXELS
        if limit is not None and width * height > 2 * limit:
            raise ImageError(f"{label}: the shared image {short} is too large to load safely "
                             f"({width * height:,} pixels)")
        file.seek(header.end())
        pixels = file.read()
    return Image.frombytes("RGB", (width, height), pixels)


def load_images(parts: Sequence[ImagePart], folder: Path | None = None) -> list[Image.Image]:
    """A worker's images, upright and RGB: shared files read from `folder` (default: the one its server
    set), data: URL bytes decoded. Raises ImageError naming the image ("image 2")."""
    folder = folder if folder is not None else shared_folder()
    images = []
    for index, part in enumerate(parts):
        label = f"image {index + 1}"
        if part.shared is None:
            images.append(decode_image(part.data, label))
        elif folder is None:
            raise ImageError(f"{label}: this worker has no shared folder; send the image as a data: URL")
        else:
            images.append(read_shared(folder, part.shared, label))
    return images
