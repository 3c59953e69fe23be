"""Evicted models kept warm in host memory (parked), within the warm budget.

The planning against FAKE workers that mirror `ProcessWorker`'s parking contract (`park()` -> GB kept in
host memory or None when the worker cannot; `unpark()` -> None, or LoadError; `overhead_gb` the process's
share that stays in the budget), and the whole path with REAL worker processes and tiny models."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from app.core.catalog import load_catalog, parse_catalog
from app.core.generation import Finish, GenerationParams
from app.core.protocol import ImagePart
from app.pool.launcher import LoadError, ProcessLauncher
from app.pool.pool import ModelPool, Unavailable
from app.pool.sizes import SizeBook
from tests.helpers import png_bytes


class DeviceMemory:
    """FAKE device memory: what each model's process holds on the device, and the peak of the total."""

    def __init__(self) -> None:
        self.held: dict[str, float] = {}
        self.peak = 0.0

    def hold(self, model: str, gb: float) -> None:
        self.held[model] = gb
        self.peak = max(self.peak, sum(self.held.values()))


@dataclass
class ParkingWorker:
    """FAKE worker (see `app.pool.launcher.ProcessWorker`): on the device it holds its weights plus its
    process's overhead; parked, only the overhead, the weights in host memory."""

    model: str
    device: DeviceMemory
    weights_gb: float
    overhead_gb: float = 0.1
    can_park: bool = True
    unpark_fails: bool = False
    backend: str = ""
    runtime: dict = field(default_factory=dict)
    pid: int | None = None
    parked: bool = False
    exited: asyncio.Future | None = None

    def __post_init__(self) -> None:
        self.backend = f"backend:{self.model}"
        self.exited = asyncio.get_running_loop().create_future()
        self.device.hold(self.model, self.weights_gb + self.overhead_gb)

    @property
    def measured_gb(self) -> float:
        return self.weights_gb

    async def measure_gb(self) -> float | None:
        return self.weights_gb

    async def park(self) -> float | None:
        await asyncio.sleep(0.01)
        if not self.can_park:
            return None
        self.parked = True
        self.device.hold(self.model, self.overhead_gb)
        return self.weights_gb

    async def unpark(self) -> None:
        await asyncio.sleep(0.01)
        if self.unpark_fails:
            raise LoadError(f"{self.model}: CUDA out of memory copying the weights back")
        self.parked = False
        self.device.hold(self.model, self.weights_gb + self.overhead_gb)

    async def terminate(self) -> int:
        self.device.held.pop(self.model, None)
        if not self.exited.done():
            self.exited.set_result(0)
        return 0

    async def wait_exit(self) -> int:
        return await self.exited


class ParkingLauncher:
    """FAKE launcher: every start is a new ParkingWorker; a spare is always there (as on a GPU, where a
    spare costs only its CUDA context)."""

    def __init__(self, weights: dict[str, float], **worker_options: object) -> None:
        self.device = DeviceMemory()
        self.weights = weights
        self.options = worker_options
        self.starts: list[str] = []
        self.workers: dict[str, ParkingWorker] = {}

    async def start(self, spec) -> ParkingWorker:
        self.starts.append(spec.id)
        await asyncio.sleep(0.01)
        worker = ParkingWorker(spec.id, self.device, self.weights[spec.id], **self.options)  # type: ignore[arg-type]
        self.workers[spec.id] = worker
        return worker

    def has_spare(self, runtime: str) -> bool:
        return True


def make_pool(budget: float, warm: float, **weights: float) -> tuple[ModelPool, ParkingLauncher]:
    launcher = ParkingLauncher(weights)
    models = [{"id": name, "repo": f"org/{name}", "family": "llava", "min_gpu_gb": gb} for name, gb in weights.items()]
    pool = ModelPool(parse_catalog({"models": models}), launcher, budget, SizeBook(overhead_gb=0.1),
                     wait_timeout_s=1.0, warm_budget_gb=warm)
    return pool, launcher


async def use(pool: ModelPool, *models: str) -> None:
    for model in models:
        async with pool.lease(model):
            pass


def states(pool: ModelPool) -> dict[str, str]:
    return {row["model"]: row["state"] for row in pool.status()["resident"]}


async def test_fake_a_swap_back_to_a_parked_model_copies_instead_of_loading():
    pool, launcher = make_pool(budget=2.2, warm=10.0, a=2.0, b=2.0)  # one model and a parked process's overhead
    await use(pool, "a", "b")
    assert states(pool) == {"a": "parked", "b": "ready"}
    await use(pool, "a")
    assert states(pool) == {"a": "ready", "b": "parked"}
    assert launcher.starts == ["a", "b"], "a came back from host memory, not from a new load"
    status = pool.status()
    assert (status["loads"], status["parks"], status["unparks"]) == (2, 2, 1)
    assert status["warm_used_gb"] == pytest.approx(2.0)
    assert launcher.device.peak <= 2.2 + 1e-9, "the device never held more than the budget"
    await pool.close()


