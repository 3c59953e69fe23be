"""Images on their way through the server: the gateway checks them in a thread (the event loop keeps
answering), its JSON guard is fast on a long base64 string, and the prepared files the server shares
with its workers are gone once the answers are."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from app.compare.validation import InputError
from app.core.protocol import ProtocolError
from app.core.settings import Settings
from app.web.deps import Services
from app.web.routes import gateway


def chat_body(data: bytes, model: str = "tiny-qwen2-vl", **extra: object) -> dict:
    url = f"data:image/png;base64,{base64.b64encode(data).decode()}"
    return {"model": model, "max_tokens": 2, **extra,
            "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                                      {"type": "text", "text": "What is it?"}]}]}


def png(size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise(size, 60).convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def test_health_answers_while_the_gateway_is_checking_an_image(monkeypatch, tiny_catalog):
    """The check is held until /health has answered: were it on the event loop, /health could not."""
    checking, answered = threading.Event(), threading.Event()

    def held_check(*args: object, **kwargs: object) -> None:
        checking.set()
        if not answered.wait(20):
            raise AssertionError("/health did not answer while the image was being checked")
        raise InputError("images", "stopped here by the test")

    monkeypatch.setattr(gateway, "check_images", held_check)
    app = FastAPI()
    app.include_router(gateway.router)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    app.state.services = Services(Settings(), tiny_catalog, engine=None, pool=None,  # type: ignore[arg-type]
                                  runner=SimpleNamespace(shared=None),  # type: ignore[arg-type]
                                  reachability={spec.id: None for spec in tiny_catalog.models})
    with TestClient(app) as client:
        result: dict[str, httpx.Response] = {}
        asking = threading.Thread(target=lambda: result.update(
            chat=client.post("/v1/chat/completions", json=chat_body(png()))))
        asking.start()
        assert checking.wait(20), "the check never started"
        started = time.monotonic()
        assert client.get("/health").status_code == 200
        waited = time.monotonic() - started
        answered.set()
        asking.join(30)
    assert result["chat"].status_code == 422 and "stopped here by the test" in result["chat"].text
    assert waited < 5


def reference_depth(body: bytes) -> int:
    """The byte-by-byte count the gateway used before (brackets outside strings)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


@pytest.mark.parametrize("body", [
    b'{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}',  # brackets in a string do not count
    b'{"a": "say \\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\\" twice"}',  # nor after an escaped quote
    b'{"a": "ends with a backslash \\\\", "b": ' + b"[" * 40 + b"]" * 40 + b"}",  # \\ then " closes it
    b'{"a": "\\\\\\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}',  # \\\\ \\" : still inside
    b"[" * 33 + b"]" * 33,
    b"[" * 32 + b"]" * 32,
    b'["unterminated ' + b"[" * 40,
])
def test_the_json_guard_counts_nesting_as_before(body):
    too_deep = reference_depth(body) > gateway.MAX_JSON_DEPTH
    try:
        gateway._json(body)
    except ProtocolError as exc:
        assert too_deep == ("nested more than" in str(exc)), exc
    else:
        assert not too_deep


def test_the_json_guard_is_quick_on_an_image_sized_string():
    body = json.dumps(chat_body(bytes(3_000_000))).encode()  # 4 MB of base64
    started = time.perf_counter()
    assert gateway._json(body)["model"] == "tiny-qwen2-vl"
    assert time.perf_counter() - started < 0.5  # was 0.3 s of pure Python over every byte


def shared_files(data_dir: Path) -> list[Path]:
    return list((data_dir / "shared").glob("*/*"))


def wait_until_empty(data_dir: Path, timeout_s: float = 10) -> list[Path]:
    deadline = time.monotonic() + timeout_s
    while (left := shared_files(data_dir)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@pytest.mark.slow
def test_a_comparison_of_two_models_shares_each_prepared_image_and_leaves_none_behind(live_server):
    data = png((900, 700))
    response = httpx.post(f"{live_server.url}/api/comparisons", timeout=300,
                          files=[("images", ("noise.png", data, "image/png"))],
                          data={"prompt": "What is it?", "models": ["tiny-llava", "tiny-qwen2-vl"],
                                "max_new_tokens": "2"})
    assert response.status_code == 201, response.text
    outputs = {output["model"]: output for output in response.json()["outputs"]}
    assert all(output["status"] == "done" for output in outputs.values()), outputs
    assert "noise.png 900×700 → 432×336" in outputs["tiny-llava"]["image_note"]
    assert "noise.png 900×700 → 64×49" in outputs["tiny-qwen2-vl"]["image_note"]
    assert wait_until_empty(live_server.data_dir) == []
    chat = httpx.post(f"{live_server.url}/v1/chat/completions", json=chat_body(data), timeout=300)
    assert chat.status_code == 200, chat.text
    assert wait_until_empty(live_server.data_dir) == []
