"""The pool's planning logic against FAKE workers and FAKE memory (in the manner of ollama's
scheduler tests): no processes, no models. Real-worker behaviour is in test_pool_workers.py."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from app.core.catalog import parse_catalog
from app.pool.launcher import LoadError
from app.pool.pool import Busy, ModelPool, TooLarge, Unavailable
from app.pool.sizes import SizeBook


@dataclass
class FakeWorker:
    """Stands in for a worker process: holds `measured_gb` of fake memory until terminated."""

    model: str
    memory: FakeMemory
    measured_gb: float | None
    backend: str = ""
    runtime: dict = field(default_factory=dict)
    pid: int | None = None
    exited: asyncio.Future | None = None

    def __post_init__(self) -> None:
        self.backend = f"backend:{self.model}"
        self.exited = asyncio.get_running_loop().create_future()

    async def terminate(self) -> int:
        await asyncio.sleep(0.01)
        self.memory.release(self.model)
        if not self.exited.done():
            self.exited.set_result(0)
        return 0

    async def wait_exit(self) -> int:
        return await self.exited

    async def measure_gb(self) -> float | None:
        return self.measured_gb

    def crash(self) -> None:
        self.memory.release(self.model)
        self.exited.set_result(-9)


class FakeMemory:
    """Fake GPU memory: records every allocation so tests can check the peak against the budget."""

    def __init__(self) -> None:
        self.held: dict[str, float] = {}
        self.peak = 0.0

    def take(self, model: str, gb: float) -> None:
        self.held[model] = gb
        self.peak = max(self.peak, sum(self.held.values()))

    def release(self, model: str) -> None:
        self.held.pop(model, None)


class FakeLauncher:
    def __init__(self, sizes: dict[str, float], load_s: float = 0.02, fail: set[str] | None = None) -> None:
        self.memory = FakeMemory()
        self.sizes = sizes
        self.load_s = load_s
        self.fail = fail or set()
        self.starts: list[str] = []
        self.workers: dict[str, FakeWorker] = {}
        self.progress: dict[str, str] = {}

    async def start(self, spec) -> FakeWorker:
        self.starts.append(spec.id)
        self.progress[spec.id] = "runtime hf-4.48: installing transformers==4.48.3"
        await asyncio.sleep(self.load_s)
        self.progress.pop(spec.id)
        if spec.id in self.fail:
            raise LoadError(f"{spec.repo} is gated: accept its licence")
        self.memory.take(spec.id, self.sizes[spec.id])
        worker = FakeWorker(spec.id, self.memory, self.sizes[spec.id])
        self.workers[spec.id] = worker
        return worker


def catalog(**sizes: float):
    return parse_catalog({"models": [
        {"id": name, "repo": f"org/{name}", "family": "llava", "min_gpu_gb": gb} for name, gb in sizes.items()
    ]})


def make_pool(budget: float, wait_s: float = 1.0, fail: set[str] | None = None, **sizes: float):
    launcher = FakeLauncher(sizes, fail=fail)
    pool = ModelPool(catalog(**sizes), launcher, budget, SizeBook(), wait_timeout_s=wait_s, retry_after_s=60,
                     max_queued_per_client=100)
    return pool, launcher


async def use(pool: ModelPool, model: str, hold_s: float = 0.0) -> str:
    async with pool.lease(model) as backend:
        await asyncio.sleep(hold_s)
        return backend


def resident(pool: ModelPool) -> list[str]:
    return sorted(r["model"] for r in pool.status()["resident"])


async def test_fake_lru_evicts_least_recently_used_first():
    pool, launcher = make_pool(10, a=4, b=4, c=4)
    await use(pool, "a")
    await use(pool, "b")
    await use(pool, "a")  # a is now more recent than b
    await use(pool, "c")
    assert resident(pool) == ["a", "c"]
    assert pool.status()["evictions"] == 1
    assert launcher.memory.peak <= 10


async def test_fake_single_flight_ten_requests_one_load():
    pool, launcher = make_pool(10, a=4)
    results = await asyncio.gather(*(use(pool, "a", 0.01) for _ in range(10)))
    assert results == ["backend:a"] * 10
    assert launcher.starts == ["a"]
    status = pool.status()
    assert status["loads"] == 1 and status["misses"] + status["hits"] == 10


async def test_fake_leased_model_is_never_evicted_and_the_request_waits():
    pool, launcher = make_pool(10, a=6, b=6, wait_s=2.0)
    holder = asyncio.create_task(use(pool, "a", hold_s=0.3))
    await asyncio.sleep(0.1)
    assert resident(pool) == ["a"]
    await use(pool, "b")  # waits for a's lease to end, then evicts it
    await holder
    assert launcher.starts == ["a", "b"]
    assert launcher.memory.peak <= 10


async def test_fake_busy_error_after_bounded_wait_names_the_figures():
    pool, _ = make_pool(10, a=6, b=6, wait_s=0.2)
    holder = asyncio.create_task(use(pool, "a", hold_s=1.0))
    await asyncio.sleep(0.05)
    expected = r"b needs 6.00 GB; 4.00 GB of 10.00 GB free .* \(a \(6.00 GB, 1 in use\)\); waited 0.2 s"
    with pytest.raises(Busy, match=expected):
        await use(pool, "b")
    await holder


async def test_fake_too_large_fails_at_once_naming_both_figures():
    pool, launcher = make_pool(10, huge=12)
    with pytest.raises(TooLarge, match="huge needs 12.00 GB but the whole budget is 10.00 GB"):
        await use(pool, "huge")
    assert launcher.starts == []


async def test_fake_failed_load_releases_its_reservation_and_backs_off():
    pool, launcher = make_pool(10, fail={"gated"}, gated=6, ok=6)
    with pytest.raises(Unavailable, match="gated failed to load: org/gated is gated"):
        await use(pool, "gated")
    assert pool.used_gb() == 0
    with pytest.raises(Unavailable, match=r"next try in \d+ s"):
        await use(pool, "gated")
    assert launcher.starts == ["gated"]  # the back-off did not start another worker
    await use(pool, "ok")  # the freed reservation is usable
    assert pool.status()["load_failures"] == 1


async def test_fake_concurrent_waiters_of_a_failing_load_all_get_the_error():
    pool, _ = make_pool(10, fail={"gated"}, gated=6)
    results = await asyncio.gather(*(use(pool, "gated") for _ in range(5)), return_exceptions=True)
    assert all(isinstance(r, Unavailable) for r in results)


async def test_fake_crashed_worker_is_removed_and_reloaded_next_time():
    pool, launcher = make_pool(10, a=4)
    await use(pool, "a")
    launcher.workers["a"].crash()
    await asyncio.sleep(0.05)
    assert resident(pool) == [] and pool.status()["crashes"] == 1
    await use(pool, "a")
    assert launcher.starts == ["a", "a"]


async def test_fake_three_models_over_budget_complete_by_evicting_as_each_finishes():
    pool, launcher = make_pool(10, a=4, b=4, c=4, wait_s=5)
    samples: list[float] = []

    async def sample():
        while True:
            samples.append(sum(launcher.memory.held.values()))
            await asyncio.sleep(0.005)

    sampler = asyncio.create_task(sample())
    results = await asyncio.gather(use(pool, "a", 0.1), use(pool, "b", 0.1), use(pool, "c", 0.1))
    sampler.cancel()
    assert results == ["backend:a", "backend:b", "backend:c"]
    assert max(samples) <= 10 and launcher.memory.peak <= 10
    assert pool.status()["evictions"] >= 1


async def test_fake_measured_size_raises_the_next_plan():
    sizes = SizeBook()
    launcher = FakeLauncher({"a": 7.5})
    pool = ModelPool(catalog(a=4), launcher, 10, sizes)
    assert pool.planned_gb(pool.catalog.get("a")) == 4
    await use(pool, "a")
    assert pool.planned_gb(pool.catalog.get("a")) == 7.5
    assert pool.status()["resident"][0]["measured_gb"] == 7.5


async def test_fake_overhead_is_added_to_the_plan():
    pool = ModelPool(catalog(a=4), FakeLauncher({"a": 1}), 10, SizeBook(overhead_gb=0.75))
    assert pool.planned_gb(pool.catalog.get("a")) == 4.75


async def test_fake_status_reports_states_and_counters():
    pool, _ = make_pool(10, a=4, b=4)
    holder = asyncio.create_task(use(pool, "a", hold_s=0.2))
    await asyncio.sleep(0.1)
    status = pool.status()
    assert status["budget_gb"] == 10 and status["used_gb"] == 4
    assert status["resident"][0]["state"] == "busy" and status["resident"][0]["leases"] == 1
    assert pool.state_of("b") == "fits"
    await holder
    assert pool.status()["resident"][0]["state"] == "ready"


async def test_fake_close_terminates_everything():
    pool, launcher = make_pool(10, a=4, b=4)
    await use(pool, "a")
    await use(pool, "b")
    await pool.close()
    assert launcher.memory.held == {}
    with pytest.raises(Unavailable, match="shutting down"):
        await use(pool, "a")


async def test_fake_loading_detail_is_reported_while_a_model_starts():
    pool, launcher = make_pool(10, a=4)
    launcher.load_s = 0.2
    task = asyncio.create_task(use(pool, "a"))
    await asyncio.sleep(0.05)
    assert pool.loading_detail("a") == "runtime hf-4.48: installing transformers==4.48.3"
    assert pool.status()["resident"][0]["detail"].startswith("runtime hf-4.48")
    await task
    assert pool.loading_detail("a") is None


async def test_fake_requester_cancelled_while_evicting_still_stops_the_victim():
    """A request that gives up (page closed, client gone) mid-eviction must not leave the evicted worker
    running outside the pool's accounting."""
    pool, launcher = make_pool(10, a=6, b=6)
    await use(pool, "a")
    victim = launcher.workers["a"]
    slow_terminate = victim.terminate

    async def terminate_slowly() -> int:
        await asyncio.sleep(0.2)
        return await slow_terminate()

    victim.terminate = terminate_slowly
    request = asyncio.create_task(use(pool, "b"))
    await asyncio.sleep(0.05)  # b's request is now waiting for a to stop
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    await asyncio.sleep(0.3)
    assert "a" not in launcher.memory.held, "the evicted worker was stopped all the same"
    await use(pool, "b")
    assert launcher.memory.peak <= 10


