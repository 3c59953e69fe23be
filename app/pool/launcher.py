"""Start and stop worker processes; each hosts one model and speaks the OpenAI protocol."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx

from app.core.catalog import ModelSpec
from app.core.protocol import EVENT_PREFIX, TOKEN_ENV
from app.pool.client import BackendError, OpenAIBackend
from app.pool.environment import worker_environment

GB = 1024**3


class LoadError(RuntimeError):
    """A worker that could not load its model; the message is the worker's reason."""


class WorkerHandle(Protocol):
    """What the pool needs of a running worker (real or fake)."""

    backend: Any
    measured_gb: float | None
    runtime: dict[str, str]

    @property
    def pid(self) -> int | None: ...

    async def terminate(self) -> int: ...

    async def wait_exit(self) -> int: ...

    async def measure_gb(self) -> float | None: ...

    async def health(self) -> dict[str, Any] | None: ...


class Launcher(Protocol):
    """Starts a model's worker; the pool needs nothing else of it."""

    async def start(self, spec: ModelSpec) -> WorkerHandle: ...


@dataclass
class ProcessWorker:
    """A live `python -m app.worker` process and the client that talks to it."""

    spec: ModelSpec
    process: asyncio.subprocess.Process
    port: int
    backend: OpenAIBackend
    client: httpx.AsyncClient
    measured_gb: float | None = None
    runtime: dict[str, str] = field(default_factory=dict)
    stderr_path: Path | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    async def wait_exit(self) -> int:
        return await self.process.wait()

    async def measure_gb(self) -> float | None:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            response = await self.client.get(f"http://127.0.0.1:{self.port}/memory", timeout=5)
            body = response.json()  # the peak: weights plus the largest request's working memory so far
            self.measured_gb = max(body.get("peak_bytes", body["bytes"]), 0) / GB
        return self.measured_gb

    async def health(self, timeout_s: float = 2.0) -> dict[str, Any] | None:
        """The worker's `/health` answer, or None when it does not answer within `timeout_s`."""
        try:
            response = await self.client.get(f"http://127.0.0.1:{self.port}/health", timeout=timeout_s)
            return dict(response.json())
        except (httpx.HTTPError, ValueError):
            return None

    async def terminate(self, grace_s: float = 10.0) -> int:
        """SIGTERM, then SIGKILL after `grace_s`; returns once the process has exited."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), grace_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()
        await self.client.aclose()
        return self.process.returncode or 0


def _tail(path: Path | None, lines: int) -> str:
    if path is None or not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").strip().splitlines()[-lines:])


class WorkerBackend(OpenAIBackend):
    """The client of one local worker: a broken stream from a worker that died says so."""

    def __init__(self, *args: Any, process: asyncio.subprocess.Process, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.process = process

    async def stream(self, *args: Any, **kwargs: Any) -> Any:
        try:
            async for piece in super().stream(*args, **kwargs):
                yield piece
        except BackendError as exc:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.process.wait()), 2.0)
            if self.process.returncode is None:
                raise
            why = describe_exit(self.process.returncode)
            raise BackendError(f"{self.label}: its worker process stopped mid-answer ({why}); "
                               "the next request starts a new one") from exc


def describe_exit(code: int) -> str:
    """'killed by SIGKILL' for a signal, else 'exit code N'."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


def _this_python(runtime: str, progress: Callable[[str], None]) -> str:
    """Without runtimes, every worker runs with the server's own interpreter."""
    return sys.executable


class ProcessLauncher:
    """Spawns workers with the Python of the model's runtime and waits for their ready report."""

    def __init__(self, log_dir: Path, python_for: Callable[[str, Callable[[str], None]], str] | None = None,
                 load_timeout_s: float = 900.0, device: str = "auto",
                 env: dict[str, str] | None = None, threads: int | None = None) -> None:
        self.log_dir = log_dir
        self.python_for = python_for or _this_python
        self.progress: dict[str, str] = {}  # model id → what its start is doing now, for the page
        self.load_timeout_s = load_timeout_s
        self.device = device
        self.env = env or {}
        self.threads = threads

    async def start(self, spec: ModelSpec) -> ProcessWorker:
        def report(line: str) -> None:
            self.progress[spec.id] = f"runtime {spec.runtime}: {line}"

        python = await asyncio.to_thread(self.python_for, spec.runtime, report)
        self.progress[spec.id] = "loading weights"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        stderr_path = self.log_dir / f"{spec.id}.log"
        token = secrets.token_urlsafe(24)
        env = {**worker_environment(os.environ), "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false",
               **self.env, TOKEN_ENV: token}
        if spec.runtime != "default":
            env.pop("PYTHONPATH", None)  # it would put the app's transformers before the runtime's pin
        with stderr_path.open("ab") as stderr:
            process = await asyncio.create_subprocess_exec(
                python, "-m", "app.worker", "--spec-json", spec.model_dump_json(), "--port", "0",
                "--device", self.device, *(["--threads", str(self.threads)] if self.threads else []),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=stderr, env=env, start_new_session=True)
        started = time.perf_counter()
        try:
            port, ready = await asyncio.wait_for(self._await_ready(process, stderr_path), self.load_timeout_s)
        except TimeoutError:
            self.progress.pop(spec.id, None)
            process.kill()
            await process.wait()
            raise LoadError(f"{spec.id}: not ready after {self.load_timeout_s:.0f} s") from None
        except BaseException:
            self.progress.pop(spec.id, None)
            if process.returncode is None:
                process.kill()
                await process.wait()
            raise
        client = httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None), trust_env=False,
                                   limits=httpx.Limits(max_keepalive_connections=16),
                                   headers={"Authorization": f"Bearer {token}"})
        backend = WorkerBackend(f"http://127.0.0.1:{port}/v1", spec.id, client=client, label=spec.id, process=process)
        memory = ready.get("memory", {}).get("bytes")
        worker = ProcessWorker(spec, process, port, backend, client,
                               measured_gb=None if memory is None else memory / GB,
                               runtime=ready.get("runtime", {}), stderr_path=stderr_path)
        worker.runtime["load_s"] = str(round(time.perf_counter() - started, 3))
        self.progress.pop(spec.id, None)
        asyncio.create_task(_drain(process.stdout))
        return worker

    async def _await_ready(self, process: asyncio.subprocess.Process, stderr_path: Path) -> tuple[int, dict]:
        """Read the worker's event lines until it is ready or has failed."""
        port = 0
        assert process.stdout is not None
        while True:
            line = await process.stdout.readline()
            if not line:
                code = await process.wait()
                tail = _tail(stderr_path, 3)
                raise LoadError(f"worker exited with code {code} before it was ready" + (f": {tail}" if tail else ""))
            text = line.decode(errors="replace").strip()
            if not text.startswith(EVENT_PREFIX):
                continue
            event = json.loads(text[len(EVENT_PREFIX):])
            if event["event"] == "listening":
                port = int(event["port"])
            elif event["event"] == "ready":
                return port, event
            elif event["event"] == "failed":
                raise LoadError(event.get("error") or "load failed")


async def _drain(stream: asyncio.StreamReader | None) -> None:
    """Keep reading a worker's stdout so it never blocks on a full pipe."""
    if stream is None:
        return
    with contextlib.suppress(Exception):
        while await stream.readline():
            pass
