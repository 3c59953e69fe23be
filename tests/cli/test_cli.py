"""The `vlm-playground` command as a person runs it: real subprocesses, real files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from app.tiny.checkpoints import BUILDERS
from tests.helpers import ROOT


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True, text=True, cwd=ROOT,
                            timeout=300)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def run_json(catalog: Path, model: str, images: list[Path], *extra: str) -> dict:
    args = ["run", "--models", str(catalog), "--model", model, "--prompt", "Compare the images.", "--json",
            "--max-new-tokens", "6", *extra]
    for image in images:
        args += ["--image", str(image)]
    return json.loads(cli(*args).stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("family", list(BUILDERS))
def test_run_answers_a_two_image_prompt(tiny_catalog_path, image_files, family):
    result = run_json(tiny_catalog_path, f"tiny-{family.replace('_', '-')}", image_files)
    assert result["text"] and 1 <= result["tokens"] <= 6
    assert 0 < result["ttft_s"] <= result["total_s"]


def test_seeded_run_repeats_its_text_exactly(tiny_catalog_path, image_files):
    sampled = ("--temperature", "1.0", "--seed", "42")
    first = run_json(tiny_catalog_path, "tiny-idefics3", image_files, *sampled)
    again = run_json(tiny_catalog_path, "tiny-idefics3", image_files, *sampled)
    assert first["text"] == again["text"]


def test_run_streams_text_to_the_terminal(tiny_catalog_path, image_files):
    result = cli("run", "--models", str(tiny_catalog_path), "--model", "tiny-paligemma", "--prompt", "caption en",
                 "--image", str(image_files[0]), "--image", str(image_files[1]), "--max-new-tokens", "4")
    assert len(result.stdout) > 1 and result.stdout.endswith("\n")  # the answer, then a newline
    assert "combined into one 2×1 grid" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "nope"], "error: unknown model 'nope' (known: tiny-llava"),
        (["--image", "/no/such/file.png"], "error: /no/such/file.png: cannot read (No such file or directory)"),
    ],
)
def test_run_errors_are_one_clear_line(tiny_catalog_path, image_files, args, message):
    base = {"--model": "tiny-llava", "--image": str(image_files[0])}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    flat = [item for pair in base.items() for item in pair]
    result = cli("run", "--models", str(tiny_catalog_path), "--prompt", "hi", *flat, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().startswith(message)
    assert "Traceback" not in result.stderr


def test_run_refuses_a_file_that_is_not_an_image(tiny_catalog_path, tmp_path):
    fake = tmp_path / "photo.png"
    fake.write_text("not really a picture")
    result = cli("run", "--models", str(tiny_catalog_path), "--model", "tiny-llava", "--prompt", "hi",
                 "--image", str(fake), check=False)
    assert result.returncode == 2 and "photo.png: not a readable image" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_explains_a_model_that_cannot_be_downloaded(image_files):
    """The real catalogue's models are not cached here and the Hub is offline."""
    result = cli("run", "--models", str(ROOT / "models.yaml"), "--model", "smolvlm-instruct", "--prompt", "hi",
                 "--image", str(image_files[0]), check=False)
    assert result.returncode == 2
    assert "error: cannot load smolvlm-instruct: HuggingFaceTB/SmolVLM-Instruct is not in the local" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_refuses_an_unavailable_model(image_files):
    result = cli("run", "--models", str(ROOT / "models.yaml"), "--model", "mm1.5-1b", "--prompt", "hi",
                 "--image", str(image_files[0]), check=False)
    assert result.returncode == 2 and "mm1.5-1b is unavailable: " in result.stderr


def test_models_json_lists_the_catalogue(tmp_path):
    rows = json.loads(cli("models", "--json", "--data-dir", str(tmp_path)).stdout)
    by_id = {row["id"]: row for row in rows}
    required = {"id", "repo", "family", "min_gpu_gb", "min_gpu_gb_source", "languages", "multi_image",
                "trust_remote_code", "runtime", "available", "planned_gb", "measured_gb"}
    assert all(required <= set(row) for row in rows)
    assert by_id["qwen2-vl-2b"]["min_gpu_gb"] == 13.70 and by_id["qwen2-vl-2b"]["min_gpu_gb_source"] == "seed"
    assert by_id["qwen2-vl-2b"]["input_budget"] == {"context_tokens": 32768, "max_images": None,
                                                    "min_pixels": 3136, "max_pixels": 1003520}
    assert by_id["llava-1.5-7b"]["input_budget"]["context_tokens"] == 4096
    assert by_id["moondream2"]["input_budget"]["max_images"] == 1
    assert by_id["moondream2"]["capabilities"] == {"sampling": False, "seed": True, "streaming": True}
    assert by_id["minicpm-v-2.6"]["capabilities"]["sampling"] is True
    table = cli("models", "--data-dir", str(tmp_path)).stdout
    assert "greedy only" in next(row for row in table.splitlines() if row.startswith("moondream2 "))


def test_models_table_shows_planned_and_measured(tmp_path):
    from app.storage.db import init_db, make_engine
    from app.storage.sizes import save_measured_size

    engine = make_engine(None, tmp_path)
    init_db(engine)
    save_measured_size(engine, "smolvlm-instruct", 6.5)
    engine.dispose()
    table = cli("models", "--data-dir", str(tmp_path)).stdout
    line = next(row for row in table.splitlines() if row.startswith("smolvlm-instruct "))
    assert "5.02" in line and "6.50" in line and "seed" in line


def test_tiny_models_command_builds_a_catalogue(tmp_path):
    result = cli("tiny-models", str(tmp_path), "--only", "llava")
    assert "models.yaml" in result.stdout
    assert (tmp_path / "llava" / "config.json").exists()
    assert "tiny-llava" in (tmp_path / "models.yaml").read_text()
