"""Fixtures: tiny checkpoints built once per test run, test images, one live server, offline Hub.

Helpers live in `tests/helpers.py`; nothing is imported from here.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import LiveServer, solid

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Budgets in the tests count tiny models at their catalogue figure (0.5 GB each), so that "two fit, three do not"
# holds on any machine; the overhead a worker measures (0.4–0.9 GB here) is planned in tests/pool/test_spares.py.
os.environ.setdefault("VLM_OVERHEAD_GB", "0")


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


@pytest.fixture(scope="session")
def live_server(tiny_catalog_path: Path, tmp_path_factory: pytest.TempPathFactory):
    """One playground server on the tiny models for the API tests (two fit in its budget)."""
    server = LiveServer(tiny_catalog_path, tmp_path_factory.mktemp("live") / "data")
    yield server
    server.stop()
