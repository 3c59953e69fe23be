"""Remote backends: a worker started on its own is an OpenAI-compatible server like vLLM."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import pytest
from openai import OpenAI

from app.core.catalog import parse_catalog
from app.core.generation import Finish, GenerationParams
from app.core.protocol import ImagePart
from app.pool.launcher import ProcessLauncher
from app.pool.pool import ModelPool
from tests.helpers import ROOT, png_bytes

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def standalone_worker(tiny_catalog):
    """`python -m app.worker` run by hand, as an operator would run vLLM on another machine."""
    spec = tiny_catalog.get("tiny-idefics3")
    process = subprocess.Popen([sys.executable, "-m", "app.worker", "--spec-json", spec.model_dump_json(),
                                "--port", "0", "--no-parent-watch"], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    port = None
    for line in process.stdout:
        event = json.loads(line.split(" ", 1)[1])
        if event["event"] == "listening":
            port = event["port"]
        if event["event"] in ("ready", "failed"):
            assert event["event"] == "ready", event
            break
    yield f"http://127.0.0.1:{port}/v1"
    process.terminate()
    process.wait(10)


def test_openai_package_streams_from_a_worker(standalone_worker):
    client = OpenAI(base_url=standalone_worker, api_key="none", max_retries=0)
    assert [m.id for m in client.models.list()] == ["tiny-idefics3"]
    url = "data:image/png;base64," + base64.b64encode(png_bytes((9, 200, 9))).decode()
    stream = client.chat.completions.create(
        model="tiny-idefics3", stream=True, max_tokens=5,
        messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                               {"type": "text", "text": "Describe."}]}])
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and chunks[-1].usage.completion_tokens == 5


async def test_pool_uses_an_endpoint_entry_without_memory_accounting(standalone_worker, tmp_path, monkeypatch):
    monkeypatch.setenv("REMOTE_KEY", "secret-for-the-remote")
    catalog = parse_catalog({"models": [{"id": "far-away", "repo": "tiny-idefics3", "family": "remote",
                                         "endpoint": standalone_worker, "served_model": "tiny-idefics3",
                                         "api_key_env": "REMOTE_KEY", "multi_image": True}]})
    launcher = ProcessLauncher(tmp_path / "logs")
    pool = ModelPool(catalog, launcher, budget_gb=0.1)
    pieces = []
    async with pool.lease("far-away") as backend:
        assert backend._client.headers["authorization"] == "Bearer secret-for-the-remote"
        images = [ImagePart(png_bytes((1, 2, 3))), ImagePart(png_bytes((3, 2, 1)))]
        async for piece in backend.stream("Compare.", images, GenerationParams(max_new_tokens=4)):
            pieces.append(piece)
    assert isinstance(pieces[-1], Finish) and pieces[-1].completion_tokens == 4
    status = pool.status()
    assert status["used_gb"] == 0 and status["resident"] == [] and status["loads"] == 0
    await pool.close()
