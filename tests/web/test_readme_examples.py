"""The README as a newcomer uses it: `make demo PORT=…`, then its curl and `openai` examples as written (only
the port differs), and no link that leaves the repository."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch

from app.cli.main import DEMO_BUDGET_GB
from app.tiny.words import PUNCTUATION, WORDS
from tests.helpers import ROOT, free_port, solid

pytestmark = pytest.mark.slow
README = (ROOT / "README.md").read_text(encoding="utf-8")
EXAMPLES = "The examples below run as written against `make demo`"
BASE = "http://127.0.0.1:8000"


def blocks_after(marker: str, language: str) -> list[str]:
    """The fenced blocks of `language` between `marker` and the next heading."""
    section = README[README.index(marker):]
    section = section[:section.index("\n## ")]
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.S)


def assert_words(text: str) -> None:
    assert text.strip() and "\ufffd" not in text, repr(text)
    assert all(word.strip("".join(PUNCTUATION)) in WORDS for word in text.split()), repr(text)


@pytest.fixture(scope="module")
def demo(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """`make demo PORT=…` with its data in a scratch folder (the tiny checkpoints copied there, as a first
    run would have built them); the install step is taken as done (-o), the venv being this one."""
    data = tmp_path_factory.mktemp("demo") / "data"
    shutil.copytree(tiny_dir, data / "tiny")
    port = free_port()
    log = data.parent / "demo.log"
    make = subprocess.Popen(["make", "-o", ".venv/.installed", "demo", f"PORT={port}"], cwd=ROOT,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "VLM_DATA_DIR": str(data), "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert make.poll() is None, log.read_text()[-2000:]
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.3)
    yield url, port
    os.killpg(make.pid, signal.SIGTERM)  # make and the server it started
    try:
        make.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(make.pid, signal.SIGKILL)


@pytest.fixture
def pictures(tmp_path: Path) -> Path:
    solid((230, 40, 40), (64, 48)).save(tmp_path / "a.jpg", quality=90)
    solid((40, 40, 230), (48, 64)).save(tmp_path / "b.jpg", quality=90)
    return tmp_path


def test_make_demo_serves_the_demo_on_the_port_it_was_given(demo):
    url, port = demo
    assert url.endswith(f":{port}") and httpx.get(f"{url}/health").json()["status"] == "ok"
    ids = {model["id"] for model in httpx.get(f"{url}/api/models").json()}
    assert {"tiny-qwen2-vl", "tiny-idefics3"} <= ids
    if not torch.cuda.is_available():  # the budget `demo --help` states
        assert httpx.get(f"{url}/api/pool").json()["budget_gb"] == pytest.approx(DEMO_BUDGET_GB)
    help_text = subprocess.run([sys.executable, "-m", "app.cli", "demo", "--help"], capture_output=True, text=True,
                               cwd=ROOT, check=True).stdout
    assert f"{DEMO_BUDGET_GB:g} GB" in " ".join(help_text.split())


def test_the_curl_examples_run_as_written(demo, pictures):
    url, _ = demo
    (script,) = blocks_after(EXAMPLES, "sh")
    assert shutil.which("curl"), "the examples need curl"
    assert script.count(BASE) == 4
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script.replace(BASE, url)], cwd=pictures,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out, documents, at = done.stdout, [], 0
    first_line, at = out[:out.index("\n")], out.index("\n") + 1
    decoder = json.JSONDecoder()
    while at < len(out):
        document, at = decoder.raw_decode(out, at)
        documents.append(document)
    available = ast.literal_eval(first_line)  # the list Python printed
    assert {"tiny-qwen2-vl", "tiny-idefics3"} <= set(available)
    comparison, vote = documents
    assert [o["model"] for o in comparison["outputs"]] == ["tiny-qwen2-vl", "tiny-idefics3"]
    assert all(o["status"] == "done" for o in comparison["outputs"]), comparison
    for output in comparison["outputs"]:
        assert_words(output["text"])
    assert {p["model"] for p in vote["panels"]} <= set(available) and len(vote["panels"]) == 2, vote


def test_the_openai_example_runs_as_written(demo, pictures):
    url, _ = demo
    (program,) = blocks_after(EXAMPLES, "python")
    assert program.count(BASE) == 1
    done = subprocess.run([sys.executable, "-c", program.replace(BASE, url)], cwd=pictures, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    answer, models = done.stdout.rstrip("\n").split("\n")
    assert_words(answer)
    assert "tiny-qwen2-vl" in models


def test_no_link_or_path_in_the_readme_leaves_the_repository():
    assert "../" not in README
    for target in re.findall(r"\]\(([^)#\s]+)", README):
        if not target.startswith(("http://", "https://")):
            assert (ROOT / target).exists(), target