async def test_fake_close_stops_a_model_that_was_still_loading():
    pool, launcher = make_pool(10, a=4)
    launcher.load_s = 0.2
    request = asyncio.create_task(use(pool, "a"))
    await asyncio.sleep(0.05)
    await pool.close()
    with pytest.raises(Unavailable):
        await request
    assert launcher.memory.held == {} and pool.status()["resident"] == []


async def _swap_under_steady_traffic(patience: int) -> tuple[str | Exception, int]:
    """Two users keep asking for resident `a` (their answers overlap, so `a` is never idle) while one asks
    for `b`, which only fits once `a` is evicted. Returns b's outcome and the answers `a` gave meanwhile."""
    pool, launcher = make_pool(10, a=6, b=6, wait_s=1.5)
    pool.swap_patience = patience
    await use(pool, "a")
    stop = asyncio.Event()
    answered = 0

    async def user(offset: float) -> None:
        nonlocal answered
        await asyncio.sleep(offset)
        while not stop.is_set():
            try:
                await use(pool, "a", hold_s=0.04)
                answered += 1
            except Busy:
                return

    users = [asyncio.create_task(user(offset)) for offset in (0.0, 0.02)]
    await asyncio.sleep(0.1)
    before = answered
    try:
        outcome: str | Exception = await use(pool, "b")
    except Busy as exc:
        outcome = exc
    passed = answered - before
    stop.set()
    await asyncio.gather(*users)
    return outcome, passed


