"""What the pool and its workers cost, measured against the raw transformers call in one run.

    python bench/pool.py [--tiny-dir DIR] [--repeats N]

On tiny checkpoints (built on the spot), with the same checkpoint, prompt, image and seed:
  - fixed cost a warm request adds at 8 new tokens (ms, ours − raw; medians),
  - per-token cost of streaming through the worker (ratio of ms/token between 8 and 256 tokens),
  - a warm lease's own cost (µs),
  - cold start (spawn + load) versus a fresh process doing the raw import + load (ratio),
  - k models answering at once versus one after another (ratio of wall times).
Absolute times vary with the machine; the ratios are what to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import subprocess
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

MODEL = "tiny-qwen2-vl"
PROMPT = "Describe this image."
RAW_LOAD = """
import time, sys
t = time.perf_counter()
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor
processor = AutoProcessor.from_pretrained(sys.argv[1])
model = AutoModelForImageTextToText.from_pretrained(sys.argv[1], dtype=torch.float32).eval()
print(time.perf_counter() - t)
"""


def image_bytes() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


class Raw:
    """The raw in-process call: processor + generate, greedy, same inputs."""

    def __init__(self, repo: str) -> None:
        import torch
        from PIL import Image
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.torch = torch
        # the same number of threads a worker computes with (app.worker.limit_cpu_threads)
        self.threads = int(os.environ.get("VLM_WORKER_THREADS") or max(1, (os.cpu_count() or 2) // 2))
        torch.set_num_threads(self.threads)
        self.processor = AutoProcessor.from_pretrained(repo)
        self.model = AutoModelForImageTextToText.from_pretrained(repo, dtype=torch.float32).eval()
        self.image = Image.open(io.BytesIO(image_bytes())).convert("RGB")

    def __call__(self, tokens: int) -> tuple[float, int]:
        started = time.perf_counter()
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}]
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        inputs = self.processor(text=[text], images=[[self.image]], return_tensors="pt")
        self.torch.manual_seed(0)
        with self.torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=tokens, do_sample=False)
        self.processor.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        return time.perf_counter() - started, int(out.shape[1] - inputs["input_ids"].shape[1])


async def ours(pool: ModelPool, model: str, tokens: int) -> tuple[float, int]:
    started = time.perf_counter()
    count = 0
    async with pool.lease(model) as backend:
        async for piece in backend.stream(PROMPT, [ImagePart(image_bytes())], GenerationParams(max_new_tokens=tokens)):
            if isinstance(piece, Finish):
                count = piece.completion_tokens
    return time.perf_counter() - started, count


def median_of(samples: list[tuple[float, int]]) -> float:
    return statistics.median(s for s, _ in samples)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny-dir", default=None)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    tiny_dir = Path(args.tiny_dir or tempfile.mkdtemp(prefix="bench-tiny-"))
    catalog = load_catalog(build_tiny_models(tiny_dir))
    repo = catalog.get(MODEL).repo
    logs = Path(tempfile.mkdtemp(prefix="bench-logs-"))
    pool = ModelPool(catalog, ProcessLauncher(logs), budget_gb=4.0, sizes=SizeBook())
    raw = Raw(repo)
    n = args.repeats

    # cold start: our spawn + load, against a fresh process importing and loading the same checkpoint
    cold_ours = []
    cold_raw = []
    for _ in range(3):
        started = time.perf_counter()
        async with pool.lease(MODEL):
            pass
        cold_ours.append(time.perf_counter() - started)
        await pool.evict(MODEL)
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", RAW_LOAD, repo], check=True, capture_output=True)
        cold_raw.append(time.perf_counter() - started)
    async with pool.lease(MODEL):
        pass

    # warm requests: interleave ours and raw so drift hits both alike
    results: dict[tuple[str, int], list[tuple[float, int]]] = {}
    for tokens in (8, 256):
        for _ in range(n):
            results.setdefault(("raw", tokens), []).append(raw(tokens))
            results.setdefault(("ours", tokens), []).append(await ours(pool, MODEL, tokens))
    lease_costs = []
    for _ in range(2000):
        started = time.perf_counter()
        async with pool.lease(MODEL):
            pass
        lease_costs.append(time.perf_counter() - started)

    # k models at once versus one after another
    models = [MODEL, "tiny-idefics3", "tiny-llava"]
    for model in models:
        await ours(pool, model, 4)  # make each resident
    sequential = time.perf_counter()
    for model in models:
        await ours(pool, model, 128)
    sequential = time.perf_counter() - sequential
    concurrent = time.perf_counter()
    await asyncio.gather(*(ours(pool, model, 128) for model in models))
    concurrent = time.perf_counter() - concurrent
    await pool.close()

    raw8, ours8 = median_of(results[("raw", 8)]), median_of(results[("ours", 8)])
    raw256, ours256 = median_of(results[("raw", 256)]), median_of(results[("ours", 256)])
    tokens_raw = results[("raw", 256)][0][1] - results[("raw", 8)][0][1]
    tokens_ours = results[("ours", 256)][0][1] - results[("ours", 8)][0][1]
    per_token_raw = (raw256 - raw8) / tokens_raw
    per_token_ours = (ours256 - ours8) / tokens_ours
    print(f"checkpoint {MODEL}; {n} interleaved runs each; medians; {os.cpu_count()} CPU cores, "
          f"{raw.threads} torch thread(s) for the raw call and for each worker")
    print(f"raw call at 8 tokens                 {raw8 * 1000:8.1f} ms")
    print(f"fixed cost a warm request adds       {(ours8 - raw8) * 1000:8.1f} ms   (aim < 10 ms)")
    print(f"per-token cost, raw                  {per_token_raw * 1000:8.3f} ms/token ({tokens_raw} tokens)")
    print(f"per-token cost ratio, ours / raw     {per_token_ours / per_token_raw:8.3f}      (aim <= 1.05)")
    print(f"warm lease's own cost                {statistics.median(lease_costs) * 1e6:8.1f} µs")
    print(f"cold start ratio, ours / raw load    {statistics.median(cold_ours) / statistics.median(cold_raw):8.3f}"
          f"      (aim <= 1.10; {statistics.median(cold_ours):.2f} s vs {statistics.median(cold_raw):.2f} s)")
    print(f"{len(models)} models at once / one after another {concurrent / sequential:8.3f}"
          f"      ({concurrent:.2f} s vs {sequential:.2f} s, 128 tokens each)")


if __name__ == "__main__":
    asyncio.run(main())
