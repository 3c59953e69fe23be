"""Issue 14 item 11: OpenAI clients send messages of text alone; the gateway passes them on to the model."""

from __future__ import annotations

import pytest
from openai import APIStatusError, OpenAI

from app.tiny.words import PUNCTUATION, WORDS

pytestmark = pytest.mark.slow
TEXT_ONLY = [{"role": "system", "content": "You are a helpful assistant."},
             {"role": "user", "content": "What is a cat?"}]


@pytest.fixture(scope="module")
def client(live_server) -> OpenAI:
    return OpenAI(base_url=f"{live_server.url}/v1", api_key="unused", max_retries=0)


def test_a_text_only_message_is_not_refused_for_want_of_an_image(client):
    """The gateway itself no longer asks for an image: the request reaches the model, which answers it (or,
    for a model that cannot answer text alone, says why in a 400)."""
    try:
        answer = client.chat.completions.create(model="tiny-llava", messages=TEXT_ONLY, max_tokens=4)
    except APIStatusError as exc:
        assert exc.status_code == 400 and "add at least one image" not in str(exc)
    else:
        assert answer.choices[0].message.content


@pytest.mark.parametrize("stream", [False, True])
def test_a_text_only_message_is_answered_in_words(client, stream):
    if stream:
        chunks = client.chat.completions.create(model="tiny-qwen2-vl", messages=TEXT_ONLY, max_tokens=6, stream=True)
        text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    else:
        answer = client.chat.completions.create(model="tiny-qwen2-vl", messages=TEXT_ONLY, max_tokens=6)
        assert answer.usage.completion_tokens >= 1
        text = answer.choices[0].message.content
    assert text and all(word.strip("".join(PUNCTUATION)) in WORDS for word in text.split())


def test_a_model_that_needs_an_image_says_so(client):
    """PaliGemma's processor takes no prompt without an image: a 400 that says an image is needed."""
    with pytest.raises(APIStatusError) as caught:
        client.chat.completions.create(model="tiny-paligemma", messages=TEXT_ONLY, max_tokens=4)
    assert caught.value.status_code == 400 and "image" in str(caught.value)
