"""Turns on one model: who generates next when several requests want the same worker.

A local worker generates one answer at a time. Requests wait here, in the server, not in the worker:
so the generation time limit starts when a request's turn starts (queue wait is bounded on its own),
and turns go to the waiting client served longest ago, so one client's flood costs another client
at most the answer already running. Each client may have `max_waiting` requests waiting; past that it is told
to slow down (429), and a request that waited `timeout_s` without its turn is told the model is busy
and how many were ahead of it (503). Both errors carry a Retry-After estimate.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.pool.errors import Busy, TooManyWaiting

Position = Callable[[int], None]  # told how many requests are ahead, each time that changes


@dataclass(eq=False)
class _Waiter:
    client: str
    granted: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    told: int = -1


class Turns:
    """A fair, bounded queue in front of one model's worker (`slots` answers at a time)."""

    def __init__(self, model: str, slots: int = 1, max_waiting: int = 4, timeout_s: float = 120.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.model = model
        self.slots = slots
        self.max_waiting = max_waiting
        self.timeout_s = timeout_s
        self.clock = clock
        self.active = 0
        self._waiting: dict[str, deque[_Waiter]] = {}  # clients in the order they queued
        self._turn_s = 5.0  # a running estimate of one turn's length, for Retry-After
        self._moved = asyncio.Event()  # set (and replaced) whenever the queue moves
        self._served_at: dict[str, int] = {}  # client → the number of its latest turn
        self._turn_number = 0

    @property
    def waiting(self) -> int:
        return sum(len(queue) for queue in self._waiting.values())

    @contextlib.asynccontextmanager
    async def turn(self, client: str, on_position: Position | None = None) -> AsyncIterator[None]:
        """Wait for this client's turn (bounded), hold it for the body, then pass it on."""
        await self._take(client, on_position)
        started = self.clock()
        try:
            yield
        finally:
            self._turn_s = 0.8 * self._turn_s + 0.2 * max(self.clock() - started, 0.1)
            self.active -= 1
            self._grant()

    async def _take(self, client: str, on_position: Position | None) -> None:
        if self.active < self.slots and not self._waiting:
            self.active += 1
            self._served(client)
            return
        queue = self._waiting.get(client)
        if queue is not None and len(queue) >= self.max_waiting:
            raise TooManyWaiting(
                f"{self.model}: you already have {len(queue)} requests waiting for this model; the limit is "
                f"{self.max_waiting} a client. Wait for one to start.", retry_after_s=self.retry_after(1))
        waiter = _Waiter(client)
        self._waiting.setdefault(client, deque()).append(waiter)
        deadline = self.clock() + self.timeout_s
        try:
            while not waiter.granted.done():
                self._tell(waiter, on_position)
                left = deadline - self.clock()
                if left <= 0:
                    break
                moved: asyncio.Future[Any] = asyncio.ensure_future(self._moved.wait())
                either: list[asyncio.Future[Any]] = [waiter.granted, moved]
                try:
                    await asyncio.wait(either, timeout=left, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    moved.cancel()
        except BaseException:
            self._leave(waiter)
            raise
        if not waiter.granted.done():
            ahead = self.ahead_of(waiter)
            self._leave(waiter)
            raise Busy(f"{self.model} is busy: {ahead} request{'s' if ahead != 1 else ''} ahead of you; "
                       f"waited {self.timeout_s:g} s for a turn", retry_after_s=self.retry_after(ahead))

    def _tell(self, waiter: _Waiter, on_position: Position | None) -> None:
        if on_position is None:
            return
        ahead = self.ahead_of(waiter)
        if ahead != waiter.told:
            waiter.told = ahead
            on_position(ahead)

    def _leave(self, waiter: _Waiter) -> None:
        """A waiter gives up (timed out, cancelled): drop it, or pass on a turn granted meanwhile."""
        if waiter.granted.done() and not waiter.granted.cancelled():
            self.active -= 1
            self._grant()
            return
        waiter.granted.cancel()
        queue = self._waiting.get(waiter.client)
        if queue is not None and waiter in queue:
            queue.remove(waiter)
            if not queue:
                del self._waiting[waiter.client]
        self._tell_all()

    def _tell_all(self) -> None:
        """Wake every waiter: its place may have changed."""
        self._moved.set()
        self._moved = asyncio.Event()

    def _grant(self) -> None:
        """Give free slots to waiting clients, the least recently served first (round-robin that also
        counts a turn taken without waiting)."""
        self._tell_all()
        while self.active < self.slots and self._waiting:
            client = self._next(self._waiting, self._served_at)
            queue = self._waiting[client]
            waiter = queue.popleft()
            if not queue:
                del self._waiting[client]
            if waiter.granted.done():  # cancelled while queued
                continue
            self.active += 1
            self._served(client)
            waiter.granted.set_result(None)

    @staticmethod
    def _next(waiting: Mapping[str, Sequence[_Waiter]], served_at: Mapping[str, int]) -> str:
        """The waiting client served longest ago (never: first); ties go to the one that queued first."""
        return min(waiting, key=lambda name: served_at.get(name, -1))

    def _served(self, client: str) -> None:
        self._turn_number += 1
        self._served_at[client] = self._turn_number
        if len(self._served_at) > 1000:  # forget clients that are not waiting (they rank as new again)
            self._served_at = {name: at for name, at in self._served_at.items() if name in self._waiting}

    def ahead_of(self, waiter: _Waiter) -> int:
        """Requests served before this one if no one else arrives: those running, and the waiters the
        order of `_grant` reaches first."""
        waiting = {name: list(queue) for name, queue in self._waiting.items()}
        served_at = dict(self._served_at)
        ahead, turn = self.active, self._turn_number
        while waiting:
            client = self._next(waiting, served_at)
            if waiting[client][0] is waiter:
                return ahead
            waiting[client].pop(0)
            if not waiting[client]:
                del waiting[client]
            turn += 1
            served_at[client] = turn
            ahead += 1
        return ahead

    def retry_after(self, ahead: int) -> int:
        """Seconds until a retry is likely to find room: about one turn per request ahead."""
        return max(1, math.ceil(self._turn_s * max(ahead, 1)))
