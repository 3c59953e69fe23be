"""`python -m app.worker`: one model, one process, served over the OpenAI chat-completions protocol.

The worker binds its socket first, then loads the model in the background while `/health` says
"loading". It reports to its parent on stdout, one JSON line per event:
`{"event": "listening", "port": P}`, then `{"event": "ready", ...}` or `{"event": "failed", ...}`.
It exits when its parent dies (stdin closes, or the kernel's parent-death signal).

A spare (`--spare`) serves no model yet: it prepares — imports, CPU threads, the CUDA context; see
`warmup` — reports `{"event": "spare", "port": P, "overhead": {...}}` and waits for `POST /load` with
a catalogue entry, which loads it and answers with what "ready" would say. `POST /unload` makes a
loaded worker a spare again (weights dropped, memory given back), so an evicted model's process can
serve the next model without a new interpreter. The pool keeps one spare per runtime, so a load
pays for the weights, not for an interpreter and its imports.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import hmac
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.sse import EventSourceResponse
from pydantic import ValidationError

from app.adapters.base import ModelLoadError, ParkError
from app.adapters.threads import JobThread, compute_threads
from app.core.budget import InputTooLarge
from app.core.catalog import ModelSpec, load_catalog
from app.core.generation import Call, Piece, Timed, timed
from app.core.images import ImageError
from app.core.memory import give_back, overhead_bytes
from app.core.protocol import (
    EVENT_PREFIX,
    THREADS_HEADER,
    TOKEN_ENV,
    ChatRequest,
    ChunkWriter,
    ProtocolError,
    chat_input,
    error_body,
    first_problem,
    sse_answer,
    whole_answer,
)
from app.core.shared_images import load_images
from app.worker.warmup import warm_up

_DONE = object()


def report(event: str, **fields: Any) -> None:
    """Tell the parent something, as one line on stdout."""
    sys.stdout.write(EVENT_PREFIX + json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


class DeviceMemory:
    """Bytes the model holds: the CUDA allocator's reservation, or resident-set growth on the CPU."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.baseline = 0 if device.startswith("cuda") else self._rss()
        self.peak = 0

    @staticmethod
    def _rss() -> int:
        import psutil

        return psutil.Process().memory_info().rss

    def now(self) -> int:
        if self.device.startswith("cuda"):
            import torch

            used = int(torch.cuda.memory_reserved())
            self.peak = max(self.peak, int(torch.cuda.max_memory_reserved()))
        else:
            used = max(0, self._rss() - self.baseline)
        self.peak = max(self.peak, used)
        return used

    def release(self) -> None:
        """Give memory a finished request held back: Python's young garbage (a request's cycles; the
        imports are frozen and the model lives on), the CUDA cache, and the C heap's free pages (glibc
        keeps them otherwise, so the process would stay at its largest request)."""
        give_back(collect=True, generation=1)
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    def snapshot(self, overhead: dict[str, Any] | None = None) -> dict[str, Any]:
        used = self.now()
        return {"bytes": used, "peak_bytes": self.peak, "device": self.device,
                "overhead_bytes": overhead_bytes(overhead),
                "method": "torch.cuda.memory_reserved" if self.device.startswith("cuda") else "rss_growth"}


