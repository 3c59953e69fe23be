"""The playground's own /v1 endpoints, used by the `openai` package, routed through its pool."""

from __future__ import annotations

import base64

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


def test_prompt_without_an_image_is_400(client):
    with pytest.raises(APIStatusError) as caught:
        client.chat.completions.create(model="tiny-llava", messages=messages(), max_tokens=2)
    assert caught.value.status_code == 400 and "at least one image" in str(caught.value)


def test_remote_urls_are_not_fetched(client):
    part = {"type": "image_url", "image_url": {"url": "http://127.0.0.1:9/x.png"}}
    with pytest.raises(APIStatusError) as caught:
        client.chat.completions.create(model="tiny-llava", messages=messages(part), max_tokens=2)
    assert caught.value.status_code == 400 and "only data: URLs" in str(caught.value)
