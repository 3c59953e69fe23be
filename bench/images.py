"""What a large photo costs on its way to a model, against the raw in-process call, in one run.

    python bench/images.py [--tiny-dir DIR] [--repeats N] [--model tiny-qwen2-vl]

A 12-megapixel photo-like JPEG (smooth shapes plus sensor-like noise, quality 92, about 2.8 MB) is
answered with 1 new token, timed to that first token:
  - through the page's API (`POST /compare` with the upload, then the comparison's event stream
    until its first text: the server checks, prepares and stores the image, the worker loads it,
    processes and generates), and through the OpenAI gateway (`/v1/chat/completions`, streamed; the
    client's own base64 is not timed); each answer is read to its end, untimed, before the next
    request, so none waits for the one before;
  - raw, in this process, as a script of one's own would: decode the JPEG at full size, run the
    checkpoint's processor on it, `generate` 1 token, with the same torch threads as each worker.
    The server decodes a JPEG at the largest size its models use (DCT scaling) and the worker gets
    the image at that size, which is how the ratio can be below 1;
  - for 1 and for 3 models in one comparison: how many times the server decodes the upload (fully,
    or at a reduced JPEG draft scale), how many images reach the workers as data: URLs (each one a
    decode in that worker) or as shared files (a copy), and how many base64 encodes over 1 kB the
    server makes.
The server runs in this process (uvicorn in a thread) so that its decodes can be counted; the workers
are the usual `python -m app.worker` processes. Absolute times vary with the machine; ratios are
what to compare, medians of interleaved runs.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
from PIL import Image, ImageFile  # noqa: E402

from app.core.catalog import load_catalog  # noqa: E402
from app.tiny.checkpoints import build_tiny_models  # noqa: E402

PROMPT = "Describe this image."
SIZE = (4000, 3000)
OTHERS = ["tiny-llava", "tiny-idefics3"]  # with --model: three models whose image sizes all differ


def photo_jpeg(size: tuple[int, int] = SIZE, noise: float = 5.3, seed: int = 0) -> bytes:
    """A photo-like JPEG: smooth colour fields (a 40×30 random image upscaled) plus Gaussian noise."""
    import numpy as np

    rng = np.random.default_rng(seed)
    fields = Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).resize(size,
                                                                                       Image.Resampling.BICUBIC)
    pixels = np.asarray(fields, dtype=np.int16) + rng.normal(0, noise, (size[1], size[0], 3)).astype(np.int16)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


class Raw:
    """The raw in-process call: decode, processor, generate 1 token, greedy, same inputs and threads."""

    def __init__(self, repo: str, threads: int) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.torch = torch
        torch.set_num_threads(threads)
        self.processor = AutoProcessor.from_pretrained(repo)
        self.model = AutoModelForImageTextToText.from_pretrained(repo, dtype=torch.float32).eval()

    def __call__(self, data: bytes) -> float:
        started = time.perf_counter()
        image = Image.open(io.BytesIO(data)).convert("RGB")
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}]
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        inputs = self.processor(text=[text], images=[[image]], return_tensors="pt")
        with self.torch.inference_mode():
            self.model.generate(**inputs, max_new_tokens=1, do_sample=False)
        return time.perf_counter() - started


class Server:
    """The playground's app served by uvicorn in a thread of this process."""

    def __init__(self, catalog: Path, data_dir: Path, threads: int) -> None:
        import uvicorn

        from app.core.settings import Settings
        from app.web.app import create_app

        settings = Settings(models_path=catalog, data_dir=data_dir, budget_gb=4.0, worker_threads=threads)
        self.app = create_app(settings)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=0, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.05)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.client = httpx.Client(timeout=600, trust_env=False)

    def compare(self, data: bytes, models: list[str]) -> None:
        """POST /api/comparisons with 1 new token; back once every answer is."""
        response = self.client.post(f"{self.url}/api/comparisons",
                                    files=[("images", ("photo.jpg", data, "image/jpeg"))],
                                    data={"prompt": PROMPT, "models": models, "max_new_tokens": "1"})
        response.raise_for_status()
        for output in response.json()["outputs"]:
            if output["status"] != "done":
                raise RuntimeError(f"{output['model']}: {output.get('error')}")

    def page(self, data: bytes, model: str) -> float:
        """POST /compare as the page's form does, then its event stream: seconds to the first text."""
        started = time.perf_counter()
        response = self.client.post(f"{self.url}/compare", files=[("images", ("photo.jpg", data, "image/jpeg"))],
                                    data={"prompt": PROMPT, "models": model, "max_new_tokens": "1"})
        if response.status_code != 303:
            raise RuntimeError(f"/compare: HTTP {response.status_code}: {response.text[:300]}")
        first = None
        # Text comes as {"append": …}, or as {"set": …} when the answer was done before the stream began.
        # The stream is read to its end (untimed), so the next request does not wait for this one's worker.
        with self.client.stream("GET", f"{self.url}{response.headers['location']}/events") as events:
            for line in events.iter_lines():
                if first is None and line.startswith("data:") and line[5:].strip().startswith("{"):
                    change = json.loads(line[5:])
                    if isinstance(change, dict) and (change.get("append") or change.get("set")):
                        first = time.perf_counter() - started
        if first is None:
            raise RuntimeError("the comparison's events ended without any text")
        return first

    def gateway(self, data_url: str, model: str) -> float:
        """/v1/chat/completions, streamed, 1 new token: seconds to the first text chunk."""
        body = {"model": model, "stream": True, "max_tokens": 1,
                "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url}},
                                                          {"type": "text", "text": PROMPT}]}]}
        started = time.perf_counter()
        first = None
        with self.client.stream("POST", f"{self.url}/v1/chat/completions", json=body) as response:
            response.raise_for_status()
            for line in response.iter_lines():
                if line.startswith("data:") and line[5:].strip().startswith("{"):
                    choices = json.loads(line[5:]).get("choices") or [{}]
                    if first is None and (choices[0].get("delta") or {}).get("content"):
                        first = time.perf_counter() - started
        if first is None:
            raise RuntimeError("the gateway's answer had no text")
        return first

    def close(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(60)


@contextlib.contextmanager
def counting(size: tuple[int, int]) -> Iterator[Counter[str]]:
    """Count, while inside: Pillow's decodes of the JPEG upload at `size` (full) or at a reduced JPEG
    draft scale, image parts sent to workers as data: URLs, and base64 encodes of more than 1 kB."""
    from app.pool.client import OpenAIBackend

    counts: Counter[str] = Counter()
    load, encode, body = ImageFile.ImageFile.load, base64.b64encode, OpenAIBackend._body

    def counted_load(self: Any) -> Any:
        if self.tile and self.format == "JPEG":  # tiles left: this call decodes (later calls are no-ops)
            counts["full decodes" if self.size == size else "reduced decodes"] += 1
        return load(self)

    def counted_encode(data: Any, *args: Any) -> bytes:
        if len(data) > 1024:
            counts["base64 encodes"] += 1
        return encode(data, *args)

    def counted_body(self: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        made = body(self, *args, **kwargs)
        for message in made["messages"]:
            for part in message["content"]:
                if part.get("type") == "image_url":
                    url = part["image_url"]["url"]
                    counts["data: URLs to workers" if url.startswith("data:") else "shared files to workers"] += 1
        return made

    ImageFile.ImageFile.load = counted_load  # type: ignore[method-assign]
    base64.b64encode = counted_encode
    OpenAIBackend._body = counted_body  # type: ignore[method-assign]
    try:
        yield counts
    finally:
        ImageFile.ImageFile.load = load  # type: ignore[method-assign]
        base64.b64encode = encode
        OpenAIBackend._body = body  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny-dir", default=None)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--model", default="tiny-qwen2-vl")
    args = parser.parse_args()
    tiny_dir = Path(args.tiny_dir or os.environ.get("VLM_TINY_DIR") or tempfile.mkdtemp(prefix="bench-tiny-"))
    catalog_path = build_tiny_models(tiny_dir)
    catalog = load_catalog(catalog_path)
    threads = int(os.environ.get("VLM_WORKER_THREADS") or max(1, (os.cpu_count() or 2) // 2))
    data = photo_jpeg()
    data_url = f"data:image/jpeg;base64,{base64.b64encode(data).decode('ascii')}"
    models = [args.model, *(m for m in OTHERS if m != args.model)][:3]
    raw = Raw(str(catalog.get(args.model).repo), threads)
    server = Server(catalog_path, Path(tempfile.mkdtemp(prefix="bench-images-")) / "data", threads)
    try:
        server.compare(data, models)  # every model resident, each code path warm
        server.gateway(data_url, args.model)
        raw(data)
        server.page(data, args.model)
        times: dict[str, list[float]] = {"raw": [], "page": [], "gateway": []}
        for _ in range(args.repeats):  # interleaved, so drift hits every side alike
            times["raw"].append(raw(data))
            times["page"].append(server.page(data, args.model))
            times["gateway"].append(server.gateway(data_url, args.model))
        counts = {}
        for k in (1, 3):
            with counting(SIZE) as counted:
                server.compare(data, models[:k])
            counts[k] = dict(counted)
    finally:
        server.close()
    median = {side: statistics.median(values) for side, values in times.items()}
    print(f"{SIZE[0]}×{SIZE[1]} JPEG of {len(data) / 1e6:.2f} MB, 1 new token, checkpoint {args.model}; "
          f"{args.repeats} interleaved runs, medians; {os.cpu_count()} CPU cores, {threads} torch thread(s) "
          "for the raw call and for each worker")
    print(f"raw: decode + processor + generate 1 token   {median['raw'] * 1000:8.1f} ms")
    print(f"page API (/compare + events), first token    {median['page'] * 1000:8.1f} ms   "
          f"ratio {median['page'] / median['raw']:.2f}  (aim <= 1.2)")
    print(f"gateway (/v1/chat/completions), first token  {median['gateway'] * 1000:8.1f} ms   "
          f"ratio {median['gateway'] / median['raw']:.2f}  (aim <= 1.2)")
    for k, counted in counts.items():
        shown = ", ".join(f"{name} {counted.get(name, 0)}" for name in (
            "full decodes", "reduced decodes", "data: URLs to workers", "shared files to workers", "base64 encodes"))
        print(f"{k} model{'s' if k > 1 else ' '} in one comparison ({', '.join(models[:k])}): {shown}")


if __name__ == "__main__":
    main()