async def test_fake_the_warm_budget_bounds_parked_weights_oldest_dropped_first():
    # one model (2 + 0.1) and two parked processes' overheads; host memory for one model's weights
    pool, launcher = make_pool(budget=2.3, warm=2.5, a=2.0, b=2.0, c=2.0)
    await use(pool, "a", "b")
    assert states(pool) == {"a": "parked", "b": "ready"}
    await use(pool, "c")  # b's weights need the warm budget: a, parked longest, is dropped for them
    assert states(pool) == {"b": "parked", "c": "ready"}
    assert launcher.workers["a"].exited.done()
    await use(pool, "b")  # b's own share of the warm budget is free again once it comes back: c parks
    assert states(pool) == {"b": "ready", "c": "parked"}
    assert launcher.starts == ["a", "b", "c"]
    assert pool.status()["warm_used_gb"] == pytest.approx(2.0)
    assert launcher.device.peak <= 2.3 + 1e-9, "the device never held more than the budget"
    await pool.close()


async def test_fake_no_warm_budget_means_evicted_models_are_unloaded():
    pool, launcher = make_pool(budget=2.5, warm=0.0, a=2.0, b=2.0)
    await use(pool, "a", "b", "a")
    assert launcher.starts == ["a", "b", "a"]
    assert pool.status()["parks"] == 0
    await pool.close()


async def test_fake_a_model_that_cannot_park_is_unloaded_instead():
    pool, launcher = make_pool(budget=2.5, warm=10.0, a=2.0, b=2.0)
    launcher.options["can_park"] = False  # quantised weights or a device map: they cannot leave the device
    await use(pool, "a", "b")
    assert states(pool) == {"b": "ready"}
    assert launcher.workers["a"].exited.done(), "its process was stopped"
    assert launcher.device.peak <= 2.5 + 1e-9
    await use(pool, "a")
    assert launcher.starts == ["a", "b", "a"]
    await pool.close()


async def test_fake_a_failed_unpark_is_reported_and_the_next_request_loads_afresh():
    pool, launcher = make_pool(budget=2.2, warm=10.0, a=2.0, b=2.0)
    await use(pool, "a", "b")
    launcher.workers["a"].unpark_fails = True
    with pytest.raises(Unavailable, match="failed to come back from host memory: a: CUDA out of memory"):
        await use(pool, "a")
    assert "a" not in states(pool) and launcher.workers["a"].exited.done()
    await use(pool, "a")  # a new load, no backoff: the model itself is fine
    assert launcher.starts == ["a", "b", "a"]
    await pool.close()


async def test_fake_a_parked_process_that_dies_is_forgotten():
    pool, launcher = make_pool(budget=2.2, warm=10.0, a=2.0, b=2.0)
    await use(pool, "a", "b")
    launcher.workers["a"].exited.set_result(-9)
    await asyncio.sleep(0.05)
    assert states(pool) == {"b": "ready"} and pool.status()["warm_used_gb"] == 0
    await use(pool, "a")
    assert launcher.starts == ["a", "b", "a"]
    await pool.close()


# --- real workers --------------------------------------------------------------------------------------------


async def test_a_parked_tiny_model_answers_again_from_its_own_process(tiny_catalog_path: Path, tmp_path: Path):
    catalog = load_catalog(tiny_catalog_path)
    launcher = ProcessLauncher(tmp_path / "logs", load_timeout_s=300)
    # the processes planned at no budget (as a GPU's budget leaves out a process's host memory): one model fits
    pool = ModelPool(catalog, launcher, budget_gb=0.75, sizes=SizeBook(overhead_gb=0.0), wait_timeout_s=120,
                     warm_budget_gb=1.0)
    image = ImagePart(png_bytes((200, 30, 30)), "image/png")

    async def answer(model: str) -> str:
        async with pool.lease(model) as backend:
            async for piece in backend.stream("Describe this image.", [image], GenerationParams(max_new_tokens=3)):
                if isinstance(piece, Finish):
                    return str(piece.finish_reason)
        raise AssertionError("no finish")

    try:
        await pool.start()
        assert await answer("tiny-llava")
        first_pid = pool.status()["resident"][0]["pid"]
        assert await answer("tiny-qwen2-vl")
        rows = {row["model"]: row for row in pool.status()["resident"]}
        assert rows["tiny-llava"]["state"] == "parked" and rows["tiny-llava"]["host_gb"] > 0
        assert rows["tiny-llava"]["pid"] == first_pid, "a parked model keeps its process"
        assert await answer("tiny-llava")
        rows = {row["model"]: row for row in pool.status()["resident"]}
        assert rows["tiny-llava"]["state"] == "ready" and rows["tiny-llava"]["pid"] == first_pid
        assert rows["tiny-qwen2-vl"]["state"] == "parked"
        status = pool.status()
        assert (status["loads"], status["unparks"]) == (2, 1)
    finally:
        await pool.close()