class WorkerState:
    """The one model this process hosts (none while it is a spare), and its status."""

    def __init__(self, spec: ModelSpec | None, device: str, overhead: dict[str, Any] | None = None,
                 fixed_threads: bool = False) -> None:
        self.spec = spec
        self.device = device
        self.overhead = overhead  # measured before any weights (by a spare, or at the start of the load)
        self.fixed_threads = fixed_threads  # --threads given: the pool's policy does not change it
        self.status = "loading" if spec else "spare"
        self.ready: dict[str, Any] = {}  # what the last successful load reported
        self.error: str | None = None
        self.adapter: Any = None
        self.memory: DeviceMemory | None = None
        self.load_s: float | None = None
        self.gate = asyncio.Semaphore(1)  # one generation at a time; others queue here
        self.active = 0
        self.answers = JobThread("answer")  # every answer runs here, one after another
        self.releasing: asyncio.Future[None] | None = None  # memory given back after the last answer was sent

    def generating(self) -> int:
        """Answers still running on their thread: one asked to stop may not (a hung kernel)."""
        return self.answers.pending

    @property
    def model_id(self) -> str:
        return self.spec.id if self.spec else "(none: a spare)"

    def load(self) -> None:
        """Load the model (in a background thread) and report the outcome to the parent."""
        assert self.spec is not None
        started = time.perf_counter()
        try:
            from app.adapters import adapter_for

            quiet_transformers()
            if self.overhead is None:  # not a spare: the same preparation, on the load's clock
                self.overhead = warm_up(self.device, [self.spec.family or ""])
            self.memory = DeviceMemory(self.device)
            self.adapter = adapter_for(self.spec.family or "").load(self.spec, self.device)
            self.load_s = time.perf_counter() - started
            self.status = "ready"
            self.ready = {"load_s": round(self.load_s, 3), "memory": self.memory.snapshot(self.overhead),
                          "runtime": runtime_info()}
            report("ready", **self.ready)
        except ModelLoadError as exc:
            self._fail(str(exc))
        except Exception as exc:  # any other failure is still the model's, not the server's
            self._fail(f"{type(exc).__name__}: {exc}")

    def _fail(self, message: str) -> None:
        self.status = "failed"
        self.error = message
        report("failed", error=message)

    def prepare_spare(self, families: list[str]) -> None:
        """A spare's preparation (in a background thread); reports "spare" with the overhead measured."""
        try:
            quiet_transformers()
            self.overhead = warm_up(self.device, families)
            report("spare", overhead=self.overhead)
        except Exception as exc:  # a spare that cannot prepare is no use: say why
            self._fail(f"preparing a worker failed: {type(exc).__name__}: {exc}")

    def park(self) -> dict[str, Any]:
        """Keep the model, its weights moved to host memory (see Adapter.park); refuses no answers itself
        (the caller checks it is idle). Returns the host bytes kept and what the device still holds."""
        started = time.perf_counter()
        host_bytes = self.adapter.park()
        self.status = "parked"
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()
        give_back()
        return {"host_bytes": host_bytes, "park_s": round(time.perf_counter() - started, 4),
                "memory": self.memory.snapshot(self.overhead) if self.memory else None}

    def unpark(self) -> dict[str, Any]:
        """Bring the parked weights back to the device and serve again."""
        started = time.perf_counter()
        self.adapter.unpark()
        self.status = "ready"
        return {"unpark_s": round(time.perf_counter() - started, 4),
                "memory": self.memory.snapshot(self.overhead) if self.memory else None}

    def unload(self) -> dict[str, Any]:
        """Drop the model and give its memory back: a spare again. Returns the overhead it measured before
        its first model (what stays behind beyond it is the allocator's, reused by the next load)."""
        self.adapter, self.memory, self.spec, self.error = None, None, None, None
        self.status = "spare"
        give_back(collect=True, generation=1)  # the model's tensors go with their last reference; young cycles here
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()
        return {"overhead": self.overhead}


def quiet_transformers() -> None:
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    try:
        from transformers.utils import logging

        logging.set_verbosity_error()
        logging.disable_progress_bar()
    except ImportError:
        pass


def runtime_info() -> dict[str, str]:
    """Library versions this worker runs with, recorded with every answer."""
    info = {"python": sys.version.split()[0]}
    for name in ("torch", "transformers"):
        with contextlib.suppress(Exception):
            info[name] = __import__(name).__version__
    return info


