"""What the pool, its workers, the gateway and the page cost, against the raw transformers call, in one run.

    python bench/pool.py [--tiny-dir DIR] [--repeats N] [--cold-repeats N]

On a tiny checkpoint (built on the spot, or reused from --tiny-dir / VLM_TINY_DIR), with the same
checkpoint, prompt, image, seed and torch threads on both sides:
  - raw: the in-process call (processor + greedy `generate`, in the caller's thread), timed to its
    first text (a streamer called by `generate` itself: no extra thread, and no decoding after the
    first text, so ours pays for streaming, detokenising and transport against bare `generate`) and
    to the end;
  - warm fixed cost at 1 and 8 new tokens, time to first token over raw (ms), through
    (a) a pool lease and the worker's backend, (b) the gateway `/v1/chat/completions` of a real
    server (uvicorn on a loopback port, streamed), (c) the page: POST /compare as htmx sends it,
    then the comparison's SSE stream until its first text event;
  - per-token cost at equal threads: ms/token between 8 and 256 new tokens, ours / raw, each side
    timed to its last text (what a side does after the answer is printed on its own line);
  - cold start to the first token of a 1-token answer: spawn + load through the pool, against a
    fresh raw process doing import + load + the answer (both timed to first token: neither side
    counts its interpreter's shutdown);
  - k models answering at once against one after another.
Every side runs once per repeat, in a rotating order, so drift hits all alike; figures are medians of
per-repeat differences (fixed costs) or ratios (per token), with their middle half in brackets, and
the load average says how busy the machine was. Absolute times vary; compare the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from app.core.catalog import load_catalog  # noqa: E402
from app.core.generation import Finish, GenerationParams  # noqa: E402
from app.core.protocol import ImagePart, user_message  # noqa: E402
from app.pool.environment import worker_environment  # noqa: E402
from app.pool.launcher import ProcessLauncher  # noqa: E402
from app.pool.pool import ModelPool  # noqa: E402
from app.pool.sizes import SizeBook  # noqa: E402
from app.tiny.checkpoints import build_tiny_models  # noqa: E402

MODEL = "tiny-qwen2-vl"  # greedy, its random weights run the full length without EOS (checked below)
PROMPT = "Describe this image."
SEED = 0
SIZES = (1, 8, 256)  # new tokens; warm fixed cost at 1 and 8, per-token between 8 and 256
LONG = 256
SIDES = ("raw", "lease", "gateway", "page")

# A fresh raw process: import, load, answer one token; says "first" the moment its first text exists.
RAW_COLD = r"""
import io, sys
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor
from transformers.generation.streamers import BaseStreamer
repo, threads, prompt, image_path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
torch.set_num_threads(threads)
processor = AutoProcessor.from_pretrained(repo)
model = AutoModelForImageTextToText.from_pretrained(repo, dtype=torch.float32).eval()

class First(BaseStreamer):
    def __init__(self):
        self.prompt, self.tokens, self.said = True, [], False
    def put(self, value):
        if self.prompt:
            self.prompt = False
            return
        self.tokens.extend(value.reshape(-1).tolist())
        if not self.said and processor.decode(self.tokens, skip_special_tokens=True):
            self.said = True
            sys.stdout.write("first\n")
            sys.stdout.flush()
    def end(self):
        pass

image = Image.open(image_path).convert("RGB")
messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
inputs = processor(text=[text], images=[[image]], return_tensors="pt")
torch.manual_seed(0)
with torch.inference_mode():
    model.generate(**inputs, max_new_tokens=1, do_sample=False, streamer=First())
sys.stdout.write("done\n")
sys.stdout.flush()
"""


def image_bytes() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


IMAGE = image_bytes()


@dataclass
class Sample:
    first: float  # seconds to the first text
    total: float  # seconds to the end of the answer (the stream closed)
    last: float  # seconds to the last text
    tokens: int  # new tokens the side reports
    prompt_tokens: int | None = None


def lone_answer_threads() -> int:
    """The torch threads the pool's CPU policy gives a lone answer: every core this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


async def worker_threads(client: httpx.AsyncClient, pid: int | None) -> int | None:
    """The torch threads a worker process says its last answer computed with (its open `/health`)."""
    import psutil

    if pid is None:
        return None
    process = psutil.Process(pid)
    connections = getattr(process, "net_connections", process.connections)(kind="tcp")
    for connection in connections:
        if connection.status == psutil.CONN_LISTEN:
            try:
                health = (await client.get(f"http://127.0.0.1:{connection.laddr.port}/health", timeout=5)).json()
            except (httpx.HTTPError, ValueError):
                continue
            return int(health["threads"]) if health.get("threads") else None
    return None


