"""Start and stop worker processes; each hosts one model and speaks the OpenAI protocol.

Every worker starts as a spare (`python -m app.worker --spare`): it imports torch, transformers and
the adapters, creates its device context, measures its own overhead and then waits for `POST
/load` with the catalogue entry of the model it is to serve. The launcher keeps one such spare per
runtime ready ahead of need (`prepare`), so a load pays for reading the weights, not for an
interpreter start and seconds of imports. An evicted worker becomes the runtime's spare again
(`recycle`: its weights dropped) where that is safe, so back-to-back swaps find a spare too.
"""

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
from app.core.memory import overhead_bytes
from app.core.protocol import EVENT_PREFIX, TOKEN_ENV
from app.pool.client import BackendError, OpenAIBackend
from app.pool.environment import worker_environment

GB = 1024**3


class LoadError(RuntimeError):
    """A worker that could not load its model; the message is the worker's reason."""


class SpareLost(LoadError):
    """The process asked to load a model was gone (or went) before it could answer."""


class WorkerHandle(Protocol):
    """What the pool needs of a running worker (real or fake)."""

    backend: Any
    measured_gb: float | None
    runtime: dict[str, str]
    overhead_gb: float | None

    @property
    def pid(self) -> int | None: ...

    async def terminate(self) -> int: ...

    async def wait_exit(self) -> int: ...

    async def measure_gb(self) -> float | None: ...

    async def health(self) -> dict[str, Any] | None: ...


class Launcher(Protocol):
    """Starts a model's worker. A launcher may also keep spares ready: then it has `prepare(runtime)`,
    `spare_gb(runtime)` and `close()` (see ProcessLauncher), which the pool uses where present."""

    async def start(self, spec: ModelSpec) -> WorkerHandle: ...


@dataclass
class ProcessWorker:
    """A live `python -m app.worker` process and the client that talks to it."""

    spec: ModelSpec
    process: asyncio.subprocess.Process
    port: int
    backend: OpenAIBackend
    client: httpx.AsyncClient
    measured_gb: float | None = None  # the model's own memory: weights and working memory at its peak
    runtime: dict[str, str] = field(default_factory=dict)
    stderr_path: Path | None = None
    overhead_gb: float | None = None  # what the process held before the weights (imports, CUDA context)
    token: str = ""  # the bearer token the worker answers to (kept when it becomes a spare again)

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
            if body.get("overhead_bytes") is not None:
                self.overhead_gb = body["overhead_bytes"] / GB
        return self.measured_gb

    async def park(self) -> float | None:
        """Keep the model warm in host memory, off its device (`POST /park`): the GB of weights kept there,
        or None where the worker cannot (the model does not move as a whole, an answer runs, it is gone)."""
        with contextlib.suppress(httpx.HTTPError, ValueError):
            response = await self.client.post(f"http://127.0.0.1:{self.port}/park", timeout=120)
            if response.status_code == 200:
                return float(response.json()["host_bytes"]) / GB
        return None

    async def unpark(self) -> None:
        """Bring parked weights back onto the device (`POST /unpark`); LoadError when that fails."""
        try:
            response = await self.client.post(f"http://127.0.0.1:{self.port}/unpark", timeout=600)
        except httpx.HTTPError as exc:
            raise LoadError(f"{self.spec.id}: its parked worker did not answer ({exc})") from None
        if response.status_code != 200:
            raise LoadError(_error_message_of(response))

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


@dataclass
class Spare:
    """A worker process that has prepared (or is preparing) and waits to be told its model."""

    runtime: str
    python: str
    process: asyncio.subprocess.Process
    token: str
    log_path: Path
    prepared: asyncio.Future[tuple[int, dict[str, Any]]]  # its port and measured overhead, once prepared

    def alive(self) -> bool:
        return self.process.returncode is None and not (self.prepared.done() and not self.prepared.cancelled()
                                                        and self.prepared.exception())

    def overhead_gb(self) -> float | None:
        """Its measured overhead, once it has prepared."""
        if not self.prepared.done() or self.prepared.cancelled() or self.prepared.exception():
            return None
        return overhead_gb(self.prepared.result()[1])

    async def discard(self) -> None:
        """Stop it (a spare holds nothing worth a graceful stop)."""
        self.prepared.cancel()
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()


def overhead_gb(overhead: dict[str, Any] | None) -> float | None:
    """A worker's overhead in GB of the memory the pool budgets (see app.core.memory.overhead_bytes)."""
    value = overhead_bytes(overhead)
    return None if value is None else value / GB