async def generate_async(state: WorkerState, call: Call, cancel: threading.Event) -> AsyncGenerator[Piece, None]:
    """Run the adapter's blocking generator on the answer thread and yield its pieces on the event loop."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()

    def produce() -> None:
        try:
            for piece in state.adapter.run(call, cancel):
                loop.call_soon_threadsafe(queue.put_nowait, piece)
        except BaseException as exc:
            loop.call_soon_threadsafe(queue.put_nowait, exc)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, _DONE)

    memory = state.memory
    done = asyncio.wrap_future(state.answers.submit(produce))
    pieces = 0
    try:
        while (item := await queue.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            pieces += 1
            if memory and pieces % 16 == 1:  # the peak, sampled while the request's memory is held
                memory.now()
            yield item
    finally:
        cancel.set()  # a no-op once generation ended; stops it when the client went away
        await done
        if memory:
            memory.now()
            # after the answer has gone out, not before its end: the next answer waits for it (one_at_a_time)
            state.releasing = asyncio.ensure_future(asyncio.to_thread(memory.release))


class RequireToken:
    """Plain ASGI middleware: every path but /health needs the worker's bearer token (Starlette's
    BaseHTTPMiddleware cost 1.2–1.9 ms of CPU per request; this costs a header comparison)."""

    def __init__(self, app: Any, expected: bytes) -> None:
        self.app = app
        self.expected = expected

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("path") != "/health":
            offered = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(offered, self.expected):
                refusal = JSONResponse(error_body("this worker answers only its playground", "unauthorized"),
                                       status_code=401)
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_worker_app(state: WorkerState, token: str | None = None) -> FastAPI:
    """The worker's HTTP API. With `token` (the pool sets one), every route but /health needs it as a
    bearer token, so other users of a shared host cannot reach the model past the server's checks."""
    app = FastAPI(title="vlm-playground worker", docs_url=None, redoc_url=None)

    if token:
        app.add_middleware(RequireToken, expected=f"Bearer {token}".encode())

    @app.get("/health")
    async def health() -> JSONResponse:
        body = {"status": state.status, "model": state.spec.id if state.spec else None, "error": state.error,
                "active": max(state.active, state.generating()), "threads": compute_threads.applied}
        return JSONResponse(body, status_code=200 if state.status != "failed" else 503)

    @app.get("/memory")
    async def memory() -> dict[str, Any]:
        if state.memory:
            return state.memory.snapshot(state.overhead)
        return {"bytes": 0, "peak_bytes": 0, "device": state.device, "overhead_bytes": overhead_bytes(state.overhead)}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        data = [{"id": state.spec.id, "object": "model", "owned_by": "vlm-playground"}] if state.spec else []
        return {"object": "list", "data": data}

    @app.post("/load")
    async def load(request: Request) -> JSONResponse:
        """A spare loads the model of the catalogue entry in the body; answers once it is ready or failed."""
        if state.status != "spare":
            return JSONResponse(error_body(f"this worker serves {state.model_id} already", "conflict"),
                                status_code=409)
        try:
            state.spec = ModelSpec.model_validate(await request.json())
        except (ValidationError, ValueError) as exc:
            return JSONResponse(error_body(f"not a catalogue entry: {exc}"), status_code=400)
        state.status = "loading"
        await asyncio.to_thread(state.load)
        if state.status != "ready":
            return JSONResponse(error_body(state.error or "load failed", "load_failed"), status_code=500)
        return JSONResponse(state.ready)

    def idle_refusal(action: str, allowed: tuple[str, ...]) -> JSONResponse | None:
        if state.status not in allowed or state.active or state.generating():
            return JSONResponse(error_body(f"cannot {action} {state.model_id}: it is {state.status}"
                                           f"{' and answering' if state.active else ''}", "conflict"), status_code=409)
        return None

    @app.post("/park")
    async def park() -> JSONResponse:
        """Keep the model warm in host memory, off the device; refused while an answer runs."""
        if refusal := idle_refusal("park", ("ready",)):
            return refusal
        try:
            return JSONResponse(await asyncio.to_thread(state.park))
        except ParkError as exc:
            return JSONResponse(error_body(str(exc), "cannot_park"), status_code=409)

    @app.post("/unpark")
    async def unpark() -> JSONResponse:
        """Bring a parked model back onto the device."""
        if refusal := idle_refusal("unpark", ("parked",)):
            return refusal
        return JSONResponse(await asyncio.to_thread(state.unpark))

    @app.post("/unload")
    async def unload() -> JSONResponse:
        """Drop the model and become a spare again; refused while an answer runs."""
        if refusal := idle_refusal("unload", ("ready", "failed", "parked")):
            return refusal
        return JSONResponse(await asyncio.to_thread(state.unload))

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(request: Request) -> JSONResponse | EventSourceResponse:
        if state.status != "ready":
            return JSONResponse(error_body(f"model {state.model_id} is {state.status}", "unavailable", "busy"),
                                status_code=503)
        try:
            chat = ChatRequest.model_validate(await request.json())
            wanted = chat_input(chat, shared=True)  # vlm-image:sha256: names too: read from its server's folder
        except ValidationError as exc:
            return JSONResponse(error_body(first_problem(exc.errors())), status_code=400)
        except (ProtocolError, ValueError) as exc:
            return JSONResponse(error_body(str(exc)), status_code=400)
        try:  # decode and fit before streaming starts, so a bad or oversized input gets a 400, not a broken stream
            # one thread trip: shared files read (a copy, no decode), then the model's own preparation
            call = await asyncio.to_thread(lambda: state.adapter.prepare(load_images(wanted.images), wanted.prompt,
                                                                         wanted.params))
        except ImageError as exc:
            return JSONResponse(error_body(str(exc)), status_code=400)
        except InputTooLarge as exc:
            return JSONResponse(error_body(str(exc), code="context_length_exceeded"), status_code=400)
        writer = ChunkWriter(chat.model or state.model_id)
        answer = one_at_a_time(state, call, threads_of(request, state))
        if chat.stream:
            return EventSourceResponse(sse_answer(answer, writer))
        return await whole_answer(answer, writer, failure_status=500)

    return app


