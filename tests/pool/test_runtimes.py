"""Pinned runtimes, for real: a venv with transformers 4.49 over the app's torch, serving a tiny LLaVA.

Creating the runtime downloads transformers 4.49.0 with its tokenizers and huggingface_hub (~10 s).
Set VLM_RUNTIME_CACHE to a directory to keep the runtime (and the tiny checkpoint) between runs.
"""

from __future__ import annotations

import base64
import io
import json
import os
import queue
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path

import httpx
import pytest

from app.core.catalog import RuntimeSpec
from app.pool.runtimes import DEFAULT, MARKER, RuntimeManager, RuntimePrepareError
from tests.helpers import ROOT

NAME = "tf449"
PIN_VERSION = "4.49.0"
PIN = f"transformers=={PIN_VERSION}"
APP_SITE = sysconfig.get_paths()["purelib"]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def _run(python: str, code: str, cwd: Path) -> dict:
    """Run `code` in `python` (from a directory outside the project) and parse its last line as JSON."""
    result = subprocess.run([python, "-c", code], capture_output=True, text=True, cwd=cwd, env=_env(),
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cached = os.environ.get("VLM_RUNTIME_CACHE")
    return Path(cached) if cached else tmp_path_factory.mktemp("runtime-data")


@pytest.fixture(scope="session")
def prepared(data_dir: Path) -> dict:
    """The runtime, asked for by two threads at once; what each got and every progress line."""
    spec = RuntimeSpec(requirements=[PIN], description="tests")
    manager = RuntimeManager({NAME: spec}, data_dir / "runtimes")
    lines: list[str] = []
    results: list[str | BaseException] = []

    def ask() -> None:
        try:
            results.append(manager.python_for(NAME, progress=lines.append))
        except BaseException as exc:
            results.append(exc)

    started = time.perf_counter()
    threads = [threading.Thread(target=ask) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors and "No matching distribution" in str(errors[0]):
        pytest.skip(f"cannot download {PIN} (offline?): {errors[0]}")
    assert not errors, errors
    return {"manager": manager, "pythons": results, "lines": lines, "seconds": time.perf_counter() - started}


def test_two_callers_create_the_runtime_once(prepared: dict) -> None:
    python = prepared["pythons"][0]
    assert prepared["pythons"] == [python, python]
    assert Path(python).exists() and Path(python).parent.parent == prepared["manager"].path(NAME)
    created = [line for line in prepared["lines"] if line.startswith("creating venv")]
    assert len(created) <= 1  # 0 when reused from VLM_RUNTIME_CACHE
    if created:
        assert any(line.startswith(f"installing {PIN}") for line in prepared["lines"])
        assert "done in" in prepared["lines"][-1]


def test_runtime_has_the_pin_over_the_shared_torch(prepared: dict, tmp_path: Path) -> None:
    code = ("import json, app.worker, torch, transformers; print(json.dumps({'tf': transformers.__version__, "
            "'tf_file': transformers.__file__, 'torch_file': torch.__file__, 'app': app.worker.__file__}))")
    seen = _run(prepared["pythons"][0], code, tmp_path)
    runtime_dir = str(prepared["manager"].path(NAME))
    assert seen["tf"] == PIN_VERSION
    assert seen["tf_file"].startswith(runtime_dir)
    assert seen["torch_file"].startswith(APP_SITE)  # shared, not reinstalled
    assert Path(seen["app"]).resolve() == (ROOT / "app" / "worker" / "__init__.py").resolve()
    assert not list((Path(runtime_dir) / "lib").glob("python*/site-packages/torch"))


def test_runtime_is_small_and_recorded(prepared: dict) -> None:
    manager = prepared["manager"]
    marker = json.loads((manager.path(NAME) / MARKER).read_text())
    assert marker["requirements"] == [PIN]
    assert marker["versions"]["transformers"] == PIN_VERSION
    row = next(r for r in manager.status() if r["name"] == NAME)
    assert row["state"] == "ready" and row["transformers"] == PIN_VERSION
    assert row["size_mb"] < 300, row
    assert not manager.path(NAME).with_name(f"{NAME}.partial").exists()


def test_asking_again_does_not_rebuild(prepared: dict) -> None:
    manager = prepared["manager"]
    created = (manager.path(NAME) / MARKER).read_text()
    lines: list[str] = []
    started = time.perf_counter()
    assert manager.python_for(NAME, progress=lines.append) == prepared["pythons"][0]
    fresh = RuntimeManager(manager.runtimes, manager.root)  # another process's view of the same directory
    assert fresh.python_for(NAME, progress=lines.append) == prepared["pythons"][0]
    assert time.perf_counter() - started < 1.0
    assert lines == [] and (manager.path(NAME) / MARKER).read_text() == created


def test_default_is_the_app_interpreter(tmp_path: Path) -> None:
    manager = RuntimeManager({}, tmp_path / "runtimes")
    assert manager.python_for(DEFAULT) == sys.executable
    assert not (tmp_path / "runtimes").exists()
    with pytest.raises(RuntimePrepareError, match="'nope'.*unknown runtime"):
        manager.python_for("nope")


def test_a_bad_pin_fails_and_leaves_nothing(tmp_path: Path) -> None:
    root = tmp_path / "runtimes"
    manager = RuntimeManager({"broken": RuntimeSpec(requirements=["transformers==0.0.0-nonexistent"])}, root)
    with pytest.raises(RuntimePrepareError) as caught:
        manager.python_for("broken")
    message = str(caught.value)
    assert "runtime 'broken'" in message and "transformers==0.0.0-nonexistent" in message
    assert "ERROR:" in message
    assert not (root / "broken").exists() and not (root / "broken.partial").exists()
    assert manager.state("broken").startswith("failed: pip install")


def test_a_failed_rebuild_keeps_the_working_runtime(prepared: dict) -> None:
    root = prepared["manager"].root
    marker = (root / NAME / MARKER).read_text()
    changed = RuntimeManager({NAME: RuntimeSpec(requirements=["transformers==0.0.0-nonexistent"])}, root)
    assert changed.state(NAME) == "outdated"
    with pytest.raises(RuntimePrepareError, match=f"runtime '{NAME}'"):
        changed.python_for(NAME)
    assert (root / NAME / MARKER).read_text() == marker and not (root / f"{NAME}.partial").exists()
    assert prepared["manager"].python_for(NAME) == prepared["pythons"][0]


def test_status_lists_every_state(prepared: dict) -> None:
    root = prepared["manager"].root
    later = RuntimeSpec(requirements=["transformers==4.53.3"], description="x")
    manager = RuntimeManager({NAME: RuntimeSpec(requirements=[PIN]), "later": later}, root)
    rows = {row["name"]: row for row in manager.status()}
    assert list(rows) == [DEFAULT, NAME, "later"]
    assert rows[DEFAULT]["state"] == "ready" and rows[DEFAULT]["path"] == sys.prefix
    assert rows[NAME]["state"] == "ready"
    assert rows["later"] == {"name": "later", "requirements": ["transformers==4.53.3"], "description": "x",
                             "state": "not created", "path": str(root / "later"), "transformers": None,
                             "size_mb": None}
    changed = RuntimeManager({NAME: RuntimeSpec(requirements=[PIN, "tokenizers"])}, root)
    assert changed.state(NAME) == "outdated" and not changed.is_ready(NAME)


def test_cli_lists_and_prepares(prepared: dict, data_dir: Path, tmp_path: Path, capsys) -> None:
    import app.cli.main as cli

    catalog = tmp_path / "models.yaml"
    catalog.write_text(f"runtimes:\n  {NAME}:\n    requirements: ['{PIN}']\n    description: tests\n"
                       "models: []\n")
    common = ["--models", str(catalog), "--data-dir", str(data_dir)]
    assert cli.main(["runtimes", *common, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["state"]) for r in rows] == [(DEFAULT, "ready"), (NAME, "ready")]
    assert cli.main(["runtimes", *common]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["name", "state", "transformers"] and PIN_VERSION in table[2]
    assert cli.main(["runtimes", "prepare", NAME, *common]) == 0
    assert capsys.readouterr().out.strip() == prepared["pythons"][0]
    assert cli.main(["runtimes", "prepare", "nope", *common]) == 2
    assert "unknown runtime" in capsys.readouterr().err


def _png() -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _read_events(process: subprocess.Popen, events: queue.Queue) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("VLM-WORKER "):
            events.put(json.loads(line.removeprefix("VLM-WORKER ")))
    events.put({"event": "exited"})


def _wait_for(events: queue.Queue, wanted: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        event = events.get(timeout=max(0.1, deadline - time.monotonic()))
        if event["event"] in (wanted, "failed", "exited"):
            assert event["event"] == wanted, event
            return event


@pytest.mark.slow
def test_worker_serves_a_tiny_llava_in_the_runtime(prepared: dict, data_dir: Path, tmp_path: Path) -> None:
    python = prepared["pythons"][0]
    checkpoint = data_dir / f"tiny-llava-{PIN_VERSION}"
    build = subprocess.run([python, "-m", "app.tiny.tiny4x", str(checkpoint)], capture_output=True, text=True,
                           cwd=tmp_path, env=_env(), timeout=120)
    assert build.returncode == 0, build.stderr[-2000:]
    assert json.loads((checkpoint / "config.json").read_text())["transformers_version"] == PIN_VERSION
    spec = {"id": "tiny-llava-4x", "repo": str(checkpoint), "family": "llava", "min_gpu_gb": 0.5,
            "dtype": "float32", "multi_image": True, "tiny": True, "runtime": NAME}
    worker = subprocess.Popen(  # as the pool starts every worker: a spare, then told its model
        [python, "-m", "app.worker", "--spare", "--warm", "llava", "--port", "0", "--device", "cpu",
         "--no-parent-watch"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True, cwd=tmp_path,
        env={**_env(), "HF_HUB_OFFLINE": "1"})
    try:
        events: queue.Queue = queue.Queue()
        threading.Thread(target=_read_events, args=(worker, events), daemon=True).start()
        port = _wait_for(events, "listening", 60)["port"]
        assert _wait_for(events, "spare", 90)["overhead"]["host_bytes"] > 0
        loaded = httpx.post(f"http://127.0.0.1:{port}/load", json=spec, timeout=90)
        assert loaded.status_code == 200, loaded.text
        assert loaded.json()["runtime"]["transformers"] == PIN_VERSION
        content = [{"type": "image_url", "image_url": {"url": _png()}},
                   {"type": "text", "text": "Describe this image."}]
        body = {"model": "tiny-llava-4x", "stream": False, "max_tokens": 4,
                "messages": [{"role": "user", "content": content}]}
        response = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=60)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert isinstance(answer["choices"][0]["message"]["content"], str)
        assert answer["usage"]["completion_tokens"] > 0 and answer["usage"]["prompt_tokens"] > 16
    finally:
        worker.kill()
        worker.wait(timeout=10)
