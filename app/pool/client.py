"""A client of any OpenAI-compatible server: our own workers, vLLM, SGLang, TGI, Ollama.

`OpenAIBackend.stream` sends one prompt with its images and yields text pieces, then a `Finish`
with token counts and the server's timing where it reports one.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from app.core.generation import Finish, GenerationParams, Piece
from app.core.protocol import ImagePart, ModelFailure, user_message


class BackendError(ModelFailure):
    """A model server that failed to answer; the message says what happened."""


class OpenAIBackend:
    """Streams chat completions from one model on one server."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None,
                 client: httpx.AsyncClient | None = None, label: str | None = None,
                 read_timeout_s: float = 600.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.label = label or model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(10.0, read=read_timeout_s), headers=headers, trust_env=False)
        self._owns_client = client is None
        self.extra_headers: Callable[[], dict[str, str]] | None = None  # per request (the pool's thread policy)

    def _body(self, prompt: str, images: list[ImagePart], params: GenerationParams) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model, "messages": user_message(prompt, images), "stream": True,
            "max_tokens": params.max_new_tokens, "temperature": params.temperature, "top_p": params.top_p,
            "stream_options": {"include_usage": True},
        }
        if params.seed is not None:
            body["seed"] = params.seed
        return body

    async def stream(self, prompt: str, images: list[ImagePart], params: GenerationParams) -> AsyncIterator[Piece]:
        """Yield text pieces, then one Finish. Raises BackendError on any failure."""
        pieces = 0
        usage: dict[str, Any] = {}
        timing: dict[str, Any] = {}
        reason = "stop"
        try:
            headers = self.extra_headers() if self.extra_headers else None
            async with self._client.stream("POST", f"{self.base_url}/chat/completions",
                                           json=self._body(prompt, images, params), headers=headers) as response:
                if response.status_code >= 400:
                    message = _error_message(await response.aread())
                    if not message.startswith(f"{self.label}:"):  # our workers name the model already
                        message = f"{self.label}: HTTP {response.status_code}: {message}"
                    raise BackendError(message, status=response.status_code)
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    if "error" in chunk:
                        raise BackendError(f"{self.label}: {_error_message(chunk)}")
                    usage = chunk.get("usage") or usage
                    timing = chunk.get("timing") or timing
                    for choice in chunk.get("choices") or []:
                        text = (choice.get("delta") or {}).get("content")
                        if text:
                            pieces += 1
                            yield text
                        reason = choice.get("finish_reason") or reason
                else:
                    raise BackendError(f"{self.label}: the stream ended before [DONE] (server went away?)")
        except httpx.HTTPError as exc:
            raise BackendError(f"{self.label}: connection failed: {type(exc).__name__}: {exc}") from exc
        yield Finish(
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or pieces),
            finish_reason=timing.get("finish_reason") or reason,
            image_note=timing.get("image_note"),
            applied=timing.get("applied") if isinstance(timing.get("applied"), dict) else None,
        )

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()


def _error_message(body: bytes | dict[str, Any]) -> str:
    try:
        data = json.loads(body) if isinstance(body, bytes) else body
        error = data.get("error", data)
        if isinstance(error, dict):
            return str(error.get("message") or error.get("detail") or error)
        return str(error)
    except (ValueError, AttributeError):
        return body[:300].decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
