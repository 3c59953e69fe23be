"""Shared fixtures: tiny checkpoints built once per test run, test images, offline Hub."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All tiny checkpoints and their models.yaml, built once (or reused from VLM_TINY_DIR)."""
    from app.tiny.checkpoints import build_tiny_models

    cached = os.environ.get("VLM_TINY_DIR")
    out = Path(cached) if cached else tmp_path_factory.mktemp("tiny")
    build_tiny_models(out)
    return out


@pytest.fixture(scope="session")
def tiny_catalog_path(tiny_dir: Path) -> Path:
    return tiny_dir / "models.yaml"


@pytest.fixture(scope="session")
def tiny_catalog(tiny_catalog_path: Path):
    from app.core.catalog import load_catalog

    return load_catalog(tiny_catalog_path)


def solid(color: tuple[int, int, int], size: tuple[int, int] = (64, 48)):
    from PIL import Image

    return Image.new("RGB", size, color)


@pytest.fixture
def two_images():
    return [solid((200, 30, 30), (64, 48)), solid((20, 200, 90), (40, 80))]


@pytest.fixture
def image_files(tmp_path: Path, two_images) -> list[Path]:
    paths = []
    for index, image in enumerate(two_images):
        path = tmp_path / f"image{index}.png"
        image.save(path)
        paths.append(path)
    return paths


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """`vlm-playground serve` in a subprocess on a free loopback port."""

    def __init__(self, catalog: Path, data_dir: Path, budget_gb: float = 1.2, extra: list[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        import subprocess
        import sys

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.log = data_dir.parent / f"server-{self.port}.log"
        command = [sys.executable, "-m", "app.cli", "serve", "--models", str(catalog), "--data-dir", str(data_dir),
                   "--port", str(self.port), "--budget-gb", str(budget_gb), *(extra or [])]
        self.process = subprocess.Popen(command, cwd=ROOT, stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
                                        env={**os.environ, **(env or {})})
        self.wait_ready()

    def wait_ready(self, timeout_s: float = 60) -> None:
        import time

        import httpx

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server not ready: {self.log.read_text()[-2000:]}")

    def stop(self, sig: int | None = None) -> int:
        import signal

        if self.process.poll() is None:
            self.process.send_signal(sig or signal.SIGTERM)
            try:
                return self.process.wait(30)
            except Exception:
                self.process.kill()
        return self.process.wait()


@pytest.fixture(scope="session")
def live_server(tiny_catalog_path: Path, tmp_path_factory: pytest.TempPathFactory):
    """One playground server on the tiny models for the API tests (two fit in its budget)."""
    server = LiveServer(tiny_catalog_path, tmp_path_factory.mktemp("live") / "data")
    yield server
    server.stop()


def png_bytes(color: tuple[int, int, int], size: tuple[int, int] = (48, 40)) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()
