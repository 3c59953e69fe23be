"""What a model swap costs, against a load in a process that has already imported torch and transformers.

    python bench/swap.py [--tiny-dir DIR] [--rounds N]

On tiny checkpoints (built on the spot), requests for 1 new token cycle over three models, A, B, C,
with a budget that holds two models' processes and with one that holds one; nothing else runs. It prints:
  - loads per request (the fewest possible for the cycle: 1 per request once it cycles, since
    an LRU pool over a cycle longer than its budget misses every time);
  - the median swap (evict one model, load the next, answer 1 token; timed by the client, end to end)
    over the median "load + 1-token answer" in this process, which has torch and transformers
    imported already: the cost of the pool's machinery beyond the load itself (the aim: ≤ 2×);
  - the weight-read floor: the model's weight bytes over this disk's measured read bandwidth, and
    the swap as a multiple of it.
Absolute times vary with the machine; the ratios are what to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.core.catalog import load_catalog  # noqa: E402
from app.core.generation import Finish, GenerationParams  # noqa: E402
from app.core.protocol import ImagePart  # noqa: E402
from app.pool.launcher import ProcessLauncher  # noqa: E402
from app.pool.pool import ModelPool  # noqa: E402
from app.pool.sizes import SizeBook  # noqa: E402
from app.tiny.checkpoints import build_tiny_models  # noqa: E402

CYCLE = ["tiny-qwen2-vl", "tiny-llava", "tiny-idefics3"]
PROMPT = "Describe this image."


def png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def read_bandwidth(folder: Path, size_mb: int = 256) -> float:
    """Bytes per second reading a file this disk has not cached (its pages dropped with fadvise)."""
    path = folder / "bandwidth.bin"
    with path.open("wb") as out:
        chunk = os.urandom(1 << 20)
        for _ in range(size_mb):
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        started = time.perf_counter()
        while os.read(descriptor, 8 << 20):
            pass
        elapsed = time.perf_counter() - started
    finally:
        os.close(descriptor)
        path.unlink()
    return size_mb * (1 << 20) / elapsed


def weight_bytes(repo: Path) -> int:
    return sum(path.stat().st_size for path in repo.glob("*.safetensors"))


def load_and_answer(repo: str, image: bytes) -> float:
    """Seconds to load the checkpoint and answer 1 token, in this process (torch and transformers imported)."""
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    started = time.perf_counter()
    processor = AutoProcessor.from_pretrained(repo)
    model = AutoModelForImageTextToText.from_pretrained(repo, dtype=torch.float32).eval()
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], images=[[Image.open(io.BytesIO(image)).convert("RGB")]], return_tensors="pt")
    with torch.inference_mode():
        model.generate(**inputs, max_new_tokens=1, do_sample=False)
    return time.perf_counter() - started


async def one_token(pool: ModelPool, model: str, image: ImagePart) -> float:
    started = time.perf_counter()
    async with pool.lease(model) as backend:
        async for piece in backend.stream(PROMPT, [image], GenerationParams(max_new_tokens=1)):
            if isinstance(piece, Finish):
                break
    return time.perf_counter() - started


async def cycle(catalog_path: Path, logs: Path, models_held: int, rounds: int,
                warm: bool = False) -> tuple[list[float], dict[str, int], int]:
    """Swap times (every request after the first `models_held`), the pool's counters and the requests, for
    one budget. `warm`: as on a GPU, where the budget is device memory and a parked model keeps its weights
    and its process in host memory: a warm budget that holds every model's weights, and processes planned
    at no budget (on a CPU a parked model's process would cost the budget nearly what a tiny model does)."""
    catalog = load_catalog(catalog_path)
    launcher = ProcessLauncher(logs, load_timeout_s=300, warm={"default": sorted({m.family or "" for m in catalog.models
                                                                                  if m.id in CYCLE})})
    pool = ModelPool(catalog, launcher, budget_gb=100.0, sizes=SizeBook(overhead_gb=0.0 if warm else None),
                     warm_budget_gb=100.0 if warm else 0.0)
    await pool.start()
    await launcher.prepare("default")
    overhead = 0.0 if warm else launcher.expected_overhead_gb("default") or 0.0
    plan = max(catalog.get(model).min_gpu_gb or 0.0 for model in CYCLE) + overhead
    # the models' processes, no room for one more: half a process spare (warm: half a model)
    pool.budget_gb = models_held * plan + (0.25 if warm else 0.5 * overhead)
    image = ImagePart(png(), "image/png")
    times = []
    try:
        for index in range(models_held + rounds * len(CYCLE)):
            if index == models_held:
                await launcher.prepare("default")  # the spare the pool started in the background, ready
            elapsed = await one_token(pool, CYCLE[index % len(CYCLE)], image)
            if index >= models_held:
                times.append(elapsed)
        status = pool.status()
        return times, {key: status[key] for key in ("loads", "unparks", "parks")}, models_held + rounds * len(CYCLE)
    finally:
        await pool.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny-dir", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=3, help="times round the cycle of three")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        tiny = args.tiny_dir or Path(scratch) / "tiny"
        if not (tiny / "models.yaml").exists():
            build_tiny_models(tiny)
        catalog = load_catalog(tiny / "models.yaml")
        import torch

        torch.set_num_threads(len(os.sched_getaffinity(0)))  # what a lone worker computes with
        image = png()
        load_and_answer(str(catalog.get(CYCLE[0]).repo), image)  # first use of each code path, not timed
        loads = [load_and_answer(str(catalog.get(CYCLE[i % 3]).repo), image) for i in range(3 * args.rounds)]
        reference = statistics.median(loads)
        bandwidth = read_bandwidth(Path(scratch))
        floor = statistics.median(weight_bytes(Path(str(catalog.get(m).repo))) for m in CYCLE) / bandwidth
        print(f"load + 1-token answer in a process with torch and transformers imported: {reference * 1000:.0f} ms "
              f"(median of {len(loads)})")
        print(f"weight-read floor: {floor * 1000:.2f} ms ({bandwidth / 1e6:.0f} MB/s uncached reads)")
        for held, warm in ((2, False), (1, False), (2, True), (1, True)):
            times, counts, requests = await cycle(tiny / "models.yaml", Path(scratch) / f"logs-{held}-{warm}", held,
                                                  args.rounds, warm)
            swap = statistics.median(times)
            label = "warm budget for every model's weights, GPU-like accounting" if warm else "no warm budget"
            print(f"budget for {held} of 3, {label}, cycling A B C: {counts['loads']} loads and {counts['unparks']} "
                  f"unparks for {requests} requests ({counts['loads'] / requests:.2f} loads per request); "
                  f"swap {swap * 1000:.0f} ms = {swap / reference:.2f}× load + 1 token (aim ≤ 2×), "
                  f"{swap / floor:.0f}× the weight-read floor")

if __name__ == "__main__":
    asyncio.run(main())
