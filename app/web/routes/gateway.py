"""`/v1/chat/completions` and `/v1/models`: the resident models, for any OpenAI client.

Requests are routed through the same pool as the page, so an evaluation harness and people
comparing models share the GPU under one budget.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from fastapi.sse import EventSourceResponse
from pydantic import ValidationError

from app.compare.validation import InputError, Upload, check_images
from app.core.generation import Finish, StreamClock
from app.core.protocol import (
    ChatRequest,
    ChunkWriter,
    ProtocolError,
    chat_input,
    error_body,
    first_problem,
    sse_answer,
    whole_answer,
)
from app.pool.client import BackendError
from app.pool.pool import Busy, PoolError, TooLarge
from app.web.deps import services

router = APIRouter(prefix="/v1", tags=["openai"])


def _error(message: str, status: int, kind: str = "invalid_request_error", code: Any = None) -> JSONResponse:
    return JSONResponse(error_body(message, kind, code), status_code=status)


@router.get("/models")
async def models(request: Request) -> dict[str, Any]:
    state = services(request)
    data = [{"id": spec.id, "object": "model", "owned_by": spec.repo or "vlm-playground", "created": 0}
            for spec in state.catalog.models if state.reachability.get(spec.id) is None]
    return {"object": "list", "data": data}


@router.post("/chat/completions", response_model=None)
async def chat_completions(request: Request) -> JSONResponse | EventSourceResponse:
    """OpenAI chat completions with `image_url` data URLs; `stream` true or false."""
    state = services(request)
    try:
        chat = ChatRequest.model_validate(await request.json())
        wanted = chat_input(chat)
        limit = state.settings.limits.max_new_tokens
        if wanted.params.max_new_tokens > limit:
            return _error(f"max_tokens: {wanted.params.max_new_tokens} is over this server's limit of {limit}", 400)
        check_images([Upload(f"image {i + 1}", part.data) for i, part in enumerate(wanted.images)],
                      state.settings.limits)
    except ValidationError as exc:
        return _error(first_problem(exc.errors()), 400)
    except InputError as exc:
        return _error(str(exc), 413 if exc.status_code == 413 else 400)
    except (ProtocolError, ValueError) as exc:
        return _error(str(exc), 400)
    reason = state.reachability.get(chat.model, "unknown model")
    if chat.model not in state.reachability or reason is not None:
        return _error(f"model '{chat.model}': {reason}", 404, code="model_not_found")
    stack = contextlib.AsyncExitStack()
    try:  # take the lease before answering, so pool errors get a proper status
        backend = await stack.enter_async_context(state.pool.lease(chat.model))
    except TooLarge as exc:
        return _error(str(exc), 400, "model_too_large")
    except Busy as exc:
        return _error(str(exc), 503, "busy", "busy")
    except PoolError as exc:
        return _error(str(exc), 503, "model_unavailable")
    writer = ChunkWriter(chat.model)
    answer = _answer(backend, wanted, stack, state.pool, chat.model, state.settings.generation_timeout_s)
    if chat.stream:
        return EventSourceResponse(sse_answer(answer, writer))
    return await whole_answer(answer, writer, failure_status=502)


async def _answer(backend: Any, wanted: Any, stack: contextlib.AsyncExitStack, pool: Any, model: str,
                  limit_s: float) -> AsyncIterator[tuple[str | Finish, float | None, float]]:
    """Pieces with (time to first token, elapsed), within the generation time limit; releases the lease."""
    clock = StreamClock()
    pieces = backend.stream(wanted.prompt, wanted.images, wanted.params)
    try:
        while True:  # each wait bounded by what is left of the limit (time spent yielding counts too)
            left = limit_s - clock.elapsed()
            try:
                piece = await asyncio.wait_for(anext(pieces), max(left, 0.001))
            except StopAsyncIteration:
                break
            yield (piece, *clock.mark(piece))
    except TimeoutError:
        raise BackendError(f"{model}: {await pool.timed_out(model, limit_s)}") from None
    finally:
        await pieces.aclose()
        await stack.aclose()