def threads_of(request: Request, state: WorkerState) -> int | None:
    """The CPU threads the pool gives this answer (its header), unless the worker's count is fixed."""
    value = request.headers.get(THREADS_HEADER, "")
    if state.fixed_threads or state.device != "cpu" or not value.isdigit():
        return None
    return max(1, min(int(value), os.cpu_count() or 1))


async def one_at_a_time(state: WorkerState, call: Call, threads: int | None = None) -> AsyncIterator[Timed]:
    """One generation at a time: each piece with the time to first token and the time so far.
    `threads`: the CPU threads to compute with from this answer on (applied on the generation thread)."""
    async with state.gate:
        if state.releasing is not None:
            await state.releasing
        if threads:
            compute_threads.wanted = threads
        state.active += 1
        try:
            # closed here, innermost last, so that generation has ended and its memory release is scheduled
            # before the turn is given up (left to the garbage collector, an unload could overtake it)
            async with contextlib.aclosing(generate_async(state, call, threading.Event())) as pieces, \
                    contextlib.aclosing(timed(pieces)) as items:
                async for item in items:
                    yield item
        finally:
            state.active -= 1


def watch_parent_stdin() -> None:
    """Exit when stdin reaches EOF (the parent closed it or died)."""

    def watch_stdin() -> None:
        with contextlib.suppress(Exception):
            while sys.stdin.buffer.read(1024):
                pass
        os._exit(0)

    if not sys.stdin.isatty():
        threading.Thread(target=watch_stdin, name="parent-watch", daemon=True).start()


def limit_cpu_threads(threads: int | None) -> None:
    """Several CPU workers share the cores: without a limit each would start a thread per core. Until the
    pool says otherwise (per answer), half the cores; the generation thread applies it before computing."""
    import torch

    count = threads or max(1, (os.cpu_count() or 2) // 2)
    torch.set_num_threads(count)
    compute_threads.wanted = count


def pick_device(requested: str) -> str:
    if requested != "auto":
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.worker", description="Serve one model.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--spec-json", help="the catalogue entry as JSON")
    source.add_argument("--model", help="catalogue id (with --models)")
    source.add_argument("--spare", action="store_true",
                        help="serve no model yet: prepare, then wait for POST /load with a catalogue entry")
    parser.add_argument("--warm", default="", help="families whose adapters a spare imports (comma-separated)")
    parser.add_argument("--models", default="models.yaml")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch threads on a CPU (default: half the cores, "
                                                                  "then what the pool gives each answer)")
    parser.add_argument("--no-parent-watch", action="store_true", help="keep running without a parent")
    args = parser.parse_args(argv)
    if not args.no_parent_watch and sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets that say so, and without it every response
    # after a connection's first waited 40 ms (headers and body in two writes: Nagle's algorithm and delayed ACKs)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(128)
    report("listening", port=sock.getsockname()[1], pid=os.getpid())
    device = pick_device(args.device)
    if device == "cpu":
        limit_cpu_threads(args.threads)
    token = os.environ.pop(TOKEN_ENV, None) or None
    if not args.no_parent_watch:
        watch_parent_stdin()
    import uvicorn

    if args.spare:
        state = WorkerState(None, device, fixed_threads=args.threads is not None)
    else:
        spec = ModelSpec.model_validate_json(args.spec_json) if args.spec_json else load_catalog(args.models).get(
            args.model)
        state = WorkerState(spec, device, fixed_threads=args.threads is not None)
    server = uvicorn.Server(uvicorn.Config(create_worker_app(state, token), log_level="warning", access_log=False,
                                           timeout_graceful_shutdown=5))
    if args.spare:
        families = [family for family in args.warm.split(",") if family]
        threading.Thread(target=state.prepare_spare, args=(families,), name="prepare", daemon=True).start()
    else:
        threading.Thread(target=state.load, name="load", daemon=True).start()
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
