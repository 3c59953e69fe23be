"""`/v1/chat/completions` and `/v1/models`: the resident models, for any OpenAI client.

Requests are routed through the same pool as the page, so an evaluation harness and people
comparing models share the GPU under one budget, take fair turns on a busy model, and meet the
same limits: prompt length, image count, size and pixels, and generation settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from fastapi.sse import EventSourceResponse
from pydantic import ValidationError

from app.compare.downsize import Downsizer
from app.compare.validation import InputError, Upload, check_images, check_params, check_prompt
from app.core.generation import Finish, GenerationParams, StreamClock
from app.core.memory import give_back
from app.core.protocol import (
    ChatRequest,
    ChunkWriter,
    ImagePart,
    ProtocolError,
    chat_input,
    error_body,
    first_problem,
    sse_answer,
    whole_answer,
)
from app.pool.client import BackendError
from app.pool.pool import Busy, PoolError, TooLarge, TooManyWaiting
from app.web.deps import Services, client_of, services

router = APIRouter(prefix="/v1", tags=["openai"])
MAX_JSON_DEPTH = 32  # a chat request nests 6 deep; deeper JSON is refused before it is parsed


def _error(message: str, status: int, kind: str = "invalid_request_error", code: Any = None,
           retry_after_s: float | None = None) -> JSONResponse:
    headers = {"Retry-After": str(math.ceil(retry_after_s))} if retry_after_s else None
    return JSONResponse(error_body(message, kind, code), status_code=status, headers=headers)


@router.get("/models")
async def models(request: Request) -> dict[str, Any]:
    state = services(request)
    data = [{"id": spec.id, "object": "model", "owned_by": spec.repo or "vlm-playground", "created": 0}
            for spec in state.catalog.models if state.reachability.get(spec.id) is None]
    return {"object": "list", "data": data}


@router.post("/chat/completions", response_model=None)
async def chat_completions(request: Request) -> JSONResponse | EventSourceResponse:
    """OpenAI chat completions with `image_url` data URLs, or text alone; `stream` true or false."""
    state = services(request)
    body = await request.body()
    try:  # in a thread: checking decodes every image (once), and prepares it for the model
        chat, wanted = await asyncio.to_thread(_checked, body, state)
    except NoSuchModel as exc:
        return _error(str(exc), 404, code="model_not_found")
    except InputError as exc:
        return _error(exc.detail, exc.status_code)
    except ProtocolError as exc:
        return _error(str(exc), 400)
    images, _ = wanted.images.for_model(state.catalog.get(chat.model))
    stack = contextlib.AsyncExitStack()
    stack.push_async_callback(asyncio.to_thread, wanted.images.release)  # its shared files, once answered
    try:  # take the lease (and the turn) before answering, so pool errors get a proper status
        backend = await stack.enter_async_context(state.pool.lease(chat.model, client=client_of(request)))
    except PoolError as exc:
        await stack.aclose()
        return _refused_by_pool(exc, state)
    except BaseException:  # the client went away while waiting
        await stack.aclose()
        raise
    writer = ChunkWriter(chat.model)
    answer = _answer(backend, wanted.prompt, images, wanted.params, stack, state, chat.model)
    try:  # the first piece before the status: a request the model refuses (too long for it) gets a 4xx
        first = await anext(answer)
    except StopAsyncIteration:
        return _error("the model ended without an answer", 502, "model_error", "model_error")
    except BackendError as exc:
        status = exc.status if exc.status and 400 <= exc.status < 500 else 502
        return _error(str(exc), status, "model_error" if status == 502 else "invalid_request_error")
    if chat.stream:
        return EventSourceResponse(sse_answer(_then(first, answer), writer))
    return await whole_answer(_then(first, answer), writer, failure_status=502)


def _refused_by_pool(exc: PoolError, state: Services) -> JSONResponse:
    if isinstance(exc, TooLarge):
        return _error(str(exc), 400, "model_too_large")
    if isinstance(exc, TooManyWaiting):
        return _error(str(exc), 429, "rate_limit_exceeded", "busy", exc.retry_after_s)
    if isinstance(exc, Busy):
        return _error(str(exc), 503, "busy", "busy", exc.retry_after_s or state.settings.retry_after_s)
    return _error(str(exc), 503, "model_unavailable", retry_after_s=exc.retry_after_s)


class NoSuchModel(LookupError):
    """A chat request for a model this server does not have (or cannot load here)."""


@dataclass(frozen=True)
class CheckedChat:
    """What the gateway sends on: the prompt, the generation settings, and the images as prepared for the
    model (their shared files released once the answer is over)."""

    prompt: str
    params: GenerationParams
    images: Downsizer


def _checked(body: bytes, state: Services) -> tuple[ChatRequest, CheckedChat]:
    """Parse and check a chat request as the page's API checks a comparison (same limits, same messages)."""
    limits = state.settings.limits
    raw = _json(body)
    if not isinstance(raw, dict):
        raise ProtocolError("body: expected a JSON object")
    asked = {"max_new_tokens": raw.get("max_completion_tokens", raw.get("max_tokens")),
             "temperature": raw.get("temperature"), "top_p": raw.get("top_p"), "seed": raw.get("seed")}
    try:
        params = check_params(asked, limits)
    except InputError as exc:
        name = "max_tokens" if exc.field == "max_new_tokens" else exc.field
        raise InputError(name, exc.message) from None
    try:
        chat = ChatRequest.model_validate({**raw, "max_tokens": None, "max_completion_tokens": None,
                                           "temperature": params["temperature"], "top_p": params["top_p"],
                                           "seed": params["seed"]})
    except ValidationError as exc:
        raise ProtocolError(first_problem(exc.errors())) from None
    reason = state.reachability.get(chat.model, "unknown model")
    if chat.model not in state.reachability or reason is not None:
        raise NoSuchModel(f"model '{chat.model}': {reason}")
    wanted = chat_input(chat)
    check_prompt(wanted.prompt, limits)
    prepared = Downsizer([state.catalog.get(chat.model)], state.runner.shared)
    if wanted.images:  # text-only messages go on as they are: the model answers them or says why it cannot
        try:
            check_images([Upload(f"image {i + 1}", part.data) for i, part in enumerate(wanted.images)], limits,
                         prepare=prepared)
        except BaseException:
            prepared.release()
            raise
        finally:
            give_back()
    generation = GenerationParams(max_new_tokens=params["max_new_tokens"], temperature=params["temperature"],
                                  top_p=params["top_p"], seed=params["seed"])
    return chat, CheckedChat(wanted.prompt, generation, prepared)


