"""The pool with REAL worker processes on tiny checkpoints, a budget that fits only two of them."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from app.core.catalog import load_catalog
from app.core.generation import Finish, GenerationParams
from app.core.protocol import ImagePart
from app.pool.client import BackendError
from app.pool.launcher import ProcessLauncher
from app.pool.pool import ModelPool, TooLarge, Unavailable
from app.pool.sizes import SizeBook

pytestmark = pytest.mark.slow
MODELS = ["tiny-qwen2-vl", "tiny-idefics3", "tiny-llava"]


@pytest.fixture(scope="module")
def pool_catalog(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The tiny catalogue plus a model whose weights are missing and one too big for the budget."""
    data = yaml.safe_load((tiny_dir / "models.yaml").read_text())
    data["models"].append({"id": "missing", "repo": str(tiny_dir / "does-not-exist"), "family": "llava",
                           "min_gpu_gb": 0.5, "dtype": "float32", "tiny": True})
    data["models"].append({"id": "huge", "repo": "org/huge", "family": "llava", "min_gpu_gb": 80})
    path = tmp_path_factory.mktemp("catalog") / "models.yaml"
    for entry in data["models"]:
        if str(entry["repo"]).startswith("./"):
            entry["repo"] = str(tiny_dir / entry["repo"][2:])
    path.write_text(yaml.safe_dump(data))
    return load_catalog(path)


class CountingLauncher(ProcessLauncher):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.starts: list[str] = []
        self.live: dict[str, int] = {}

    async def start(self, spec):
        self.starts.append(spec.id)
        worker = await super().start(spec)
        self.live[spec.id] = worker.pid
        return worker


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] != "Z"


@pytest.fixture
async def pool(pool_catalog, tmp_path: Path):
    launcher = CountingLauncher(tmp_path / "logs", load_timeout_s=120)
    # Tiny models plan at 0.5 GB and no process overhead here (test_measured_overhead_is_planned plans it):
    # a 1.2 GB budget holds two of them, never three.
    pool = ModelPool(pool_catalog, launcher, budget_gb=1.2, sizes=SizeBook(overhead_gb=0), wait_timeout_s=60,
                     retry_after_s=30)
    yield pool
    await pool.close()


def png(color: tuple[int, int, int]) -> ImagePart:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (48, 40), color).save(buffer, format="PNG")
    return ImagePart(buffer.getvalue(), "image/png")


async def ask(pool: ModelPool, model: str, tokens: int = 6, hold_s: float = 0.0,
              client: str = "") -> tuple[str, Finish]:
    async with pool.lease(model, client=client) as backend:
        pieces: list[str] = []
        finish = None
        async for piece in backend.stream("Compare the images.", [png((250, 0, 0)), png((0, 0, 250))],
                                          GenerationParams(max_new_tokens=tokens)):
            if isinstance(piece, Finish):
                finish = piece
            else:
                pieces.append(piece)
        await asyncio.sleep(hold_s)
        assert finish is not None
        return "".join(pieces), finish


def resident(pool: ModelPool) -> list[str]:
    return sorted(r["model"] for r in pool.status()["resident"])


async def test_lru_eviction_order_and_evicted_worker_lets_go_of_its_model(pool):
    launcher = pool.launcher
    await ask(pool, MODELS[0])
    await ask(pool, MODELS[1])
    await ask(pool, MODELS[0])  # refresh: MODELS[1] is now least recently used
    evicted_pid = launcher.live[MODELS[1]]
    text, finish = await ask(pool, MODELS[2])
    assert finish.completion_tokens > 0
    assert resident(pool) == sorted([MODELS[0], MODELS[2]])
    if alive(evicted_pid):  # recycled: its weights dropped, it serves the next model or waits as the spare
        assert evicted_pid in launcher.spare_pids() | {launcher.live[MODELS[2]]}, "an evicted worker kept its model"
    status = pool.status()
    assert status["evictions"] == 1 and status["loads"] == 3 and status["hits"] == 1


async def test_single_flight_ten_requests_start_one_worker(pool):
    """Ten people ask for the same cold model at once: one worker starts, and each gets an answer."""
    results = await asyncio.gather(*(ask(pool, MODELS[0], tokens=2, client=f"person {i}") for i in range(10)))
    assert len(results) == 10 and all(finish.completion_tokens >= 1 for _, finish in results)
    assert pool.launcher.starts == [MODELS[0]]