async def test_fake_resident_answers_pass_a_waiting_swap_at_most_patience_times():
    outcome, passed = await _swap_under_steady_traffic(patience=3)
    assert outcome == "backend:b"
    assert 3 <= passed <= 3 + 2  # the patience, plus the two answers already running when it ran out


async def test_fake_without_the_bound_steady_traffic_starves_the_swap():
    outcome, _ = await _swap_under_steady_traffic(patience=10**6)
    assert isinstance(outcome, Busy)  # what the bound prevents: b waits out its whole timeout


async def test_fake_a_model_waiting_for_memory_says_what_it_waits_for():
    pool, _ = make_pool(budget=3.0, wait_s=5.0, a=2.0, b=2.0)
    holding = asyncio.create_task(use(pool, "a", hold_s=0.4))
    await asyncio.sleep(0.1)
    waiting = asyncio.create_task(use(pool, "b"))
    await asyncio.sleep(0.1)
    detail = pool.loading_detail("b")
    assert detail == ("waiting for memory: needs 2.00 GB, 1.00 GB of 3.00 GB free; "
                      "evicts a (2.00 GB, 1 answering) once its answers end")
    await asyncio.gather(holding, waiting)
    assert pool.loading_detail("b") is None
    started, ended = pool.load_window("b")
    assert ended - started >= 0.02, "the load's own time (the fake takes 20 ms), not the wait before it"
