"""The command line tells a newcomer the truth: every `--help` default, and availability as the server decides it."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from app.cli.main import DEMO_BUDGET_GB, build_parser
from app.core.settings import Settings, environment_variables
from tests.helpers import CATALOGUE, ROOT, LiveServer


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=300, env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr
    return done


def commands() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def help_of(action: argparse.Action, parser: argparse.ArgumentParser) -> str:
    return " ".join((parser._get_formatter()._expand_help(action) if action.help else "").split())


@pytest.mark.parametrize("name", sorted(commands()))
def test_every_stated_default_is_the_one_used(name):
    """Each option with a value of its own states it; each `$VARIABLE` named is one the settings read; an
    option whose value comes from the settings names its variable and the settings' default."""
    parser = commands()[name]
    variables = environment_variables()
    for action in parser._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS or action.dest == "help":
            continue
        text = help_of(action, parser)
        if action.default not in (None, False, ""):
            assert f"default: {action.default}" in text, f"{name} {action.option_strings[0]}: {text!r}"
        for variable in re.findall(r"\$([A-Z_]+)", text):
            assert variable in variables or variable == "VLM_AUTH_TOKEN", f"{name}: ${variable} is read by nothing"
    by_flag = {a.option_strings[0]: help_of(a, parser) for a in parser._actions if a.option_strings}
    if "--data-dir" in by_flag:
        assert f"$VLM_DATA_DIR, else ./{Settings.model_fields['data_dir'].default}" in by_flag["--data-dir"]
    if "--models" in by_flag:
        assert f"$VLM_MODELS, else {Settings.model_fields['models_path'].default}" in by_flag["--models"]


def test_the_budget_defaults_stated_are_the_settings_and_the_demos():
    serve, demo = (help_of(next(a for a in commands()[n]._actions if a.dest == "budget_gb"), commands()[n])
                   for n in ("serve", "demo"))
    assert f"$VLM_CPU_BUDGET_GB, else {Settings.model_fields['cpu_budget_gb'].default:g} GB" in serve
    assert f"without a GPU {DEMO_BUDGET_GB:g} GB" in demo and "$VLM_BUDGET_GB" in demo


def test_models_reads_the_catalogue_named_by_vlm_models(tiny_catalog_path, tmp_path):
    rows = json.loads(cli("models", "--json", "--data-dir", str(tmp_path),
                          env={"VLM_MODELS": str(tiny_catalog_path)}).stdout)
    catalogue = yaml.safe_load(tiny_catalog_path.read_text())["models"]
    assert {row["id"] for row in rows} == {spec["id"] for spec in catalogue}


@pytest.fixture
def mixed_catalogue(tiny_dir: Path, tmp_path: Path) -> Path:
    """A tiny checkpoint on disk, Hub models not in the local cache (one gated), one with no weights at all."""
    real = {m["id"]: m for m in yaml.safe_load(CATALOGUE.read_text())["models"]}
    tiny = yaml.safe_load((tiny_dir / "models.yaml").read_text())["models"][0]
    tiny["repo"] = str(tiny_dir / tiny["repo"])
    missing_tiny = {**tiny, "id": "tiny-gone", "repo": str(tmp_path / "gone")}
    models = [tiny, missing_tiny, real["qwen2-vl-2b"], real["llama-3.2-11b-vision"], real["mm1.5-1b"]]
    path = tmp_path / "mixed.yaml"
    path.write_text(yaml.safe_dump({"models": models}))
    return path


@pytest.mark.slow
def test_models_agrees_with_the_server_on_availability_offline(mixed_catalogue, tmp_path):
    offline = {"HF_HUB_OFFLINE": "1"}
    server = LiveServer(mixed_catalogue, tmp_path / "data", env=offline)
    try:
        served = {m["id"]: (m["available"], m["unavailable_reason"])
                  for m in httpx.get(f"{server.url}/api/models").json()}
    finally:
        server.stop()
    listed = {row["id"]: (row["available"], row["unavailable_reason"]) for row in
              json.loads(cli("models", "--json", "--models", str(mixed_catalogue), "--data-dir", str(tmp_path / "data"),
                             env=offline).stdout)}
    assert listed == served
    assert [model for model, (available, _) in listed.items() if available] == ["tiny-llava"]
    assert "not in the local Hugging Face cache" in listed["qwen2-vl-2b"][1]
    table = cli("models", "--models", str(mixed_catalogue), "--data-dir", str(tmp_path / "data"), env=offline).stdout
    status = {line.split()[0]: line.split()[-1] for line in table.splitlines()[1:6]}
    assert status == {"tiny-llava": "ok", "tiny-gone": "unavailable", "qwen2-vl-2b": "unavailable",
                      "llama-3.2-11b-vision": "unavailable", "mm1.5-1b": "unavailable"}
    assert "  qwen2-vl-2b: not in the local Hugging Face cache, and the Hub is offline (HF_HUB_OFFLINE=1)" in table