async def test_three_models_over_budget_complete_and_budget_is_never_exceeded(pool):
    samples: list[float] = []

    async def sample():
        while True:  # planned size of every worker process that is alive right now
            spares = pool.launcher.spare_pids()  # an evicted worker may be a spare now, its weights dropped
            live = {pid for pid in pool.launcher.live.values() if alive(pid) and pid not in spares}
            samples.append(0.5 * len(live))
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    try:
        results = await asyncio.gather(*(ask(pool, m, tokens=8, hold_s=0.2) for m in MODELS))
    finally:
        sampler.cancel()
    assert [finish.completion_tokens > 0 for _, finish in results] == [True] * 3
    assert len(samples) > 20 and max(samples) <= 1.2
    assert pool.status()["evictions"] >= 1


async def test_leased_model_is_not_evicted(pool):
    done = asyncio.Event()

    async def hold() -> None:  # the lease is held until the test is done, however slow the loads are
        async with pool.lease(MODELS[0]):
            await done.wait()

    holder = asyncio.create_task(hold())
    while MODELS[0] not in resident(pool) or pool.status()["resident"][0]["state"] != "busy":
        await asyncio.sleep(0.05)
    await ask(pool, MODELS[1])
    await ask(pool, MODELS[2])  # must evict MODELS[1], the only idle one
    assert MODELS[0] in resident(pool)
    assert alive(pool.launcher.live[MODELS[0]])
    done.set()
    await holder


async def test_too_large_fails_fast(pool):
    with pytest.raises(TooLarge, match="huge needs 80.00 GB but the whole budget is 1.20 GB"):
        await ask(pool, "huge")
    assert pool.launcher.starts == []


async def test_failing_load_is_reported_and_released(pool):
    with pytest.raises(Unavailable, match="missing failed to load: .*does-not-exist"):
        await ask(pool, "missing")
    assert pool.used_gb() == 0 and resident(pool) == []
    await ask(pool, MODELS[0])  # the reservation was released


async def test_killed_worker_fails_its_request_and_is_replaced(pool):
    # Greedy decoding on this checkpoint runs the full length: the kill lands mid-answer.
    _, finish = await ask(pool, MODELS[0], tokens=400)
    assert finish.completion_tokens == 400, "precondition: this answer does not stop early"
    pid = pool.launcher.live[MODELS[0]]

    async def ask_and_kill():
        async with pool.lease(MODELS[0]) as backend:
            async for _piece in backend.stream("Compare.", [png((9, 9, 9))], GenerationParams(max_new_tokens=4000)):
                os.kill(pid, signal.SIGKILL)

    died = rf"{MODELS[0]}: its worker process stopped mid-answer \(killed by SIGKILL\)"
    with pytest.raises(BackendError, match=died):
        await ask_and_kill()
    await asyncio.sleep(0.3)
    assert MODELS[0] not in resident(pool) and pool.status()["crashes"] == 1
    _, finish = await ask(pool, MODELS[0])
    assert finish.completion_tokens > 0
    assert pool.launcher.starts == [MODELS[0], MODELS[0]]


def test_worker_exits_when_its_parent_dies(tiny_catalog, tmp_path: Path):
    """A parent killed with SIGKILL leaves no orphaned worker behind."""
    spec = tiny_catalog.get(MODELS[0])
    parent = subprocess.Popen(
        [sys.executable, "-c",
         "import subprocess, sys, time; "
         "p = subprocess.Popen([sys.executable, '-m', 'app.worker', '--spec-json', sys.argv[1]], "
         "stdin=subprocess.PIPE, stdout=subprocess.PIPE); "
         "print(p.stdout.readline().decode(), flush=True); time.sleep(60)", spec.model_dump_json()],
        stdout=subprocess.PIPE, text=True)
    line = parent.stdout.readline()
    worker_pid = int(line.split('"pid": ')[1].split("}")[0])
    assert alive(worker_pid)
    parent.kill()
    parent.wait()
    for _ in range(100):
        if not alive(worker_pid):
            break
        import time

        time.sleep(0.05)
    assert not alive(worker_pid)


async def test_a_pool_worker_answers_only_its_playground(pool):
    """Other users of a shared host cannot reach a worker's model around the server's checks."""
    import httpx

    await ask(pool, MODELS[0], tokens=2)
    worker = pool._resident[MODELS[0]].worker
    async with httpx.AsyncClient() as outsider:
        base = f"http://127.0.0.1:{worker.port}"
        assert (await outsider.get(f"{base}/health")).status_code == 200
        refused = await outsider.post(f"{base}/v1/chat/completions", json={"messages": [{"role": "user",
                                                                                          "content": "hi"}]})
        assert refused.status_code == 401
        assert (await outsider.get(f"{base}/memory")).status_code == 401
    _, finish = await ask(pool, MODELS[0], tokens=2)  # the pool itself still gets answers
    assert finish.completion_tokens >= 1
