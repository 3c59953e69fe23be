"""ModelPool: which models are resident, within a memory budget, and who is using them.

`async with pool.lease(model_id) as backend:` gives a backend for one model. A hit refreshes the
LRU order; a miss loads the model once however many requests ask at the same moment (single
flight), after evicting least-recently-used idle models until it fits. A model with a lease is
never evicted; when nothing idle can make room, the request waits (bounded) and then gets a
clear "busy" error. A model larger than the whole budget fails at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from app.core.catalog import Catalog, ModelSpec
from app.core.protocol import THREADS_HEADER
from app.pool.client import OpenAIBackend
from app.pool.errors import Busy, PoolError, TooLarge, TooManyWaiting, Unavailable
from app.pool.launcher import Launcher, LoadError, WorkerHandle
from app.pool.sizes import SizeBook
from app.pool.turns import Position, Turns

log = logging.getLogger("vlm_playground.pool")
__all__ = ["Busy", "ModelPool", "ModelState", "PoolError", "ResidentState", "TooLarge", "TooManyWaiting",
           "Unavailable", "detect_budget_gb", "detect_warm_budget_gb"]
STOP_GRACE_S = 5.0  # how long a worker may take to stop an answer that ran past the time limit


class ResidentState(StrEnum):
    """A resident model's worker: starting and loading, answering-ready, or ready with leases held."""

    LOADING = "loading"
    READY = "ready"
    BUSY = "busy"
    PARKED = "parked"  # evicted, its weights kept warm in host memory by its own process


class ModelState(StrEnum):
    """A catalogue model as the picker sees it against the pool."""

    RESIDENT = "resident"
    LOADING = "loading"
    PARKED = "parked"
    FITS = "fits"
    EVICTS = "evicts"
    TOO_LARGE = "too large"
    REMOTE = "remote"
    UNAVAILABLE = "unavailable"


@dataclass
class Resident:
    """A model the pool holds (or is loading) and its bookkeeping."""

    spec: ModelSpec
    planned_gb: float
    state: ResidentState = field(default_factory=lambda: ResidentState.LOADING)
    leases: int = 0
    last_used: float = 0.0
    worker: WorkerHandle | None = None
    ready: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    watcher: asyncio.Task | None = None
    host_gb: float = 0.0  # while parked: the weights it keeps in host memory (the warm budget)
    load_started: float | None = None  # its last load (or unpark), on the pool's clock
    load_ended: float | None = None
    parking: asyncio.Task | None = None  # its move to host memory, while that runs


@dataclass(eq=False)
class SwapWait:
    """A request waiting for memory to load its model, and how many answers have ended since."""

    spec: ModelSpec
    planned: float
    passed: int = 0


@dataclass
class Failure:
    message: str
    at: float


@dataclass
class Counters:
    hits: int = 0
    misses: int = 0
    loads: int = 0
    evictions: int = 0
    load_failures: int = 0
    crashes: int = 0
    parks: int = 0
    unparks: int = 0