def resident_pid(status: dict[str, Any], model: str) -> int | None:
    return next((r["pid"] for r in status.get("resident", []) if r["model"] == model), None)


async def quiet(pids: list[int], limit_s: float = 60.0) -> None:
    """Wait until these processes and their children use under a fifth of a core (a spare preparing, a
    worker exiting), so that what runs next is measured alone."""
    import psutil

    def used() -> float:
        total = 0.0
        for pid in pids:
            try:
                process = psutil.Process(pid)
                for each in [process, *process.children(recursive=True)]:
                    times = each.cpu_times()
                    total += times.user + times.system
            except psutil.Error:
                continue
        return total

    deadline = time.monotonic() + limit_s
    before = used()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        now = used()
        if now - before < 0.1:
            return
        before = now


# ---------------------------------------------------------------- the raw side


class Raw:
    """The raw in-process call: processor + greedy generate in this thread, same inputs as ours."""

    def __init__(self, repo: str, threads: int) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor
        from transformers.generation.streamers import BaseStreamer

        self.torch = torch
        self.threads = threads
        torch.set_num_threads(threads)
        self.processor = AutoProcessor.from_pretrained(repo)
        self.model = AutoModelForImageTextToText.from_pretrained(repo, dtype=torch.float32).eval()
        processor = self.processor

        class First(BaseStreamer):  # called by generate in this thread: times the first text, nothing more
            def __init__(self) -> None:
                self.prompt, self.tokens, self.at = True, [], None

            def put(self, value: Any) -> None:
                if self.prompt:
                    self.prompt = False
                    return
                if self.at is None:
                    self.tokens.extend(value.reshape(-1).tolist())
                    if processor.decode(self.tokens, skip_special_tokens=True):
                        self.at = time.perf_counter()

            def end(self) -> None:
                pass

        self.first_streamer = First

    def __call__(self, tokens: int) -> Sample:
        from PIL import Image

        started = time.perf_counter()
        image = Image.open(io.BytesIO(IMAGE)).convert("RGB")
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}]
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        inputs = self.processor(text=[text], images=[[image]], return_tensors="pt")
        streamer = self.first_streamer()
        self.torch.manual_seed(SEED)
        with self.torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=tokens, do_sample=False, streamer=streamer)
        prompt_tokens = int(inputs["input_ids"].shape[1])
        self.processor.decode(out[0, prompt_tokens:], skip_special_tokens=True)
        total = time.perf_counter() - started
        first = (streamer.at or time.perf_counter()) - started
        return Sample(first, total, total, int(out.shape[1]) - prompt_tokens, prompt_tokens)


# ---------------------------------------------------------------- our sides


async def through_lease(pool: ModelPool, model: str, tokens: int) -> Sample:
    """(a) a pool lease and the worker's backend, as the comparison runner uses them."""
    started = time.perf_counter()
    first = last = None
    finish: Finish | None = None
    async with pool.lease(model) as backend:
        async for piece in backend.stream(PROMPT, [ImagePart(IMAGE)], GenerationParams(max_new_tokens=tokens,
                                                                                      seed=SEED)):
            if isinstance(piece, Finish):
                finish = piece
            elif piece:
                last = time.perf_counter() - started
                first = last if first is None else first
    total = time.perf_counter() - started
    assert finish is not None and first is not None and last is not None, "an answer without text"
    return Sample(first, total, last, finish.completion_tokens, finish.prompt_tokens)