class ProcessLauncher:
    """Spawns workers with the Python of the model's runtime and waits for their ready report.

    `spares`: keep a prepared worker per runtime (1, the default) or none (0: each load starts and
    prepares its own process). `warm`: the families whose adapters a runtime's spare imports."""

    def __init__(self, log_dir: Path, python_for: Callable[[str, Callable[[str], None]], str] | None = None,
                 load_timeout_s: float = 900.0, device: str = "auto",
                 env: dict[str, str] | None = None, threads: int | None = None, spares: int = 1,
                 warm: dict[str, list[str]] | None = None) -> None:
        self.log_dir = log_dir
        self.python_for = python_for or _this_python
        self.progress: dict[str, str] = {}  # model id → what its start is doing now, for the page
        self.load_timeout_s = load_timeout_s
        self.device = device
        self.env = env or {}
        self.threads = threads
        self.spares = spares
        self.warm = warm or {}
        self.overheads: dict[str, float] = {}  # runtime → the overhead its last worker measured, in GB
        self._spares: dict[str, Spare] = {}
        self._preparing: dict[str, asyncio.Task[None]] = {}
        self._count = 0
        self._closed = False

    # --- spares --------------------------------------------------------------------------------------

    async def prepare(self, runtime: str = "default") -> None:
        """Have a spare ready for `runtime` (start one if there is none); returns once it has prepared."""
        if self.spares < 1 or self._closed:
            return
        if runtime not in self._preparing or self._preparing[runtime].done():
            self._preparing[runtime] = asyncio.create_task(self._keep_spare(runtime))
        await asyncio.shield(self._preparing[runtime])

    async def _keep_spare(self, runtime: str) -> None:
        spare = self._spares.get(runtime)
        if spare is None or not spare.alive():
            python = await asyncio.to_thread(self.python_for, runtime, lambda line: None)
            if self._closed:
                return
            spare = self._spares[runtime] = await self._spawn(runtime, python)
        with contextlib.suppress(Exception):  # a spare that fails is replaced when it is next needed
            await spare.prepared

    def spare_gb(self, runtime: str | None = None, fixed_gb: float | None = None) -> float:
        """Memory held by spares (of one runtime, or all): `fixed_gb` each where the plan uses a fixed
        overhead, else their measured overhead (the runtime's last figure while one still prepares)."""
        total = 0.0
        for name, spare in self._spares.items():
            if (runtime is None or name == runtime) and spare.alive():
                total += fixed_gb if fixed_gb is not None else spare.overhead_gb() or self.overheads.get(name, 0.0)
        return total

    def has_spare(self, runtime: str) -> bool:
        """Whether a spare of `runtime` is there (prepared, preparing, or being started) for the next load."""
        spare = self._spares.get(runtime)
        starting = self._preparing.get(runtime)
        return (spare is not None and spare.alive()) or (starting is not None and not starting.done())

    def spare_pids(self) -> set[int]:
        """The processes that are spares now (none of them holds a model)."""
        return {spare.process.pid for spare in self._spares.values() if spare.alive()}

    async def release_spares(self, keep: str | None = None) -> None:
        """Stop the spares of every runtime but `keep`: the pool needs their memory for a model."""
        for name in [name for name in self._spares if name != keep]:
            task = self._preparing.pop(name, None)
            if task:
                task.cancel()
            await self._spares.pop(name).discard()

    def expected_overhead_gb(self, runtime: str) -> float | None:
        """The overhead a worker of `runtime` measured last (None before any has)."""
        return self.overheads.get(runtime)

    async def _spawn(self, runtime: str, python: str) -> Spare:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._count += 1
        prune_logs(self.log_dir)
        log_path = self.log_dir / f"worker-{os.getpid()}-{self._count}.log"
        token = secrets.token_urlsafe(24)
        env = {**worker_environment(os.environ), "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false",
               **self.env, TOKEN_ENV: token}
        if runtime != "default":
            env.pop("PYTHONPATH", None)  # it would put the app's transformers before the runtime's pin
        families = ",".join(self.warm.get(runtime, []))
        with log_path.open("ab") as stderr:
            process = await asyncio.create_subprocess_exec(
                python, "-m", "app.worker", "--spare", "--port", "0", "--device", self.device,
                *(["--warm", families] if families else []),
                *(["--threads", str(self.threads)] if self.threads else []),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=stderr, env=env, start_new_session=True)
        prepared = asyncio.create_task(self._prepared(process, log_path))
        prepared.add_done_callback(lambda task: self._note_overhead(runtime, task))
        return Spare(runtime, python, process, token, log_path, prepared)

    async def _prepared(self, process: asyncio.subprocess.Process, log_path: Path) -> tuple[int, dict[str, Any]]:
        """The port a new spare listens on and its overhead, once it reports it has prepared."""
        port, event = await self._await_event(process, log_path, "spare")
        asyncio.create_task(_drain(process.stdout))  # later events go unread; the pipe must not fill
        return port, event.get("overhead") or {}

    def _note_overhead(self, runtime: str, task: asyncio.Future[tuple[int, dict[str, Any]]]) -> None:
        if task.cancelled() or task.exception():
            return
        measured = overhead_gb(task.result()[1])
        if measured is not None:
            self.overheads[runtime] = measured

    async def recycle(self, worker: ProcessWorker) -> bool:
        """Make an evicted worker its runtime's spare: it drops its weights and keeps its process, so the
        next load of that runtime starts at once. False (and the worker untouched) where that is not
        safe or not wanted: spares off, a spare already there, a model running remote code (its modules
        would stay imported), or a worker that does not unload."""
        runtime = worker.spec.runtime
        current = self._spares.get(runtime)
        if self.spares < 1 or self._closed or worker.spec.trust_remote_code or (current and current.alive()):
            return False
        if worker.process.returncode is not None:
            return False
        try:
            response = await worker.client.post(f"http://127.0.0.1:{worker.port}/unload", timeout=30)
            if response.status_code != 200:
                return False
            overhead = response.json().get("overhead") or {}
        except (httpx.HTTPError, ValueError):
            return False
        await worker.client.aclose()
        prepared: asyncio.Future[tuple[int, dict[str, Any]]] = asyncio.get_running_loop().create_future()
        prepared.set_result((worker.port, overhead))
        self._note_overhead(runtime, prepared)
        python = await asyncio.to_thread(self.python_for, runtime, lambda line: None)
        log_path = worker.stderr_path.resolve() if worker.stderr_path else self.log_dir / "worker.log"
        self._spares[runtime] = Spare(runtime, python, worker.process, worker.token, log_path, prepared)
        return True

    def _take_spare(self, runtime: str, python: str) -> Spare | None:
        spare = self._spares.pop(runtime, None)
        if spare is not None and spare.alive() and spare.python == python:
            return spare
        if spare is not None:
            asyncio.create_task(spare.discard())
        return None

    async def close(self) -> None:
        """Stop every spare (workers are the pool's to stop)."""
        self._closed = True
        for task in self._preparing.values():
            task.cancel()
        spares, self._spares = list(self._spares.values()), {}
        await asyncio.gather(*(spare.discard() for spare in spares), return_exceptions=True)

    # --- starting a model ------------------------------------------------------------------------------

    async def start(self, spec: ModelSpec) -> ProcessWorker:
        def report(line: str) -> None:
            self.progress[spec.id] = f"runtime {spec.runtime}: {line}"

        started = time.perf_counter()
        python = await asyncio.to_thread(self.python_for, spec.runtime, report)
        spare = self._take_spare(spec.runtime, python)
        if spare is not None:
            try:
                return await self._start_in(spare, spec, started, from_spare=spare.prepared.done())
            except SpareLost:  # it died while it waited (killed, out of memory): a new process does the load
                pass
        try:
            return await self._start_in(await self._spawn(spec.runtime, python), spec, started, from_spare=False)
        except SpareLost as exc:
            raise LoadError(str(exc)) from None

    async def _start_in(self, spare: Spare, spec: ModelSpec, started: float, from_spare: bool) -> ProcessWorker:
        """Load `spec` in `spare`'s process; SpareLost when that process turns out to be gone."""
        process = spare.process
        try:
            if not spare.prepared.done():
                self.progress[spec.id] = "starting a worker process (importing torch and transformers)"
            port, overhead = await asyncio.wait_for(asyncio.shield(spare.prepared), self.load_timeout_s)
            self.progress[spec.id] = "loading weights"
            # plain HTTP on loopback: no TLS context (loading the CA bundle cost 20 ms of every load)
            client = httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None), trust_env=False, verify=False,
                                       limits=httpx.Limits(max_keepalive_connections=16),
                                       headers={"Authorization": f"Bearer {spare.token}"})
            remaining = max(1.0, self.load_timeout_s - (time.perf_counter() - started))
            ready = await self._load(client, port, spec, remaining, spare)
        except TimeoutError:
            await spare.discard()
            raise LoadError(f"{spec.id}: not ready after {self.load_timeout_s:.0f} s") from None
        except BaseException:
            await spare.discard()
            raise
        finally:
            self.progress.pop(spec.id, None)
        log_path = link_log(self.log_dir / f"{spec.id}.log", spare.log_path)
        backend = WorkerBackend(f"http://127.0.0.1:{port}/v1", spec.id, client=client, label=spec.id, process=process)
        memory = ready.get("memory", {})
        worker = ProcessWorker(spec, process, port, backend, client,
                               measured_gb=None if memory.get("bytes") is None else memory["bytes"] / GB,
                               runtime=ready.get("runtime", {}), stderr_path=log_path,
                               overhead_gb=overhead_gb(overhead), token=spare.token)
        worker.runtime["load_s"] = str(round(time.perf_counter() - started, 3))
        worker.runtime["spare"] = "yes" if from_spare else "no"
        return worker

    async def _load(self, client: httpx.AsyncClient, port: int, spec: ModelSpec, timeout_s: float,
                    spare: Spare) -> dict[str, Any]:
        """Tell a spare which model to load; its ready report, or LoadError with the worker's reason."""
        try:
            response = await client.post(f"http://127.0.0.1:{port}/load", content=spec.model_dump_json(),
                                         headers={"Content-Type": "application/json"}, timeout=timeout_s)
        except httpx.TimeoutException:
            await client.aclose()
            raise TimeoutError from None
        except httpx.HTTPError as exc:
            await client.aclose()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(spare.process.wait(), 2.0)
            tail = _tail(spare.log_path, 3)
            why = describe_exit(spare.process.returncode) if spare.process.returncode is not None else str(exc)
            raise SpareLost(f"worker stopped while loading ({why})" + (f": {tail}" if tail else "")) from None
        if response.status_code != 200:
            await client.aclose()
            raise LoadError(_error_message_of(response))
        return dict(response.json())

    async def _await_event(self, process: asyncio.subprocess.Process, log_path: Path,
                           wanted: str) -> tuple[int, dict[str, Any]]:
        """Read the worker's event lines until the `wanted` event (with the port it listens on) or a failure."""
        port = 0
        assert process.stdout is not None
        while True:
            line = await process.stdout.readline()
            if not line:
                code = await process.wait()
                tail = _tail(log_path, 3)
                raise LoadError(f"worker exited with code {code} before it was ready" + (f": {tail}" if tail else ""))
            text = line.decode(errors="replace").strip()
            if not text.startswith(EVENT_PREFIX):
                continue
            event = json.loads(text[len(EVENT_PREFIX):])
            if event["event"] == "listening":
                port = int(event["port"])
            elif event["event"] == wanted:
                return port, event
            elif event["event"] == "failed":
                raise LoadError(event.get("error") or "load failed")


