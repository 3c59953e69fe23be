"""Spare workers, recycled processes, the measured overhead and the CPU thread policy, with REAL workers."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from app.pool.launcher import ProcessLauncher
from app.pool.pool import ModelPool
from app.pool.sizes import SizeBook
from tests.pool.test_pool_workers import MODELS, ask, pool_catalog  # noqa: F401  (a fixture)

pytestmark = pytest.mark.slow


class SpawnCountingLauncher(ProcessLauncher):
    """The real launcher, counting the interpreters it starts."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.spawned = 0

    async def _spawn(self, runtime, python):
        self.spawned += 1
        return await super()._spawn(runtime, python)


@pytest.fixture
async def measured_pool(pool_catalog, tmp_path: Path):  # noqa: F811
    """A pool that plans each worker's measured overhead, with its spare prepared before the first request."""
    launcher = SpawnCountingLauncher(tmp_path / "logs", load_timeout_s=120)
    pool = ModelPool(pool_catalog, launcher, budget_gb=100.0, sizes=SizeBook(overhead_gb=None), wait_timeout_s=60)
    await pool.start()
    await launcher.prepare("default")
    yield pool
    await pool.close()


async def test_the_measured_overhead_is_planned_and_spares_are_counted(measured_pool: ModelPool):
    overhead = measured_pool.launcher.expected_overhead_gb("default")
    assert overhead is not None and 0.05 < overhead < 4, "a worker holds torch and transformers before any weights"
    assert measured_pool.status()["spares_gb"] == pytest.approx(overhead, abs=0.01)
    await ask(measured_pool, MODELS[0])
    row = measured_pool.status()["resident"][0]
    assert row["overhead_gb"] > 0.05
    assert row["planned_gb"] == pytest.approx(0.5 + row["overhead_gb"], abs=0.01)  # catalogue figure + process
    assert row["measured_gb"] >= row["overhead_gb"]  # what the process holds, its overhead included
    status = measured_pool.status()
    assert status["used_gb"] == pytest.approx(row["planned_gb"] + status["spares_gb"], abs=0.01)


async def test_swaps_reuse_one_prepared_process_and_answer_as_a_fresh_load(measured_pool: ModelPool):
    """Room for one model's process and no spare beside it: each swap turns the evicted worker into the
    spare and loads the next model into it — one interpreter for three loads, the same answers."""
    launcher = measured_pool.launcher
    overhead = launcher.expected_overhead_gb("default")
    measured_pool.budget_gb = 0.5 + 1.5 * overhead  # one model and its process; a second process does not fit
    first, _ = await ask(measured_pool, MODELS[0])
    await ask(measured_pool, MODELS[1])
    again, _ = await ask(measured_pool, MODELS[0])
    status = measured_pool.status()
    assert status["loads"] == 3 and status["evictions"] == 2
    assert launcher.spawned == 1, "a swap started a new interpreter"
    assert again == first, "a model loaded into a recycled process answers differently"
    assert measured_pool.runtime_of(MODELS[0])["spare"] == "yes"


async def test_a_killed_spare_is_replaced_on_the_next_load(measured_pool: ModelPool):
    (pid,) = measured_pool.launcher.spare_pids()
    os.kill(pid, signal.SIGKILL)
    text, finish = await ask(measured_pool, MODELS[2])
    assert finish.completion_tokens > 0
    assert measured_pool.status()["resident"][0]["pid"] != pid


async def test_a_lone_answer_gets_every_core_and_two_share_them(measured_pool: ModelPool):
    await ask(measured_pool, MODELS[0])
    health = await measured_pool._resident[MODELS[0]].worker.health()
    assert health["threads"] == measured_pool.cores
    async with measured_pool.lease(MODELS[0]):  # an answer holds its turn on another model meanwhile
        await ask(measured_pool, MODELS[1])
    health = await measured_pool._resident[MODELS[1]].worker.health()
    assert health["threads"] == max(1, measured_pool.cores // 2)