class Server:
    """`vlm-playground serve` on the tiny catalogue, in its own process, on a free loopback port."""

    def __init__(self, catalogue: Path, data_dir: Path, threads: int | None) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data_dir.parent / "server.log"
        env = {**os.environ, **({"VLM_WORKER_THREADS": str(threads)} if threads else {})}
        command = [sys.executable, "-m", "app.cli", "serve", "--models", str(catalogue), "--data-dir", str(data_dir),
                   "--port", str(self.port), "--budget-gb", "2"]
        import subprocess

        self.process = subprocess.Popen(command, cwd=ROOT, stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
                                        env=env)

    async def ready(self, client: httpx.AsyncClient, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                if (await client.get(f"{self.url}/health", timeout=1)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
        raise RuntimeError(f"server not ready: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except Exception:
                self.process.kill()
                self.process.wait()


async def through_gateway(client: httpx.AsyncClient, url: str, tokens: int) -> Sample:
    """(b) an OpenAI client's streamed chat completion (one kept-alive connection, as SDK clients keep)."""
    body = {"model": MODEL, "messages": user_message(PROMPT, [ImagePart(IMAGE)]), "stream": True,
            "max_tokens": tokens, "temperature": 0, "seed": SEED, "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    first = last = None
    usage: dict[str, Any] = {}
    async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"gateway: HTTP {response.status_code}: {(await response.aread())[:300]!r}")
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            if any((c.get("delta") or {}).get("content") for c in chunk.get("choices") or []):
                last = time.perf_counter() - started
                first = last if first is None else first
            usage = chunk.get("usage") or usage
    total = time.perf_counter() - started
    assert first is not None and last is not None, "an answer without text"
    return Sample(first, total, last, int(usage.get("completion_tokens") or 0), int(usage.get("prompt_tokens") or 0))


PAGE_HEADERS = {"HX-Request": "true", "HX-Target": "results", "Sec-Fetch-Site": "same-origin"}


async def through_page(client: httpx.AsyncClient, url: str, tokens: int) -> Sample:
    """(c) the page: the form POSTed as htmx sends it, then its panels' SSE stream until the first text event
    (and on to the end, so the next measurement starts on an idle model)."""
    form = {"prompt": PROMPT, "models": MODEL, "max_new_tokens": str(tokens), "temperature": "0",
            "seed": str(SEED)}
    started = time.perf_counter()
    response = await client.post(f"{url}/compare", data=form, files={"images": ("image.png", IMAGE, "image/png")},
                                 headers={**PAGE_HEADERS, "HX-Current-URL": f"{url}/"})
    if response.status_code != 200:
        raise RuntimeError(f"page: HTTP {response.status_code}: {response.text[:300]}")
    comparison = int(response.headers["HX-Push-Url"].rsplit("/", 1)[1])
    first = last = None
    event = ""
    async with client.stream("GET", f"{url}/comparisons/{comparison}/events",
                             headers={"Accept": "text/event-stream", "Cache-Control": "no-cache"}) as events:
        async for line in events.aiter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event.startswith("text-"):
                change = json.loads(line[5:].strip())
                if change.get("append") or change.get("set"):
                    last = time.perf_counter() - started
                    first = last if first is None else first
            elif not line:
                if event == "end":
                    break
                event = ""
    total = time.perf_counter() - started
    stored = (await client.get(f"{url}/api/comparisons/{comparison}")).json()["outputs"][0]  # untimed: the count
    assert first is not None and last is not None, "an answer without text"
    return Sample(first, total, last, int(stored["tokens"] or 0), int(stored["prompt_tokens"] or 0))


# ---------------------------------------------------------------- cold start


async def cold_ours(pool: ModelPool) -> float:
    """Spawn + load through the pool to the first text of a 1-token answer; then evict (untimed)."""
    started = time.perf_counter()
    first: float | None = None
    async with pool.lease(MODEL) as backend:
        async for piece in backend.stream(PROMPT, [ImagePart(IMAGE)], GenerationParams(max_new_tokens=1, seed=SEED)):
            if isinstance(piece, str) and piece and first is None:
                first = time.perf_counter() - started
    await pool.evict(MODEL)
    assert first is not None, "the 1-token answer had no text"
    return first


async def cold_raw(repo: str, threads: int, image_path: Path) -> float:
    """A fresh process: import + load + a 1-token answer, to the moment its first text exists; then killed."""
    env = {**worker_environment(os.environ), "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", RAW_COLD, repo, str(threads), PROMPT, str(image_path),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=env)
    assert process.stdout is not None
    try:
        while (line := await process.stdout.readline()) != b"first\n":
            if not line:
                raise RuntimeError(f"the raw process exited ({await process.wait()}) before its first token")
        return time.perf_counter() - started
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


# ---------------------------------------------------------------- running it


def median(values: list[float]) -> float:
    return statistics.median(values)


def rotated(sides: tuple[str, ...], turn: int) -> list[str]:
    shift = turn % len(sides)
    return [*sides[shift:], *sides[:shift]]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny-dir", default=os.environ.get("VLM_TINY_DIR"))
    parser.add_argument("--repeats", type=int, default=12, help="interleaved warm runs of every side and size")
    parser.add_argument("--cold-repeats", type=int, default=3, help="cold starts of each side")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for every worker and the raw call (default: the pool's CPU policy, "
                             "all cores for a lone answer; the raw call then uses what the workers report)")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    phases: dict[str, float] = {}
    wall = mark = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="bench-pool-"))
    tiny_dir = Path(args.tiny_dir) if args.tiny_dir else work / "tiny"
    catalogue = build_tiny_models(tiny_dir)
    catalog = load_catalog(catalogue)
    repo = catalog.get(MODEL).repo or ""
    threads = args.threads or lone_answer_threads()
    image_path = work / "image.png"
    image_path.write_bytes(IMAGE)
    # no spare: a cold start here is a new process (bench/swap.py measures loads into a spare)
    pool = ModelPool(catalog, ProcessLauncher(work / "logs", threads=args.threads, spares=0), budget_gb=4.0,
                     sizes=SizeBook())
    await pool.start()
    raw = Raw(repo, threads)
    raw(8)  # warm the raw side once, as a worker's first request warms it
    client = httpx.AsyncClient(timeout=httpx.Timeout(30.0, read=300.0), trust_env=False)

    phases["setup"], mark = time.perf_counter() - mark, time.perf_counter()

    # cold start: both sides to the first text of a 1-token answer, alternating which goes first
    cold: dict[str, list[float]] = {"ours": [], "raw": []}
    for turn in range(args.cold_repeats):
        for side in (("ours", "raw") if turn % 2 == 0 else ("raw", "ours")):
            cold[side].append(await cold_ours(pool) if side == "ours" else await cold_raw(repo, threads, image_path))

    phases["cold"], mark = time.perf_counter() - mark, time.perf_counter()

    # warm: every side at every size once per repeat, in a rotating order
    server = Server(catalogue, work / "data", args.threads)
    try:
        await server.ready(client)
        runners: dict[str, Callable[[int], Awaitable[Sample]]] = {
            "lease": lambda n: through_lease(pool, MODEL, n),
            "gateway": lambda n: through_gateway(client, server.url, n),
            "page": lambda n: through_page(client, server.url, n),
        }
        for name in SIDES[1:]:  # first use: loads the server's worker; one warm request each
            for n in (8, 8):
                await runners[name](n)
        server_status = (await client.get(f"{server.url}/api/pool")).json()
        computed = {"lease": await worker_threads(client, resident_pid(pool.status(), MODEL)),
                    "server": await worker_threads(client, resident_pid(server_status, MODEL))}
        if computed["lease"] and computed["lease"] != raw.threads:  # equal threads: the raw call follows
            raw.threads = computed["lease"]
            raw.torch.set_num_threads(raw.threads)
        await quiet([os.getpid(), server.process.pid])  # the server's spare may still be preparing
        samples: dict[tuple[str, int], list[Sample]] = {}
        for turn in range(args.repeats):
            for n in SIZES:
                for side in rotated(SIDES, turn):
                    if side == "page" and n == LONG:
                        continue  # the page's per-token cost is the gateway's; its fixed cost is at 1 and 8
                    sample = raw(n) if side == "raw" else await runners[side](n)
                    samples.setdefault((side, n), []).append(sample)
    finally:
        server.stop()

    phases["warm"], mark = time.perf_counter() - mark, time.perf_counter()

    # k models at once versus one after another (the pool's own workers)
    models = [MODEL, "tiny-idefics3", "tiny-llava"]
    await asyncio.gather(*(through_lease(pool, model, 4) for model in models))  # make each resident
    sequential = time.perf_counter()
    for model in models:
        await through_lease(pool, model, 128)
    sequential = time.perf_counter() - sequential
    concurrent = time.perf_counter()
    await asyncio.gather(*(through_lease(pool, model, 128) for model in models))
    concurrent = time.perf_counter() - concurrent
    await pool.close()
    await client.aclose()
    phases["k models"], phases["in all"] = time.perf_counter() - mark, time.perf_counter() - wall

    report(samples, cold, {"raw": raw.threads, **computed}, args.repeats, concurrent, sequential, len(models),
           phases, (load_before, os.getloadavg()[0]))


def spread(values: list[float]) -> str:
    """The middle half of `values`, so that a noisy machine shows as such."""
    if len(values) < 2:
        return ""
    low, _, high = statistics.quantiles(values, n=4)
    return f"[{low:.1f}..{high:.1f}]"


def report(samples: dict[tuple[str, int], list[Sample]], cold: dict[str, list[float]], threads: dict[str, int | None],
           repeats: int,
           concurrent: float, sequential: float, k: int, phases: dict[str, float], load: tuple[float, float]) -> None:
    def firsts(side: str, n: int) -> list[float]:
        return [s.first for s in samples[(side, n)]]

    def totals(side: str, n: int) -> list[float]:
        return [s.total for s in samples[(side, n)]]

    def over_raw(side: str, n: int) -> list[float]:
        """Per-repeat differences in time to first token, ms (each pair ran back to back)."""
        return [(a - b) * 1000 for a, b in zip(firsts(side, n), firsts("raw", n), strict=True)]

    def lasts(side: str, n: int) -> list[float]:
        return [s.last for s in samples[(side, n)]]

    def per_token(side: str) -> list[float]:
        """Per-repeat ms/token between 8 and LONG new tokens, to the last text."""
        return [(b - a) * 1000 / (LONG - 8) for a, b in zip(lasts(side, 8), lasts(side, LONG), strict=True)]

    print(f"checkpoint {MODEL}; {repeats} interleaved repeats; medians [middle half]; {os.cpu_count()} CPU cores "
          f"(load average {load[0]:.1f} before, {load[1]:.1f} after); torch threads: raw call {threads['raw']}, "
          f"pool's worker {threads['lease']}, server's worker {threads['server']}")
    if len(set(threads.values())) != 1:
        print("  WARNING: the raw call and the workers computed with different thread counts: not like with like")
    for n in SIZES:  # every side produced what was asked, from the same prompt
        counts = {side: sorted({s.tokens for s in samples[(side, n)]}) for side in SIDES if (side, n) in samples}
        prompts = {side: sorted({s.prompt_tokens for s in samples[(side, n)]}) for side in counts}
        if any(c != [n] for c in counts.values()) or len({tuple(p) for p in prompts.values()}) != 1:
            print(f"  WARNING at {n} tokens: new tokens {counts}, prompt tokens {prompts}: not like with like")
    raw_first = {n: [t * 1000 for t in firsts("raw", n)] for n in (1, 8)}
    print(f"raw call, time to first token: {median(raw_first[1]):.1f} ms {spread(raw_first[1])} at 1 token, "
          f"{median(raw_first[8]):.1f} ms at 8 (to the end {median(totals('raw', 8)) * 1000:.1f} ms)")
    print("warm fixed cost: time to first token, ours - raw          1 token              8 tokens")
    aims = {"lease": "", "gateway": "  aim <= 10 ms", "page": "  aim <= 15 ms"}
    labels = {"lease": "(a) pool lease + worker backend", "gateway": "(b) gateway /v1/chat/completions",
              "page": "(c) page POST /compare + SSE text"}
    for side in SIDES[1:]:
        one, eight = over_raw(side, 1), over_raw(side, 8)
        print(f"  {labels[side]:<40} {median(one):7.1f} ms {spread(one):<13} {median(eight):7.1f} ms "
              f"{spread(eight):<13}{aims[side]}")
    raw_token = per_token("raw")
    print(f"per-token cost between 8 and {LONG} tokens (to the last text): raw {median(raw_token):.3f} ms/token "
          f"{spread(raw_token)}; ours / raw, per repeat (aim <= 1.05):")
    for side in ("lease", "gateway"):
        ratios = [a / b for a, b in zip(per_token(side), raw_token, strict=True)]
        print(f"  {labels[side]:<40} {median(per_token(side)):7.3f} ms/token  {median(ratios):6.3f}× "
              f"{spread(ratios)}")
    closing = {side: [(s.total - s.last) * 1000 for n in (1, 8) for s in samples[(side, n)]] for side in SIDES[1:]}
    print("after the last text, until the answer's stream is closed (raw: 0): "
          + "; ".join(f"{side} {median(values):.0f} ms {spread(values)}" for side, values in closing.items()))
    ours, theirs = median(cold["ours"]), median(cold["raw"])
    print(f"cold start to first token of a 1-token answer: spawn + load {ours:.2f} s vs a fresh raw process "
          f"{theirs:.2f} s: {ours / theirs:.3f}×  ({len(cold['ours'])} each; "
          f"ours {', '.join(f'{t:.1f}' for t in cold['ours'])}; raw {', '.join(f'{t:.1f}' for t in cold['raw'])})")
    print(f"{k} models at once / one after another: {concurrent / sequential:.3f}  "
          f"({concurrent:.2f} s vs {sequential:.2f} s, 128 tokens each)")
    print("bench wall time " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in phases.items()))


if __name__ == "__main__":
    asyncio.run(main())
