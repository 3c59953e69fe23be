"""One settings object: every option has its environment variable, flags win, and the README lists them all."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.core.settings import Limits, Settings, environment_variables
from tests.helpers import ROOT


def readme_variables() -> set[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Configuration"):]
    section = section[:section.index("\n## ", 1)]
    table = [line for line in section.splitlines() if line.startswith("| `")]
    return {re.match(r"\| `([A-Z_]+)`", line).group(1) for line in table}


def test_the_readme_configuration_table_lists_exactly_the_settings():
    assert readme_variables() == set(environment_variables())


def test_every_option_is_read_from_its_environment_variable(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("VLM_DATA_DIR", "/srv/playground")
    monkeypatch.setenv("VLM_GENERATION_TIMEOUT_S", "12.5")
    monkeypatch.setenv("VLM_WORKER_THREADS", "3")
    monkeypatch.setenv("VLM_MAX_IMAGE_MB", "0.5")
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://u:p@db/playground")
    settings = Settings()
    assert settings.data_dir == Path("/srv/playground") and settings.generation_timeout_s == 12.5
    assert settings.worker_threads == 3 and settings.database_url.startswith("postgresql")
    assert settings.limits.max_image_bytes == 512 * 1024
    assert Settings.from_args(data_dir="/elsewhere", budget_gb=None).data_dir == Path("/elsewhere")  # a flag wins


def test_a_bad_value_is_refused_with_its_name(monkeypatch: pytest.MonkeyPatch):
    from pydantic import ValidationError

    monkeypatch.setenv("VLM_MAX_IMAGES", "0")
    with pytest.raises(ValidationError, match="max_images"):
        Limits()


def test_an_empty_variable_means_the_default(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DATABASE_URL", "")
    assert Settings().database_url is None
