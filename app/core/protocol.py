"""The OpenAI chat-completions wire format, as workers and the gateway speak it.

Requests carry images as `image_url` data URLs; to a local worker, as the name of a prepared file in
the folder the server shares with it (`vlm-image:sha256:<64 hex>`, see `app.core.shared_images`),
which only a worker accepts. Streamed answers are SSE chunks ending with one
that holds `usage` and our `timing` extension (time to first token, total).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.core.generation import Finish, GenerationParams

MAX_NEW_TOKENS_LIMIT = 4096
# A worker tells its parent what it is doing in stdout lines with this prefix (listening, ready, failed)
EVENT_PREFIX = "VLM-WORKER "
# The launcher hands each worker its bearer token in this variable; the worker reads it once and removes it
TOKEN_ENV = "VLM_WORKER_TOKEN"
# An image a local worker reads from its shared folder: this prefix, then the file's SHA-256 (64 lowercase hex)
SHARED_IMAGE_URL = "vlm-image:sha256:"
SHARED_IMAGE_MIME = "image/x-portable-pixmap"
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
# The pool's CPU thread policy, per request: how many torch threads this answer may compute with
THREADS_HEADER = "x-vlm-threads"


class ProtocolError(ValueError):
    """A request the server refuses: the message names the field."""


class ChatRequest(BaseModel):
    """The fields of a chat-completions request that we use; others are accepted and ignored."""

    model_config = ConfigDict(extra="allow")
    model: str = ""
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_NEW_TOKENS_LIMIT)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_NEW_TOKENS_LIMIT)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = None


@dataclass(frozen=True)
class ImagePart:
    """An image as it travels: its bytes and MIME type; or, to a local worker, only `shared`, the SHA-256
    name of the prepared file it reads from the folder the server shares with it."""

    data: bytes
    mime: str = "image/png"
    shared: str | None = None

    @classmethod
    def shared_file(cls, sha256: str) -> ImagePart:
        return cls(b"", SHARED_IMAGE_MIME, sha256)

    def url(self) -> str:
        """What the request's `image_url.url` says: the shared file's name, else a data: URL."""
        return f"{SHARED_IMAGE_URL}{self.shared}" if self.shared else self.data_url()

    def data_url(self) -> str:
        return self._data_url

    @functools.cached_property
    def _data_url(self) -> str:  # encoded once however many models receive the image
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode('ascii')}"


@dataclass(frozen=True)
class ChatInput:
    """What a chat request asks of a vision model."""

    prompt: str
    images: list[ImagePart]
    params: GenerationParams


def params_of(request: ChatRequest) -> GenerationParams:
    return GenerationParams(
        max_new_tokens=request.max_completion_tokens or request.max_tokens or 256,
        temperature=request.temperature,
        top_p=request.top_p,
        seed=request.seed if request.seed is not None else 0,
    )


def decode_data_url(url: str) -> ImagePart:
    """Only inline `data:image/...;base64,` URLs: a worker never fetches from the network."""
    if not url.startswith("data:"):
        raise ProtocolError("image_url.url: only data: URLs are accepted (the server fetches nothing)")
    header, _, payload = url.partition(",")
    if ";base64" not in header:
        raise ProtocolError("image_url.url: data URL must be base64-encoded")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("image_url.url: invalid base64 payload") from None
    return ImagePart(data=data, mime=header[5:].split(";")[0] or "application/octet-stream")


def shared_image(url: str) -> ImagePart:
    """`vlm-image:sha256:<64 hex>`: a name in the worker's shared folder, never a path."""
    name = url[len(SHARED_IMAGE_URL):]
    if not SHA256_HEX.fullmatch(name):
        raise ProtocolError(f"image_url.url: a shared image is {SHARED_IMAGE_URL} and 64 lowercase hex digits "
                            f"(a file name in this worker's shared folder, never a path); got {url[:100]!r}")
    return ImagePart.shared_file(name)


def chat_input(request: ChatRequest, shared: bool = False) -> ChatInput:
    """Images from every user message in order; the text of the last user message is the prompt.
    `shared`: `vlm-image:sha256:` names are accepted too (a worker's own server sends them; the gateway
    accepts data: URLs only)."""
    images: list[ImagePart] = []
    prompt = ""
    for index, message in enumerate(request.messages):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            prompt = content
            continue
        if not isinstance(content, list):
            raise ProtocolError(f"messages[{index}].content: must be a string or a list of parts")
        texts = []
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                texts.append(str(part.get("text", "")))
            elif kind == "image_url":
                url = part.get("image_url")
                url = str((url.get("url") if isinstance(url, dict) else url) or "")
                images.append(shared_image(url) if shared and url.startswith(SHARED_IMAGE_URL)
                              else decode_data_url(url))
            else:
                raise ProtocolError(f"messages[{index}].content: unsupported part type {kind!r}")
        prompt = "\n".join(texts)
    if not prompt.strip():
        raise ProtocolError("messages: the last user message has no text")
    return ChatInput(prompt=prompt, images=images, params=params_of(request))