class ModelPool:
    """Keeps models resident within `budget_gb`, evicting the least recently used idle ones."""

    def __init__(self, catalog: Catalog, launcher: Launcher, budget_gb: float, sizes: SizeBook | None = None,
                 wait_timeout_s: float = 120.0, retry_after_s: float = 30.0, idle_timeout_s: float | None = None,
                 queue_timeout_s: float = 120.0, max_queued_per_client: int = 4, swap_patience: int = 4,
                 warm_budget_gb: float = 0.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.catalog = catalog
        self.launcher = launcher
        self.budget_gb = budget_gb
        self.warm_budget_gb = warm_budget_gb  # host memory for evicted models' weights, kept warm (parked)
        self.sizes = sizes or SizeBook()
        self.wait_timeout_s = wait_timeout_s
        self.retry_after_s = retry_after_s
        self.idle_timeout_s = idle_timeout_s
        self.queue_timeout_s = queue_timeout_s
        self.max_queued_per_client = max_queued_per_client
        self.swap_patience = swap_patience  # answers that may go ahead of a request waiting for a swap
        self._swap_waits: list[SwapWait] = []
        self.clock = clock
        self.counters = Counters()
        self._turns: dict[str, Turns] = {}
        self._resident: dict[str, Resident] = {}
        self._draining: dict[int, float] = {}  # id(resident) → planned GB, until its process exits
        self._failures: dict[str, Failure] = {}
        self._remote: dict[str, OpenAIBackend] = {}
        self._answering: dict[str, int] = {}  # model id → requests holding their turn now
        self.cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self._lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self._reaper: asyncio.Task | None = None
        self._closed = False

    # --- accounting --------------------------------------------------------------------------------

    def planned_gb(self, spec: ModelSpec) -> float:
        planned = self.sizes.planned_gb(spec)
        if planned is None:
            raise Unavailable(f"{spec.id} has no memory figure to plan with")
        return planned

    def used_gb(self) -> float:
        """Memory held or reserved: resident and loading models, evicted ones not yet exited, and the
        launcher's spare workers."""
        return (sum(r.planned_gb for r in self._resident.values()) + sum(self._draining.values())
                + self.spares_gb())

    def warm_used_gb(self) -> float:
        """Host memory parked models keep their weights in (within `warm_budget_gb`)."""
        return sum(r.host_gb for r in self._resident.values() if r.state == ResidentState.PARKED)

    def _overhead_of(self, resident: Resident) -> float:
        """What a model's process holds beyond its weights, in the budget's memory (a parked one keeps it)."""
        measured = getattr(resident.worker, "overhead_gb", None)
        planned = self.sizes.overhead_for(resident.spec.runtime)
        return min(resident.planned_gb, measured if measured is not None and self.sizes.overhead_gb is None
                   else planned)

    def spares_gb(self, runtime: str | None = None) -> float:
        """What the launcher's prepared spare workers hold (of one runtime, or all)."""
        spare_gb = getattr(self.launcher, "spare_gb", None)
        return float(spare_gb(runtime, self.sizes.overhead_gb)) if spare_gb else 0.0

    def cpu_threads_now(self) -> int:
        """The CPU thread policy: the cores shared evenly by the models answering now (this one included),
        so a lone answer gets them all."""
        answering = sum(1 for count in self._answering.values() if count) or 1
        return max(1, self.cores // answering)

    def _thread_headers(self) -> dict[str, str]:
        return {THREADS_HEADER: str(self.cpu_threads_now())}

    def _signal(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # --- leasing -----------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lease(self, model_id: str, client: str = "", on_position: Position | None = None) -> AsyncIterator[Any]:
        """A backend for `model_id`, loaded if needed, once it is this request's turn on it.

        Held models are never evicted. Requests for a local model take turns (see `Turns`): `client`
        names who asks, for round-robin between clients; `on_position` hears how many are ahead."""
        spec = self._spec(model_id)
        if spec.is_remote:
            yield self._remote_backend(spec)
            return
        resident = await self._acquire(spec)
        try:
            async with self.turns(spec.id).turn(client, on_position):
                self._answering[spec.id] = self._answering.get(spec.id, 0) + 1
                try:
                    yield resident.worker.backend  # type: ignore[union-attr]
                finally:
                    self._answering[spec.id] -= 1
        finally:
            resident.leases -= 1
            resident.last_used = self.clock()
            for swap in self._swap_waits:
                swap.passed += 1
            self._signal()

    def turns(self, model_id: str) -> Turns:
        """The queue of requests for one local model (one answer at a time on its worker)."""
        if model_id not in self._turns:
            self._turns[model_id] = Turns(model_id, max_waiting=self.max_queued_per_client,
                                          timeout_s=self.queue_timeout_s, clock=self.clock)
        return self._turns[model_id]

    def _spec(self, model_id: str) -> ModelSpec:
        try:
            spec = self.catalog.get(model_id)
        except KeyError:
            raise Unavailable(f"unknown model '{model_id}'") from None
        if not spec.available:
            raise Unavailable(f"{spec.id} is unavailable: {spec.unavailable_reason}")
        return spec

    def _remote_backend(self, spec: ModelSpec) -> OpenAIBackend:
        if spec.id not in self._remote:
            key = os.environ.get(spec.api_key_env) if spec.api_key_env else None
            self._remote[spec.id] = OpenAIBackend(spec.endpoint or "", spec.served_model or spec.repo or spec.id,
                                                  api_key=key, label=spec.id)
        self.counters.hits += 1
        return self._remote[spec.id]

    async def _acquire(self, spec: ModelSpec) -> Resident:
        planned = self.planned_gb(spec)
        if planned > self.budget_gb:
            raise TooLarge(f"{spec.id} needs {planned:.2f} GB but the whole budget is {self.budget_gb:.2f} GB")
        deadline = self.clock() + self.wait_timeout_s
        counted = False
        swap = SwapWait(spec, planned)
        try:
            while True:
                async with self._lock:
                    if self._closed:
                        raise Unavailable("the pool is shutting down")
                    resident = self._resident.get(spec.id)
                    if resident is not None and resident.state == ResidentState.PARKED:
                        if not counted:
                            self.counters.misses += 1
                            counted = True
                        if await self._unpark_locked(resident, planned):
                            break
                        if swap not in self._swap_waits:
                            self._swap_waits.append(swap)
                    elif resident is not None and not self._held_back(resident):
                        resident.leases += 1
                        if not counted:
                            self.counters.hits += resident.state == ResidentState.READY
                            self.counters.misses += resident.state != ResidentState.READY
                        break
                    if resident is None:
                        self._check_backoff(spec)
                        if not counted:
                            self.counters.misses += 1
                            counted = True
                        resident = await self._start_load_locked(spec, planned)
                        if resident is not None:
                            break
                        victims = self._victims(planned, needs_process=spec.runtime)
                        if victims:  # evict, and reserve the room they leave in the same step
                            resident = self._reserve_locked(spec, planned, after=self._evict_all_locked(victims))
                            break
                        if swap not in self._swap_waits:
                            self._swap_waits.append(swap)  # waits for room: answers that pass it are counted
                    waiter = self._changed
                remaining = deadline - self.clock()
                if remaining <= 0:
                    raise Busy(self._busy_message(spec, planned))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter.wait(), remaining)
        finally:
            if swap in self._swap_waits:
                self._swap_waits.remove(swap)
                self._signal()
        try:
            await asyncio.shield(resident.ready)
        except BaseException:
            resident.leases -= 1
            raise
        resident.last_used = self.clock()
        return resident

    async def _unpark_locked(self, resident: Resident, planned: float) -> bool:
        """Start bringing a parked model back (evicting others to make room); False while it cannot yet.
        Its process is there already, so spares are stopped where it needs their memory."""
        if resident.parking is not None and not resident.parking.done():
            return False  # still moving to host memory: wait for that first
        extra = planned - resident.planned_gb  # its process's share is counted already
        after: list[asyncio.Task] = []
        if self.used_gb() + extra > self.budget_gb:
            host_gb, resident.host_gb = resident.host_gb, 0.0  # its warm share is free once it is back
            victims = self._victims(extra, exclude=resident)
            if not victims and self.used_gb() - self.spares_gb() + extra > self.budget_gb:
                resident.host_gb = host_gb
                return False
            release = getattr(self.launcher, "release_spares", None)
            if release is not None:
                await release()
            after = self._evict_all_locked(victims)
        resident.state, resident.planned_gb, resident.host_gb = ResidentState.LOADING, planned, 0.0
        resident.ready = asyncio.get_running_loop().create_future()
        resident.leases += 1

        async def unpark() -> None:
            if after:
                await asyncio.gather(*after, return_exceptions=True)
            await self._unpark(resident)

        asyncio.create_task(unpark())
        return True

    async def _unpark(self, resident: Resident) -> None:
        assert resident.worker is not None
        resident.load_started = self.clock()
        try:
            await resident.worker.unpark()  # type: ignore[attr-defined]
        except BaseException as exc:
            message = str(exc) if isinstance(exc, LoadError) else f"{type(exc).__name__}: {exc}"
            async with self._lock:
                if self._resident.get(resident.spec.id) is resident:
                    self._evict_locked(resident, counted=False)
            resident.ready.set_exception(Unavailable(f"{resident.spec.id} failed to come back from host memory: "
                                                     f"{message}"))
            resident.ready.exception()
            await self._drain(resident, reuse=False)
            return
        resident.state = ResidentState.READY
        resident.load_ended = self.clock()
        self.counters.unparks += 1
        resident.ready.set_result(None)
        self._signal()

    def _evict_all_locked(self, victims: list[tuple[Resident, bool]]) -> list[asyncio.Task]:
        """Evict each victim — parked (weights kept in host memory) or dropped — and return the tasks that
        free their memory (tasks: a requester that gives up must not leave a worker half-stopped)."""
        tasks = []
        for victim, park in victims:
            if park:
                tasks.append(self._park_locked(victim))
            else:
                self._evict_locked(victim)
                tasks.append(asyncio.create_task(self._drain(victim)))
        return tasks

    def _park_locked(self, resident: Resident) -> asyncio.Task:
        """Park an idle ready model: from now it counts its process's overhead in the budget and its weights
        in the warm budget (an estimate until the worker reports them)."""
        overhead = self._overhead_of(resident)
        resident.state, resident.host_gb = ResidentState.PARKED, resident.planned_gb - overhead
        resident.planned_gb = overhead
        self.counters.evictions += 1
        resident.parking = asyncio.create_task(self._park(resident))
        return resident.parking

    async def _park(self, resident: Resident) -> None:
        assert resident.worker is not None
        await self._record_size(resident)
        host_gb = await resident.worker.park()  # type: ignore[attr-defined]
        async with self._lock:
            if self._resident.get(resident.spec.id) is not resident:
                return  # its process exited meanwhile (the watcher removed it)
            if host_gb is None:  # it cannot park: unload it after all
                self._evict_locked(resident, counted=False)
            else:
                resident.host_gb = host_gb
                self.counters.parks += 1
                self._signal()
                return
        await self._drain(resident)

    async def _start_load_locked(self, spec: ModelSpec, planned: float) -> Resident | None:
        """Reserve the memory and start loading `spec` if it fits now (its runtime's spare becomes its
        process; other runtimes' spares are stopped if that makes it fit); None when it does not fit."""
        if self.used_gb() - self.spares_gb(spec.runtime) + planned > self.budget_gb:
            if self.used_gb() - self.spares_gb() + planned > self.budget_gb:
                return None
            await self.launcher.release_spares(keep=spec.runtime)  # type: ignore[attr-defined]
        return self._reserve_locked(spec, planned)

    def _reserve_locked(self, spec: ModelSpec, planned: float, after: list[asyncio.Task] | None = None) -> Resident:
        """Hold `planned` GB for `spec` and load it (once the evictions `after` have let go of their memory)."""
        resident = Resident(spec, planned, leases=1, last_used=self.clock())
        self._resident[spec.id] = resident

        async def load() -> None:
            if after:
                await asyncio.gather(*after, return_exceptions=True)
            await self._load(resident)

        asyncio.create_task(load())
        return resident

    def _held_back(self, resident: Resident) -> bool:
        """Swap-aware turns with bounded unfairness: requests for resident models go ahead of one waiting
        for memory to load another, until `swap_patience` answers have passed it; from then on, new
        requests for the residents it needs evicted wait until it has its model."""
        for swap in self._swap_waits:
            if swap.passed >= self.swap_patience and swap.spec.id != resident.spec.id \
                    and resident in self._would_evict(swap.planned):
                return True
        return False

    def _would_evict(self, planned: float) -> list[Resident]:
        """The residents a load of `planned` GB would evict once their answers end (LRU order, unpinned)."""
        return [resident for resident, _ in self._least_recent(planned, idle_only=False)[0]]

    def _check_backoff(self, spec: ModelSpec) -> None:
        failure = self._failures.get(spec.id)
        if failure is None:
            return
        wait = failure.at + self.retry_after_s - self.clock()
        if wait > 0:
            raise Unavailable(f"{spec.id} failed to load: {failure.message} (next try in {wait:.0f} s)")
        del self._failures[spec.id]

    def _victims(self, planned: float, needs_process: str | None = None,
                 exclude: Resident | None = None) -> list[tuple[Resident, bool]]:
        """Idle, unpinned, ready or parked models in LRU order, just enough to make room, each with whether
        it is parked rather than dropped; none if they can't make room."""
        chosen, enough = self._least_recent(planned, idle_only=True, needs_process=needs_process, exclude=exclude)
        return chosen if enough else []

    def _least_recent(self, planned: float, idle_only: bool, needs_process: str | None = None,
                      exclude: Resident | None = None) -> tuple[list[tuple[Resident, bool]], bool]:
        """Ready (without leases, if `idle_only`) and parked unpinned residents in LRU order, just enough to make
        room for `planned` GB, and whether they are enough.

        A ready one is parked where the warm budget has room for its weights: it keeps its process (and
        that process's overhead in the budget), so a later request copies the weights back instead of
        loading them. Dropped instead: where the warm budget is full, and the first one of the runtime
        `needs_process` when that runtime has no spare, since the load needs a process and reusing an
        evicted one saves starting an interpreter. A parked one is dropped: its overhead and its weights'
        host memory are freed (its process becomes the spare where none is left)."""
        candidates = sorted((r for r in self._resident.values() if r is not exclude and not r.spec.preload and (
            r.state == ResidentState.PARKED or (r.state == ResidentState.READY and not (idle_only and r.leases)))),
            key=lambda r: r.last_used)
        need = self.used_gb() - self.spares_gb() + planned - self.budget_gb
        warm_free = self.warm_budget_gb - self.warm_used_gb()
        has_spare = getattr(self.launcher, "has_spare", None)
        process_wanted = needs_process is not None and has_spare is not None and not has_spare(needs_process)
        chosen: list[tuple[Resident, bool]] = []
        older_parked: list[Resident] = []  # parked before the one at hand, not dropped: room in the warm budget
        for resident in candidates:
            if need <= 1e-9:
                break
            if resident.state == ResidentState.PARKED:
                if resident.parking is not None and not resident.parking.done():
                    continue  # moving to host memory now: its device memory is being freed already
                if resident.planned_gb <= 1e-9 and not (process_wanted and resident.spec.runtime == needs_process):
                    older_parked.append(resident)  # dropping it frees no budget, only warm room
                    continue
                chosen.append((resident, False))
                need -= resident.planned_gb
                warm_free += resident.host_gb
                process_wanted = process_wanted and resident.spec.runtime != needs_process
                continue
            overhead = self._overhead_of(resident)
            weights = resident.planned_gb - overhead
            reuse = process_wanted and resident.spec.runtime == needs_process and not resident.spec.trust_remote_code
            park = not reuse and hasattr(resident.worker, "park") and weights <= self.warm_budget_gb
            while park and warm_free + 1e-9 < weights and older_parked:  # older parked weights make way
                dropped = older_parked.pop(0)
                chosen.append((dropped, False))
                need -= dropped.planned_gb
                warm_free += dropped.host_gb
            park = park and warm_free + 1e-9 >= weights
            chosen.append((resident, park))
            if park:
                need -= weights
                warm_free -= weights
            else:
                need -= resident.planned_gb
                process_wanted = process_wanted and not reuse
        return chosen, need <= 1e-9

    def _busy_message(self, spec: ModelSpec, planned: float) -> str:
        busy = ", ".join(f"{r.spec.id} ({r.planned_gb:.2f} GB, {r.leases} in use)"
                         for r in self._resident.values()) or "none"
        return (f"{spec.id} needs {planned:.2f} GB; {self.budget_gb - self.used_gb():.2f} GB of "
                f"{self.budget_gb:.2f} GB free and every resident model is in use ({busy}); "
                f"waited {self.wait_timeout_s:g} s")

    # --- loading, eviction, crashes ----------------------------------------------------------------

    async def _load(self, resident: Resident) -> None:
        spec = resident.spec
        resident.load_started = self.clock()
        try:
            worker = await self.launcher.start(spec)
        except BaseException as exc:
            message = str(exc) if isinstance(exc, LoadError) else f"{type(exc).__name__}: {exc}"
            async with self._lock:
                self._resident.pop(spec.id, None)
                self._failures[spec.id] = Failure(message, self.clock())
                self.counters.load_failures += 1
                self._signal()
            resident.ready.set_exception(Unavailable(f"{spec.id} failed to load: {message}"))
            resident.ready.exception()  # mark retrieved: waiters may all have gone
            return
        if self._closed:  # the pool closed while this model loaded
            self._resident.pop(spec.id, None)
            await worker.terminate()
            resident.ready.set_exception(Unavailable("the pool is shutting down"))
            resident.ready.exception()
            return
        resident.worker = worker
        resident.state = ResidentState.READY
        self.counters.loads += 1
        overhead = getattr(worker, "overhead_gb", None)
        if overhead is not None:
            self.sizes.record_overhead(spec.runtime, overhead)
        if worker.measured_gb:
            await asyncio.to_thread(self.sizes.record, spec.id, worker.measured_gb)
        resident.planned_gb = self.planned_gb(spec)  # what it was found to need, its process included
        backend = worker.backend
        if hasattr(backend, "extra_headers"):
            backend.extra_headers = self._thread_headers
        resident.watcher = asyncio.create_task(self._watch(resident))
        resident.load_ended = self.clock()
        resident.ready.set_result(None)
        self._signal()
        self._keep_spare(spec.runtime)

    async def _watch(self, resident: Resident) -> None:
        """Remove a worker that exits on its own (crash, out of memory, kill -9)."""
        assert resident.worker is not None
        code = await resident.worker.wait_exit()
        async with self._lock:
            if self._resident.get(resident.spec.id) is resident:
                del self._resident[resident.spec.id]
                self.counters.crashes += 1
                log.warning("worker for %s exited unexpectedly (code %s)", resident.spec.id, code)
                self._signal()
        with contextlib.suppress(Exception):
            await resident.worker.terminate()  # already gone: this only closes its client

    def _evict_locked(self, resident: Resident, counted: bool = True) -> None:
        """Take a model out of the pool; its memory counts as draining until its worker lets go of it.
        `counted`: an eviction to make room (not a failure, nor the second half of one counted already)."""
        del self._resident[resident.spec.id]
        self._draining[id(resident)] = resident.planned_gb
        self.counters.evictions += counted

    async def _record_size(self, resident: Resident) -> None:
        """Ask the worker for its peak before it lets go of the model; the next plan for the model uses it."""
        assert resident.worker is not None
        with contextlib.suppress(Exception):
            await resident.worker.measure_gb()
            if resident.worker.measured_gb:
                await asyncio.to_thread(self.sizes.record, resident.spec.id, resident.worker.measured_gb)

    async def _drain(self, resident: Resident, reuse: bool = True) -> None:
        """Stop an evicted worker — made a spare again (`reuse`, where the launcher can), else terminated and
        waited for until it has exited — then free its memory."""
        try:
            if resident.watcher:
                resident.watcher.cancel()
            if resident.worker is not None:
                await self._record_size(resident)
                recycle = getattr(self.launcher, "recycle", None)  # its process may become the next spare
                if not reuse or self._closed or recycle is None or not await recycle(resident.worker):
                    await resident.worker.terminate()
        finally:
            async with self._lock:
                self._draining.pop(id(resident), None)
                self._signal()
            self._keep_spare(resident.spec.runtime)

    def _keep_spare(self, runtime: str) -> None:
        """Have the launcher prepare a spare worker for `runtime` in the background, where it fits."""
        prepare = getattr(self.launcher, "prepare", None)
        has_spare = getattr(self.launcher, "has_spare", lambda runtime: bool(self.spares_gb(runtime)))
        if prepare is None or self._closed or has_spare(runtime):
            return
        expected = getattr(self.launcher, "expected_overhead_gb", lambda runtime: None)(runtime)
        if expected is None or self.sizes.overhead_gb is not None:
            expected = self.sizes.overhead_for(runtime)  # what the plan counts a spare at
        if self.used_gb() + expected <= self.budget_gb:
            asyncio.create_task(prepare(runtime))

    async def evict(self, model_id: str) -> bool:
        """Evict one idle model now; False when it is not resident or in use."""
        async with self._lock:
            resident = self._resident.get(model_id)
            if resident is None or resident.leases or resident.state not in (ResidentState.READY,
                                                                             ResidentState.PARKED):
                return False
            if resident.parking is not None and not resident.parking.done():
                return False
            self._evict_locked(resident)
        await self._drain(resident)
        return True

    async def timed_out(self, model_id: str, limit_s: float) -> str:
        """An answer ran past the generation time limit and its stream was closed (the caller still holds
        the turn): keep the worker if it stops the answer and answers its health check; otherwise
        restart it. Says which."""
        message = f"no answer within the generation time limit of {limit_s:g} s"
        hung = await self._hung(model_id)
        if hung is None:
            return message + "; the answer was stopped (its worker is healthy and stays loaded)"
        if await self.discard(model_id, hung):
            message += f"; its worker {hung}, so it was restarted"
        return message

    async def _hung(self, model_id: str) -> str | None:
        """Why the model's worker must be restarted, or None when it is healthy and idle again."""
        resident = self._resident.get(model_id)
        if resident is None or resident.worker is None or resident.state != ResidentState.READY:
            return None
        deadline = self.clock() + STOP_GRACE_S
        while True:
            health = await resident.worker.health()
            if health is None:
                return "stopped answering its health check"
            if not health.get("active"):
                return None
            if self.clock() >= deadline:
                return f"did not stop the answer within {STOP_GRACE_S:g} s of being asked"
            await asyncio.sleep(0.2)

    async def discard(self, model_id: str, reason: str) -> bool:
        """Stop a worker that misbehaves (hung past the time limit), leased or not; the next use reloads.
        False when the model has no local worker (remote, or already gone)."""
        async with self._lock:
            resident = self._resident.get(model_id)
            if resident is None or resident.state != ResidentState.READY:
                return False
            log.warning("discarding the worker for %s: %s", model_id, reason)
            self._evict_locked(resident, counted=False)
            self.counters.crashes += 1
        await self._drain(resident, reuse=False)
        return True

    # --- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Prepare a spare worker, load models marked `preload: true`, and start the idle reaper if configured."""
        self._keep_spare("default")
        for spec in self.catalog.models:
            if spec.preload and spec.available and not spec.is_remote:
                async with self.lease(spec.id):
                    pass
        if self.idle_timeout_s:
            self._reaper = asyncio.create_task(self._reap_idle())

    async def _reap_idle(self) -> None:
        while True:
            await asyncio.sleep(max(1.0, (self.idle_timeout_s or 60) / 4))
            now = self.clock()
            for resident in list(self._resident.values()):
                idle = now - resident.last_used >= (self.idle_timeout_s or 0)
                if idle and not resident.spec.preload:
                    await self.evict(resident.spec.id)

    async def close(self) -> None:
        """Stop every worker and wait for them to exit."""
        if self._reaper:
            self._reaper.cancel()
        async with self._lock:
            self._closed = True
            residents = list(self._resident.values())
            for resident in residents:
                if resident.state in (ResidentState.READY, ResidentState.PARKED):
                    self._evict_locked(resident)
        ready = [r for r in residents if r.state in (ResidentState.READY, ResidentState.PARKED)]
        await asyncio.gather(*(self._drain(r) for r in ready), return_exceptions=True)
        loading = [r.ready for r in residents if r.state == ResidentState.LOADING]
        if loading:  # each stops its worker as soon as it is up (see _load)
            await asyncio.wait(loading, timeout=60)
        for backend in self._remote.values():
            await backend.aclose()
        close = getattr(self.launcher, "close", None)
        if close is not None:
            await close()

    # --- status ------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Budget, use, residents and counters, as `GET /api/pool` serves them."""
        now = self.clock()
        resident = []
        for r in sorted(self._resident.values(), key=lambda r: -r.last_used):
            worker = r.worker
            overhead = getattr(worker, "overhead_gb", None) if worker else None
            resident.append({
                "model": r.spec.id, "planned_gb": round(r.planned_gb, 3),
                # what the process holds: the model's own peak and the process's overhead
                "measured_gb": None if worker is None or worker.measured_gb is None
                else round(worker.measured_gb + (overhead or 0.0), 3),
                "overhead_gb": None if overhead is None else round(overhead, 3),
                "state": ResidentState.BUSY if r.state == ResidentState.READY and r.leases else r.state,
                "leases": r.leases, "waiting": self._turns[r.spec.id].waiting if r.spec.id in self._turns else 0,
                "last_used": round(now - r.last_used, 1), "pid": worker.pid if worker else None,
                "runtime": r.spec.runtime, "pinned": r.spec.preload, "detail": self.loading_detail(r.spec.id),
                "host_gb": round(r.host_gb, 3),
            })
        return {
            "budget_gb": round(self.budget_gb, 3), "used_gb": round(self.used_gb(), 3),
            "free_gb": round(self.budget_gb - self.used_gb(), 3), "resident": resident,
            "draining_gb": round(sum(self._draining.values()), 3), "spares_gb": round(self.spares_gb(), 3),
            "warm_budget_gb": round(self.warm_budget_gb, 3), "warm_used_gb": round(self.warm_used_gb(), 3),
            "failures": {k: v.message for k, v in self._failures.items()},
            **self.counters.__dict__,
        }

    def loading_detail(self, model_id: str) -> str | None:
        """What a model that is not ready yet waits for: memory (how much it needs and has, and which
        models must finish answering to be evicted), evictions under way, coming back from host memory,
        or what its start is doing (preparing its runtime, loading weights)."""
        resident = self._resident.get(model_id)
        if resident is None:
            swap = next((wait for wait in self._swap_waits if wait.spec.id == model_id), None)
            return None if swap is None else self._memory_wait_detail(swap.planned)
        if resident.state != ResidentState.LOADING:
            return None
        progress = getattr(self.launcher, "progress", {}).get(model_id)
        if progress:
            return str(progress)
        if resident.worker is not None:  # a parked model coming back
            return "copying its weights back from host memory"
        if self._draining:
            return f"waiting for evicted models to free {sum(self._draining.values()):.2f} GB"
        return None

    def _memory_wait_detail(self, planned: float) -> str:
        free = self.budget_gb - self.used_gb() + self.spares_gb()
        blockers = self._would_evict(planned)
        text = f"waiting for memory: needs {planned:.2f} GB, {max(free, 0.0):.2f} GB of {self.budget_gb:.2f} GB free"
        if blockers:
            busy = [f"{r.spec.id} ({r.planned_gb:.2f} GB, {r.leases} answering)" for r in blockers if r.leases]
            if busy:
                text += "; evicts " + ", ".join(busy) + " once its answers end"
        else:
            loading = [r.spec.id for r in self._resident.values() if r.state == ResidentState.LOADING]
            if loading:
                text += "; " + ", ".join(loading) + " loading first"
        return text

    def load_window(self, model_id: str) -> tuple[float, float] | None:
        """When the model's last load (or return from host memory) began and ended, on the pool's clock."""
        resident = self._resident.get(model_id)
        if resident is None or resident.load_started is None or resident.load_ended is None:
            return None
        return resident.load_started, resident.load_ended

    def runtime_of(self, model_id: str) -> dict[str, str]:
        """Library versions the model's worker runs with (empty when not resident or remote)."""
        resident = self._resident.get(model_id)
        return dict(resident.worker.runtime) if resident and resident.worker else {}

    def state_of(self, model_id: str) -> ModelState:
        """Resident, loading, fits (would load without evicting), evicts, too large; unavailable if unknown."""
        resident = self._resident.get(model_id)
        if resident is not None:
            return {ResidentState.READY: ModelState.RESIDENT, ResidentState.PARKED: ModelState.PARKED}.get(
                resident.state, ModelState.LOADING)
        try:
            spec = self.catalog.get(model_id)
            planned = self.planned_gb(spec)
        except (KeyError, PoolError):
            return ModelState.UNAVAILABLE
        if planned > self.budget_gb:
            return ModelState.TOO_LARGE
        return ModelState.FITS if self.used_gb() + planned <= self.budget_gb else ModelState.EVICTS


def detect_budget_gb(cpu_budget_gb: float, fraction: float = 0.9) -> tuple[float, str]:
    """90 % of the GPU's total memory (via nvidia-smi, without a CUDA context here), else the CPU figure."""
    import shutil
    import subprocess

    if shutil.which("nvidia-smi"):
        with contextlib.suppress(Exception):
            out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=10, check=True).stdout.split()
            if out:
                total_gb = float(out[0]) / 1024
                return round(total_gb * fraction, 2), f"{fraction:.0%} of the GPU's {total_gb:.1f} GB"
    return cpu_budget_gb, "CPU setting (no GPU found)"


def detect_warm_budget_gb(fraction: float = 0.5) -> tuple[float, str]:
    """Host memory for parked weights: on a GPU machine `fraction` of the host memory available now; on a
    CPU none, since the weights are host memory already and the budget is that memory."""
    import shutil

    import psutil

    if shutil.which("nvidia-smi"):
        available_gb = psutil.virtual_memory().available / 2**30
        return round(available_gb * fraction, 2), f"{fraction:.0%} of the {available_gb:.1f} GB of host memory free"
    return 0.0, "none on a CPU"