_STRUCTURE = re.compile(rb'["\[\]{}]')  # what the depth count looks at outside strings


def _json(body: bytes) -> Any:
    """The request body as JSON; nesting deeper than a chat request needs is refused before parsing."""
    depth = 0
    at = 0
    while found := _STRUCTURE.search(body, at):  # brackets outside strings: linear, no recursion
        at = found.end()
        char = body[found.start()]
        if char == 0x22:  # a string: skip to its closing quote (memchr-fast, as an image's base64 is long)
            at = _string_end(body, at)
        elif char in (0x5B, 0x7B):
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise ProtocolError(f"body: JSON nested more than {MAX_JSON_DEPTH} levels deep")
        else:
            depth -= 1
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"body: not valid JSON ({exc})") from None


def _string_end(body: bytes, start: int) -> int:
    """Just past the quote that closes the string whose text begins at `start` (the end if none does)."""
    at = start
    while (quote := body.find(b'"', at)) >= 0:
        escapes = quote
        while escapes > start and body[escapes - 1] == 0x5C:  # backslashes right before it
            escapes -= 1
        if (quote - escapes) % 2 == 0:  # an even number: the quote is not escaped
            return quote + 1
        at = quote + 1
    return len(body)


async def _then(first: Any, rest: AsyncIterator[Any]) -> AsyncIterator[Any]:
    yield first
    async for item in rest:
        yield item


async def _answer(backend: Any, prompt: str, images: list[ImagePart], params: GenerationParams,
                  stack: contextlib.AsyncExitStack, state: Services, model: str
                  ) -> AsyncIterator[tuple[str | Finish, float | None, float]]:
    """Pieces with (time to first token, elapsed), within the generation time limit, timed from this
    request's turn on the model; releases the lease (and the turn) at the end."""
    limit_s = state.settings.generation_timeout_s
    clock = StreamClock()
    pieces = backend.stream(prompt, images, params)
    try:
        while True:  # each wait bounded by what is left of the limit (time spent yielding counts too)
            left = limit_s - clock.elapsed()
            try:
                piece = await asyncio.wait_for(anext(pieces), max(left, 0.001))
            except StopAsyncIteration:
                break
            yield (piece, *clock.mark(piece))
    except TimeoutError:
        await pieces.aclose()  # closes the worker's stream: it stops generating
        raise BackendError(f"{model}: {await state.pool.timed_out(model, limit_s)}") from None
    finally:
        await pieces.aclose()
        await stack.aclose()
