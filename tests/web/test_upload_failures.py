"""Uploads the real server must refuse or repair, never answer with a 500: a disk with no room (a real
tmpfs as the data directory) and file names holding NUL and other control characters."""

from __future__ import annotations

import io
import os
import uuid
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.helpers import LiveServer
from tests.storage.mounts import fill, tmpfs

pytestmark = pytest.mark.slow  # the last upload runs a tiny model's worker
MODEL = "tiny-qwen2-vl"


def noise_png(side: int = 320) -> bytes:
    """A PNG that does not compress: about 300 KB."""
    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(buffer, format="PNG")
    return buffer.getvalue()


def multipart(files: list[tuple[bytes, bytes]], fields: dict[str, str]) -> tuple[bytes, str]:
    """A multipart body written byte for byte, so file names reach the server exactly as given."""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
             for name, value in fields.items()]
    for filename, data in files:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="images"; filename="'.encode()
                     + filename + b'"\r\nContent-Type: image/png\r\n\r\n' + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def post(server: LiveServer, files: list[tuple[bytes, bytes]]) -> httpx.Response:
    body, content_type = multipart(files, {"prompt": "What is this?", "models": MODEL, "max_new_tokens": "2"})
    return httpx.post(f"{server.url}/api/comparisons", content=body, headers={"Content-Type": content_type},
                      timeout=300)


def stored(data_dir: Path) -> list[str]:
    return sorted(path.name for path in (data_dir / "images").rglob("*") if path.is_file()) \
        if (data_dir / "images").exists() else []


def total(server: LiveServer) -> int:
    return httpx.get(f"{server.url}/api/comparisons").json()["total"]


def test_a_full_disk_is_a_507_and_odd_file_names_are_cleaned(tiny_catalog_path: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    big = noise_png()
    with tmpfs(tmp_path / "disk", 16 * 1024) as data_dir:
        server = LiveServer(tiny_catalog_path, data_dir)
        try:
            filler = fill(data_dir, leave_bytes=64 * 1024)
            refused = post(server, [(b"big.png", big)])
            assert refused.status_code == 507, refused.text
            assert refused.json()["detail"].startswith(
                "the server's disk is full: the upload was not stored; free space under ")
            assert total(server) == 0 and stored(data_dir) == []  # no row, no file, no .tmp
            filler.unlink()

            names = [b"cat\x00.png", b"\x1b[31mred\x07\x7f.png", "tab\there\u0085.png".encode(), b"../../etc/x.png"]
            answer = post(server, [(names[0], big), *((name, noise_png(40)) for name in names[1:])])
            assert answer.status_code == 201, answer.text  # a NUL in a file name was a 500
            assert [image["name"] for image in answer.json()["images"]] == \
                ["cat.png", "[31mred.png", "tabhere.png", "../../etc/x.png"]
            shas = [image["sha256"] for image in answer.json()["images"]]
            assert stored(data_dir) == sorted(f"{sha}.png" for sha in shas)  # files are named by hash only
            assert not (tmp_path / "etc").exists() and not (data_dir.parent / "etc").exists()
            assert httpx.get(f"{server.url}/images/{shas[0]}").content == big
        finally:
            server.stop()
    assert "Traceback" not in server.log.read_text()
