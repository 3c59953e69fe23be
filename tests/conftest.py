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
    from app.tiny import build_tiny_models

    cached = os.environ.get("VLM_TINY_DIR")
    out = Path(cached) if cached else tmp_path_factory.mktemp("tiny")
    build_tiny_models(out)
    return out


@pytest.fixture(scope="session")
def tiny_catalog_path(tiny_dir: Path) -> Path:
    return tiny_dir / "models.yaml"


@pytest.fixture(scope="session")
def tiny_catalog(tiny_catalog_path: Path):
    from app.catalog import load_catalog

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
