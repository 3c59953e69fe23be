"""Long-lived threads for generation, and the torch thread count they compute with.

A fresh OS thread per answer is costly on a CPU: torch's per-thread state (the OpenMP team, the
intra-op thread count) is built again for every thread, which made `generate` in a new thread
1.8× slower in wall time than in a thread that had run it before. So a worker runs every answer on
the same thread (`JobThread`), and the thread count is applied there once, and again only when the
pool's CPU policy changes it (`compute_threads`).

Importable under the pinned runtimes: torch is imported only inside functions.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any


class JobThread:
    """One daemon thread that runs submitted calls one after another, started on first use.

    A daemon, unlike `ThreadPoolExecutor`'s threads, so a call that never returns (a hung kernel)
    cannot keep the process from exiting."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._pending = 0
        self._count_lock = threading.Lock()

    @property
    def pending(self) -> int:
        """Calls submitted and not yet finished (the one running included)."""
        return self._pending

    def submit(self, call: Callable[[], Any]) -> Future[Any]:
        """Run `call` on this thread after the calls before it; its result or exception lands in the future."""
        future: Future[Any] = Future()
        with self._count_lock:
            self._pending += 1
        self._jobs.put((future, call))
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self._thread.start()
        return future

    def _loop(self) -> None:
        while True:
            future, call = self._jobs.get()
            result: Any = None
            error: BaseException | None = None
            running = future.set_running_or_notify_cancel()
            if running:
                try:
                    result = call()
                except BaseException as exc:  # handed to whoever waits on the future
                    error = exc
            with self._count_lock:  # before the future resolves: whoever it wakes sees the call finished
                self._pending -= 1
            if running:
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(result)


class ComputeThreads:
    """The torch thread count generation should use, set by the worker per request and applied in the
    generating thread just before it computes (`apply`), only when it changed."""

    def __init__(self) -> None:
        self.wanted: int | None = None
        self._applied: int | None = None

    @property
    def applied(self) -> int | None:
        """The count the last generation computed with (None before any)."""
        return self._applied

    def apply(self) -> None:
        """Call on the generating thread: torch.set_num_threads(wanted) if it differs from the last one."""
        wanted = self.wanted
        if wanted is None or wanted == self._applied:
            return
        import torch

        torch.set_num_threads(wanted)
        self._applied = wanted


GENERATION = JobThread("generate")  # where every `model.generate` of this process runs
compute_threads = ComputeThreads()