def user_message(prompt: str, images: list[ImagePart]) -> list[dict[str, Any]]:
    """The `messages` list a client sends for one prompt with images."""
    content: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": image.url()}} for image in images]
    content.append({"type": "text", "text": prompt})
    return [{"role": "user", "content": content}]


class ChunkWriter:
    """Builds the chunks of one streamed completion."""

    def __init__(self, model: str) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.model = model
        self.created = int(time.time())

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}], **extra}

    def role(self) -> str:
        return json.dumps(self._chunk({"role": "assistant", "content": ""}))

    def text(self, piece: str) -> str:
        return json.dumps(self._chunk({"content": piece}), ensure_ascii=False)

    def finish(self, finish: Finish, ttft_s: float | None, total_s: float) -> str:
        reason = "stop" if finish.finish_reason == "cancelled" else finish.finish_reason
        return json.dumps(self._chunk({}, reason, usage=usage(finish), timing=timing(finish, ttft_s, total_s)))

    def completion(self, text: str, finish: Finish, ttft_s: float | None, total_s: float) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": finish.finish_reason}],
                "usage": usage(finish), "timing": timing(finish, ttft_s, total_s)}


def usage(finish: Finish) -> dict[str, int]:
    return {"prompt_tokens": finish.prompt_tokens, "completion_tokens": finish.completion_tokens,
            "total_tokens": finish.prompt_tokens + finish.completion_tokens}


def timing(finish: Finish, ttft_s: float | None, total_s: float) -> dict[str, Any]:
    return {"ttft_s": None if ttft_s is None else round(ttft_s, 4), "total_s": round(total_s, 4),
            "image_note": finish.image_note, "finish_reason": finish.finish_reason, "applied": finish.applied}


def error_body(message: str, kind: str = "invalid_request_error",
               code: Literal["bad_request", "model_error", "busy", "context_length_exceeded"] | None = None
               ) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "code": code}}


Timed = tuple[Any, float | None, float]  # (text piece or Finish, time to first token, elapsed)


class ModelFailure(RuntimeError):
    """A model or model server that failed to answer; its message is written for people.

    `status` is the HTTP status the model's server answered with, when it refused the request.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def describe_failure(exc: BaseException) -> str:
    """A failure for the client: our own messages as they are, anything else with its type."""
    return str(exc) if isinstance(exc, ModelFailure | ProtocolError) else f"{type(exc).__name__}: {exc}"


async def sse_answer(answer: AsyncIterator[Timed], writer: ChunkWriter) -> AsyncIterator[bytes]:
    """SSE chunks: role, text pieces, a final chunk with usage and timing, then [DONE]. A failure
    mid-answer is told in-band, as OpenAI-compatible servers do."""
    from fastapi.sse import format_sse_event

    yield format_sse_event(data_str=writer.role())
    try:
        async for piece, first, elapsed in answer:
            if isinstance(piece, Finish):
                yield format_sse_event(data_str=writer.finish(piece, first, elapsed))
            else:
                yield format_sse_event(data_str=writer.text(piece))
    except Exception as exc:
        yield format_sse_event(data_str=json.dumps(error_body(describe_failure(exc), "model_error", "model_error")))
    yield format_sse_event(data_str="[DONE]")


async def whole_answer(answer: AsyncIterator[Timed], writer: ChunkWriter, failure_status: int) -> Any:
    """A non-streamed completion, or an error with `failure_status` when the model fails."""
    from fastapi.responses import JSONResponse

    pieces: list[str] = []
    try:
        # closed before the reply goes: the answer's turn on its model ends first, not when it is collected
        async with contextlib.aclosing(answer) if hasattr(answer, "aclose") else contextlib.nullcontext():  # type: ignore[type-var]
            async for piece, first, elapsed in answer:
                if isinstance(piece, Finish):
                    return JSONResponse(writer.completion("".join(pieces), piece, first, elapsed))
                pieces.append(piece)
    except Exception as exc:
        status = getattr(exc, "status", None)
        if isinstance(status, int) and 400 <= status < 500:  # the model's server refused the request itself
            return JSONResponse(error_body(describe_failure(exc)), status_code=status)
        return JSONResponse(error_body(describe_failure(exc), "model_error", "model_error"),
                            status_code=failure_status)
    return JSONResponse(error_body("the model ended without token counts", "model_error", "model_error"),
                        status_code=failure_status)


def first_problem(errors: Sequence[Any], skip: tuple[str, ...] = ()) -> str:
    """A pydantic validation error as one line naming the field: 'messages.0.content: Field required'."""
    if not errors:
        return "invalid request"
    first = errors[0]
    field = ".".join(str(part) for part in first["loc"] if part not in skip)
    return f"{field}: {first['msg']}" if field else str(first["msg"])
