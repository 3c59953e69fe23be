"""Connection limits for uvicorn: a deadline on every request's headers, a cap on open connections that
sheds half-sent (slowloris) ones first, and a descriptor limit the cap fits under."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import resource
import socket
from typing import Any, ClassVar

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from app.core.settings import Settings
from app.web.logguard import guard_logs

log = logging.getLogger("vlm_playground.connections")

BASE_DESCRIPTORS = 64  # what the rest of the process holds: database, logs, workers' pipes and sockets
ACCEPT_BATCH = 16  # connections asyncio accepts per loop turn (its `backlog`); ~3 batches are in flight
LISTEN_QUEUE = 2048  # the kernel's queue of connections not yet accepted


def _raw_response(status: bytes, detail: str, extra: bytes = b"") -> bytes:
    body = json.dumps({"detail": detail}).encode()
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\nconnection: close\r\n" + extra
            + b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def fit_descriptor_limit(max_connections: int) -> int:
    """Raise the soft RLIMIT_NOFILE to the hard one; the connection cap that fits under it (one warning if lowered)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):  # a hard limit of infinity may be out of reach
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return max_connections
    room = soft - BASE_DESCRIPTORS - 3 * ACCEPT_BATCH
    if max_connections <= room:
        return max_connections
    fitted = max(8, room)
    log.warning("max_connections %d lowered to %d: the process may open only %d files (raise `ulimit -n`)",
                max_connections, fitted, soft)
    return fitted


class Registry:
    """One server's open connections, and those still sending a request's headers, oldest first."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: set[LimitedH11Protocol] = set()
        self.sending_headers: dict[LimitedH11Protocol, None] = {}  # insertion order: oldest first

    def admit(self, connection: LimitedH11Protocol) -> bool:
        """Make room for `connection` by shedding the oldest half-sent one; False when none can go."""
        if len(self.open) >= self.limit:
            victim = next(iter(self.sending_headers), None)
            if victim is None:
                return False
            self.forget(victim)
            victim.shed()
        self.open.add(connection)
        return True

    def waiting(self, connection: LimitedH11Protocol) -> None:
        self.sending_headers.pop(connection, None)
        self.sending_headers[connection] = None

    def headers_done(self, connection: LimitedH11Protocol) -> None:
        self.sending_headers.pop(connection, None)

    def forget(self, connection: LimitedH11Protocol) -> None:
        self.open.discard(connection)
        self.sending_headers.pop(connection, None)


class LimitedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header deadline (from the connection opening or the previous response
    ending to the end of the next request's headers) and a place in a shared `Registry`; logs nothing per
    connection. Made concrete by `protocol_class`."""

    registry: ClassVar[Registry]
    header_timeout_s: ClassVar[float]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._waiting_cycle: object = None
        self._request_begun = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not self.registry.admit(self):
            limit = self.registry.limit
            transport.write(_raw_response(b"503 Service Unavailable",
                                          f"server busy: {limit} connections open, the limit; try again shortly",
                                          b"retry-after: 1\r\n"))
            transport.close()
            return
        self._await_headers()

    def data_received(self, data: bytes) -> None:
        if self._header_timer is not None:
            self._request_begun = True
        super().data_received(data)
        if self._header_timer is not None and self.cycle is not self._waiting_cycle:
            self._headers_done()

    def on_response_complete(self) -> None:
        finished = self.cycle
        super().on_response_complete()
        if not self.transport.is_closing() and self.cycle is finished:  # no pipelined request already in
            self._await_headers()

    def handle_websocket_upgrade(self, event: Any) -> None:
        self._headers_done()
        self.registry.forget(self)
        super().handle_websocket_upgrade(event)

    def connection_lost(self, exc: Exception | None) -> None:
        self._headers_done()
        self.registry.forget(self)
        super().connection_lost(exc)

    def shed(self) -> None:
        """Closed to make room for a newer connection (the registry has already let go of it)."""
        self._headers_done()
        self.transport.close()

    def _await_headers(self) -> None:
        self._headers_done()
        self._waiting_cycle = self.cycle
        self._request_begun = False
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)
        self.registry.waiting(self)

    def _headers_done(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        self.registry.headers_done(self)

    def _headers_late(self) -> None:
        self._header_timer = None
        self.registry.forget(self)
        if self.transport.is_closing():
            return
        if self._request_begun:
            limit = f"{self.header_timeout_s:g} s"
            self.transport.write(_raw_response(b"408 Request Timeout",
                                               f"request headers: not received within the limit of {limit}"))
        self.transport.close()


def protocol_class(header_timeout_s: float, max_connections: int) -> type[LimitedH11Protocol]:
    """A `LimitedH11Protocol` with these limits and a registry of its own, for `uvicorn.Config(http=...)`."""
    return type("LimitedH11Protocol", (LimitedH11Protocol,),
                {"registry": Registry(max_connections), "header_timeout_s": header_timeout_s})


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """`uvicorn.Config` arguments for these limits; raises the descriptor limit on the way."""
    cap = fit_descriptor_limit(settings.max_connections)
    return {"http": protocol_class(settings.header_timeout_s, cap), "backlog": ACCEPT_BATCH}


class LimitedServer(uvicorn.Server):
    """uvicorn's server with guarded logs and a deep kernel listen queue while asyncio accepts
    `ACCEPT_BATCH` at a time (its `backlog` is both)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        guard_logs()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        for server in getattr(self, "servers", []):
            for listener in server.sockets:
                own = socket.socket(fileno=listener.fileno())
                try:
                    own.listen(LISTEN_QUEUE)
                finally:
                    own.detach()