KEEP_LOGS = 64  # worker log files kept; older ones are removed as new workers start


def link_log(link: Path, target: Path) -> Path:
    """`<model>.log` pointing at the log of the process that serves the model now (one process may serve
    several models in turn: each link shows its whole history). Returns the link, or the target where
    links cannot be made."""
    with contextlib.suppress(OSError):
        temporary = link.with_name(f".{link.name}.{os.getpid()}")
        temporary.unlink(missing_ok=True)
        temporary.symlink_to(target.name)
        os.replace(temporary, link)
        return link
    return target


def prune_logs(log_dir: Path, keep: int = KEEP_LOGS) -> None:
    """Remove all but the newest `keep` worker logs, and model links left pointing at nothing."""
    with contextlib.suppress(OSError):
        logs = sorted(log_dir.glob("worker-*.log"), key=lambda path: path.stat().st_mtime, reverse=True)
        for old in logs[keep:]:
            old.unlink(missing_ok=True)
        for link in log_dir.glob("*.log"):
            if link.is_symlink() and not link.exists():
                link.unlink(missing_ok=True)


def _error_message_of(response: httpx.Response) -> str:
    with contextlib.suppress(ValueError, KeyError, TypeError):
        return str(response.json()["error"]["message"])
    return f"HTTP {response.status_code}: {response.text[:300]}"


async def _drain(stream: asyncio.StreamReader | None) -> None:
    """Keep reading a worker's stdout so it never blocks on a full pipe."""
    if stream is None:
        return
    with contextlib.suppress(Exception):
        while await stream.readline():
            pass
