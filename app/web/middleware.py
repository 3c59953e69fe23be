"""ASGI middleware: a request-body limit counted while reading, so a lying Content-Length does not help,
and a deadline for the whole body, so a client trickling it cannot hold a request open."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from app.core.settings import megabytes

MB = 1024 * 1024


class BodyRefused(Exception):
    """The body broke a limit; the response says which."""

    status = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BodyTooLarge(BodyRefused):
    status = 413


class BodyTooSlow(BodyRefused):
    status = 408


class BodyLimit:
    """Refuse request bodies over `max_bytes` with 413, counting the bytes actually received, and bodies
    not complete within `timeout_s` of the first read with 408."""

    def __init__(self, app: Any, max_bytes: int, timeout_s: float | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send, self._too_large())
            return
        received = 0
        started = False
        deadline: float | None = None
        body_done = False
        refused: BodyRefused | None = None

        async def counting_receive() -> dict:
            nonlocal received, deadline, body_done, refused
            if body_done or self.timeout_s is None:
                message = await receive()
            else:
                loop = asyncio.get_running_loop()
                deadline = deadline if deadline is not None else loop.time() + self.timeout_s
                try:
                    async with asyncio.timeout_at(deadline):
                        message = await receive()
                except TimeoutError:
                    refused = BodyTooSlow(f"request body: not received within the limit of {self.timeout_s:g} s")
                    raise refused from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > self.max_bytes:
                    refused = self._too_large()
                    raise refused
            return message

        replaced = False

        async def tracking_send(message: dict) -> None:
            nonlocal started, replaced
            if refused is not None and (replaced or not started):  # the app answered the refusal its own way
                if not replaced:
                    replaced = started = True
                    await self._refuse(send, refused)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyRefused as exc:
            if not started:
                await self._refuse(send, exc)

    def _too_large(self) -> BodyTooLarge:
        return BodyTooLarge(f"request body: larger than the limit of {megabytes(self.max_bytes)}")

    async def _refuse(self, send: Any, refusal: BodyRefused) -> None:
        body = json.dumps({"detail": refusal.detail}).encode()
        await send({"type": "http.response.start", "status": refusal.status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
