"""The playground's own /v1 endpoints, used by the `openai` package, routed through its pool."""

from __future__ import annotations

import base64
import json
import time

import httpx
import pytest
from openai import APIStatusError, OpenAI

from tests.helpers import png_bytes

pytestmark = pytest.mark.slow


def image_part(color=(200, 10, 10)) -> dict:
    data = base64.b64encode(png_bytes(color)).decode()
    return {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}}


@pytest.fixture(scope="module")
def client(live_server) -> OpenAI:
    return OpenAI(base_url=f"{live_server.url}/v1", api_key="unused", max_retries=0)


def messages(*parts) -> list[dict]:
    return [{"role": "user", "content": [*parts, {"type": "text", "text": "Compare the images."}]}]


def test_models_lists_the_catalogue(client):
    ids = {model.id for model in client.models.list()}
    assert {"tiny-qwen2-vl", "tiny-llava", "tiny-paligemma"} <= ids


def test_streamed_answer_with_usage(client):
    two = messages(image_part(), image_part((0, 9, 200)))
    stream = client.chat.completions.create(model="tiny-qwen2-vl", messages=two, max_tokens=6, stream=True,
                                            stream_options={"include_usage": True})
    pieces, usage = [], None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        usage = chunk.usage or usage
    assert "".join(pieces)
    assert usage is not None and 1 <= usage.completion_tokens <= 6 and usage.prompt_tokens > 0


def test_whole_answer_is_deterministic_with_a_seed(client):
    def ask():
        return client.chat.completions.create(model="tiny-idefics3", messages=messages(image_part()), max_tokens=8,
                                              temperature=1.0, seed=11)
    first, again = ask(), ask()
    assert first.choices[0].message.content == again.choices[0].message.content
    assert first.usage.completion_tokens >= 1


def test_unknown_model_is_404(client):
    with pytest.raises(APIStatusError) as caught:
        client.chat.completions.create(model="nope", messages=messages(image_part()), max_tokens=2)
    assert caught.value.status_code == 404 and "nope" in str(caught.value)


def test_remote_urls_are_not_fetched(client):
    part = {"type": "image_url", "image_url": {"url": "http://127.0.0.1:9/x.png"}}
    with pytest.raises(APIStatusError) as caught:
        client.chat.completions.create(model="tiny-llava", messages=messages(part), max_tokens=2)
    assert caught.value.status_code == 400 and "only data: URLs" in str(caught.value)


def raw_chat(live_server, body: dict | str) -> httpx.Response:
    content = body if isinstance(body, str) else json.dumps(body)
    return httpx.post(f"{live_server.url}/v1/chat/completions", content=content,
                      headers={"content-type": "application/json"}, timeout=60)


@pytest.mark.parametrize(("field", "value", "says"), [
    ("seed", 2**64, "seed: must be between 0 and 2147483647"),
    ("temperature", 1e-45, "temperature: must be 0 (greedy) or from 0.01 to 2.0"),
    ("temperature", "warm", "temperature: must be a number"),
    ("top_p", 0, "top_p: must be between 0.01 and 1.0"),
    ("max_tokens", 10**6, "max_tokens: must be between 1 and 2048"),
])
def test_generation_settings_are_checked_as_the_page_checks_them(live_server, field, value, says):
    body = {"model": "tiny-llava", "messages": messages(image_part()), "max_tokens": 2, field: value}
    response = raw_chat(live_server, body)
    assert response.status_code == 422 and says in response.json()["error"]["message"], response.text


def test_a_prompt_over_the_limit_is_refused_before_any_model_sees_it(live_server):
    started = time.monotonic()
    long = [{"role": "user", "content": [image_part(), {"type": "text", "text": "x" * 40_000}]}]
    response = raw_chat(live_server, {"model": "tiny-llava", "messages": long, "max_tokens": 2})
    assert response.status_code == 422, response.text
    assert "prompt: is 40,000 characters; the limit is 4,000" in response.json()["error"]["message"]
    assert time.monotonic() - started < 2


def test_json_nested_a_thousand_deep_is_a_400_not_a_crash(live_server):
    response = raw_chat(live_server, '{"model": "tiny-llava", "messages": ' + "[" * 1000 + "]" * 1000 + "}")
    assert response.status_code == 400 and "nested more than 32 levels" in response.json()["error"]["message"]
    assert raw_chat(live_server, "{not json").status_code == 400
