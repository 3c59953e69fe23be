"""Soak: a live server on tiny models under load, bad input and injected faults; one report at the end.

    python bench/soak.py [--tiny-dir DIR] [--load-s 20] [--clients 6] [--raters 16] [--writes 20] [--keep]
                         [--max-queued 4] [--turn-s 2] [--slow-conns 300] [--slow-s 8] [--schema-examples 20] ...

Starts its own `python -m app.cli serve` on a free loopback port with a fresh data directory and a
catalogue of tiny checkpoints (built on the spot, or reused from --tiny-dir / VLM_TINY_DIR), plus
the named fake models of tests/fakes/faulty.py: `tiny-slow` (real generation slowed to ~40 tokens/s,
so an answer can be hurt mid-way), `faulty-oom` (raises torch's out-of-memory error mid-answer) and
`faulty-hang` (blocks forever, deaf to cancellation). Then, bounded in count and time:

  1. load: `--clients` threads comparing two models in a loop for `--load-s` seconds while
     `--raters` threads each write `--writes` ratings (new and replaced) to finished outputs;
  2. bad input: every refusal category (sizes, broken files, prompt, models, parameters, ids,
     cross-site writes, hostile bodies), each expected to be a 4xx, never a 5xx;
  3. faults: a worker SIGKILLed mid-answer, the out-of-memory stand-in, a hang past the time
     limit, a browser and an API client going away, SIGTERM of the server mid-answer, and kill -9
     of the server mid-answer right after acknowledged ratings; each survived or not;
  4. audit: every acknowledged rating read back after both restarts; PRAGMA integrity_check.

Between 2 and 3, the hostile load of issue 12, each simulated client from its own loopback address
(127.0.0.2, 127.0.0.3, ...: the server tells clients apart by address and gives turns round-robin):

  - flood fairness: one client queues as many long `tiny-slow` answers as it may through
    `/v1/chat/completions` (`--max-queued`, each `--turn-s` long; `--flood-extra` more get 429 with
    Retry-After), and another client's 1-token request is timed, in seconds and in turns (one flood
    answer); bounded by 2.5 turns, where first-come-first-served would cost the whole flood;
  - a token holding `;` and a space (a second, short-lived server): sign-in by ?token=, its cookie;
  - image bomb: eight single-colour 6320×6320 PNGs (about 1 MB) refused 413 by their total pixels,
    two of them answered while the worker's RSS is sampled (growth vs planned GB and decoded size);
  - slow-header flood: `--slow-conns` half-sent requests, more than the server's
    `--max-connections`, re-opened as they are closed for `--slow-s`, while `/health` is probed and
    comparisons run; no half-sent connection may outlive `--header-timeout-s`, nor the log balloon;

and, after the audit, schemathesis on the live `/openapi.json` (`--schema-examples` an operation
and mode) with the server-error, status-code, content-type and response-schema checks.

Only loopback traffic. Exit status 0 when nothing was lost, no 5xx was seen, every fault was survived
and every bound of issue 12 held (the flood's turns, the slow-header flood, the image bomb, schemathesis).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import os
import selectors
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import yaml  # noqa: E402

from tests.fakes.faulty import ENV as FAULTY_ENV  # noqa: E402
from tests.fakes.faulty import NO_FAULT, STEP_S  # noqa: E402

MB = 1024 * 1024
FAST, QWEN, SLOW, TWIN = "tiny-llava", "tiny-qwen2-vl", "tiny-slow", "tiny-slow-twin"
OOM, HANG = "faulty-oom", "faulty-hang"
GENERATION_LIMIT_S = 10  # long enough for a real answer of 2000 tokens on a busy CPU; the hang waits it out
# Each simulated client connects from its own loopback address: the server tells clients apart by address.
FLOODER, QUIET, SLOWLORIS, PROBER = "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"
FLOOD_BOUND_TURNS = 2.5  # the answer running and at most one more, then the 1-token request's own turn
LOG_GROWTH_BOUND = 64 * 1024  # bytes the server log may grow by during the slow-header flood
TOKEN = "soak;token with space"  # a token a naive cookie would break


# ---------------------------------------------------------------- bookkeeping


@dataclass
class Tally:
    """Every request the soak sends: how many, how many at once, what came back."""

    sent: int = 0
    probes: int = 0  # sent outside `request` (an event stream, a client that gives up): no status to judge
    in_flight: int = 0
    peak: int = 0
    ok: int = 0  # got the status it expected
    unexpected: list[str] = field(default_factory=list)
    five_xx: list[str] = field(default_factory=list)
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def request(self, client: httpx.Client, method: str, url: str, kind: str, expect: tuple[int, ...],
                **kwargs: Any) -> httpx.Response:
        with self.lock:
            self.sent += 1
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        started = time.perf_counter()
        try:
            response = client.request(method, url, **kwargs)
        finally:
            with self.lock:
                self.in_flight -= 1
        elapsed = time.perf_counter() - started
        with self.lock:
            self.latencies[kind].append(elapsed)
            if response.status_code in expect:
                self.ok += 1
            else:
                self.unexpected.append(f"{kind}: {method} {url.split('127.0.0.1')[-1][:60]} → {response.status_code} "
                                       f"{response.text[:160]!r}")
            if response.status_code >= 500:
                self.five_xx.append(f"{kind}: {method} {url.split('127.0.0.1')[-1][:60]} → {response.status_code}")
        return response


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


# ---------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`python -m app.cli serve` on a free loopback port."""

    def __init__(self, catalog: Path, data_dir: Path, env: dict[str, str]) -> None:
        self.catalog, self.data_dir, self.env = catalog, data_dir, env
        self.process: subprocess.Popen | None = None
        self.url = ""
        self.log = data_dir.parent / "server.log"

    def start(self) -> float:
        started = time.monotonic()
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "app.cli", "serve", "--models", str(self.catalog), "--data-dir",
                   str(self.data_dir), "--port", str(port), "--budget-gb", "3.5"]
        self.process = subprocess.Popen(command, cwd=ROOT, stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
                                        env={**os.environ, **self.env})
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("server not ready in 90 s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def write_catalog(tiny_dir: Path, out: Path) -> Path:
    data = yaml.safe_load((tiny_dir / "models.yaml").read_text())
    chosen = []
    for entry in data["models"]:
        if entry["id"] in (FAST, QWEN):
            entry["repo"] = str(tiny_dir / str(entry["repo"]).removeprefix("./"))
            chosen.append(entry)
    qwen = next(entry for entry in chosen if entry["id"] == QWEN)
    for model_id, family in ((SLOW, "throttled"), (TWIN, "throttled"), (OOM, "faulty_oom"), (HANG, "faulty_hang")):
        chosen.append({**qwen, "id": model_id, "name": f"{model_id} (test fake: {family})", "family": family})
    out.write_text(yaml.safe_dump({"models": chosen}))
    return out


# ---------------------------------------------------------------- inputs


def png(color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (48, 40), fmt: str = "PNG") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=fmt)
    return buffer.getvalue()


def noise(fmt: str) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.effect_noise((96, 64), 60).convert("RGB").save(buffer, format=fmt)
    return buffer.getvalue()


def bilevel_png(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of any size without holding its pixels (20000×20000 is about 50 KB)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + (width + 7) // 8)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", data) + chunk(b"IEND", b""))


def form(prompt: str, models: list[str], tokens: int | str, images: list[tuple[str, bytes]] | None = None,
         **extra: Any) -> dict[str, Any]:
    images = images if images is not None else [("red.png", png())]
    return {"data": {"prompt": prompt, "models": models, "max_new_tokens": str(tokens), **extra},
            "files": [("images", (name, data, "image/png")) for name, data in images] or None}


def chunked_body(boundary: str, total: int) -> Iterator[bytes]:
    yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\nhi\r\n--{boundary}\r\n"
           f"Content-Disposition: form-data; name=\"images\"; filename=\"huge.png\"\r\n\r\n").encode()
    block = os.urandom(256 * 1024)
    for _ in range(total // len(block) + 1):
        yield block
    yield f"\r\n--{boundary}--\r\n".encode()



def bomb_png(side: int) -> bytes:
    """A single-colour PNG of side×side pixels: about 130 kB for 6320 that decode to 3·side² bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (10, 120, 200)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def chat(model: str, tokens: int, prompt: str = "Describe the image.", images: list[bytes] | None = None,
         **extra: Any) -> dict[str, Any]:
    """An OpenAI chat request with the images as data URLs (one small PNG unless told)."""
    parts: list[dict[str, Any]] = [
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{base64.b64encode(data).decode()}"}}
        for data in (images if images is not None else [png()])]
    return {"model": model, "max_tokens": tokens, "messages": [{"role": "user", "content": [
        *parts, {"type": "text", "text": prompt}]}], **extra}


def from_address(address: str, timeout: float = 120) -> httpx.Client:
    """A client connecting from its own loopback address, so that the server sees a client of its own."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=timeout, trust_env=False)


def message_of(response: httpx.Response) -> str:
    """The refusal's message: FastAPI's `detail` or the gateway's `error.message` (else the text)."""
    try:
        body = response.json()
    except ValueError:
        return response.text
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message", ""))
    return str(body.get("detail", body)) if isinstance(body, dict) else str(body)


@dataclass
class Bound:
    """One of issue 12's bounds: held or not, and what was measured."""

    name: str
    held: bool
    detail: str


# ---------------------------------------------------------------- the soak


class Soak:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.tally = Tally()
        self.client = httpx.Client(timeout=httpx.Timeout(30.0, read=300.0), trust_env=False)
        self.acknowledged: dict[tuple[int, str], tuple[int, str]] = {}  # (output, rater) → (score, note)
        self.ack_lock = threading.Lock()
        self.bad: dict[str, Counter] = defaultdict(Counter)
        self.expected: dict[str, tuple[int, ...]] = {}
        self.faults: list[tuple[str, bool, str]] = []
        self.notes: list[str] = []
        self.comparisons = 0
        self.bounds: list[Bound] = []  # issue 12's bounds, each held or not
        self.hostile: dict[str, list[str]] = defaultdict(list)  # phase → report lines
        self.schema: dict[str, Any] = {}
        self.read_back = 0
        catalog = write_catalog(args.tiny_dir, work / "models.yaml")
        env = {**FAULTY_ENV, "VLM_GENERATION_TIMEOUT_S": str(GENERATION_LIMIT_S), "VLM_SHUTDOWN_GRACE_S": "1",
               "VLM_ABANDON_AFTER_S": "1", "VLM_WORKER_THREADS": "1", "DATABASE_URL": "",  # SQLite in its own dir
               "VLM_MAX_QUEUED_PER_CLIENT": str(args.max_queued), "VLM_QUEUE_TIMEOUT_S": "120",
               "VLM_MAX_CONNECTIONS": str(args.max_connections), "VLM_HEADER_TIMEOUT_S": f"{args.header_timeout_s:g}"}
        self.server = Server(catalog, work / "data", env)

    # --- helpers --------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self.server.url

    def call(self, method: str, path: str, kind: str, expect: tuple[int, ...] = (200,),
             client: httpx.Client | None = None, **kwargs: Any) -> httpx.Response:
        return self.tally.request(client or self.client, method, self.url + path, kind, expect, **kwargs)

    def compare(self, models: list[str], tokens: int = 6, prompt: str = "Describe the image.",
                client: httpx.Client | None = None, kind: str = "comparison") -> dict[str, Any]:
        response = self.call("POST", "/api/comparisons", kind, (201,), client, **form(prompt, models, tokens))
        self.comparisons += 1
        return response.json() if response.status_code == 201 else {"outputs": [], "error": response.text}

    def rate(self, output_id: int, rater: str, score: int, note: str, client: httpx.Client | None = None,
             kind: str = "rating") -> bool:
        response = self.call("POST", f"/api/outputs/{output_id}/rating", kind, (200, 201), client,
                             json={"score": score, "note": note, "rater": rater})
        if response.status_code in (200, 201):
            with self.ack_lock:
                self.acknowledged[(output_id, rater)] = (score, note)
            return True
        return False

    def outputs(self, comparison_id: int) -> dict[str, dict[str, Any]]:
        body = self.call("GET", f"/api/comparisons/{comparison_id}", "read").json()
        return {o["model"]: o for o in body["outputs"]}

    def pool(self) -> dict[str, Any]:
        return self.call("GET", "/api/pool", "read").json()

    def pids(self) -> dict[str, int]:
        return {r["model"]: r["pid"] for r in self.pool()["resident"] if r["pid"]}

    def latest_id(self) -> int:
        items = self.call("GET", "/api/comparisons?limit=1", "read").json()["items"]
        return items[0]["id"] if items else 0

    @staticmethod
    def wait(condition: Callable[[], Any], timeout: float, every: float = 0.2) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(every)
        return None

    def in_background(self, models: list[str], tokens: int) -> tuple[threading.Thread, dict[str, Any], int]:
        """POST a comparison in a thread; returns the thread, where its response lands, and its id."""
        before = self.latest_id()
        holder: dict[str, Any] = {}

        def run() -> None:
            try:
                holder["response"] = self.tally.request(httpx.Client(timeout=300, trust_env=False), "POST",
                                                        f"{self.url}/api/comparisons", "comparison (long)",
                                                        (201,), **form("Describe it in detail.", models, tokens))
            except httpx.HTTPError as exc:  # the server was killed under it: nothing to judge
                holder["error"] = exc
                with self.tally.lock:
                    self.tally.probes += 1

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        comparison_id = self.wait(lambda: self.latest_id() > before and self.latest_id(), 30) or 0
        return thread, holder, comparison_id

    def generating(self, comparison_id: int, models: list[str]) -> bool:
        current = self.outputs(comparison_id)
        return all(current.get(m, {}).get("status") == "generating" for m in models)

    def accounting_ok(self) -> bool:
        def quiet() -> dict[str, Any] | None:
            status = self.pool()
            idle = status["draining_gb"] == 0 and all(r["leases"] == 0 and r["state"] == "ready"
                                                      for r in status["resident"])
            return status if idle else None

        status = self.wait(quiet, 30)
        return bool(status) and abs(status["used_gb"] - sum(r["planned_gb"] for r in status["resident"])) < 1e-6

    @staticmethod
    def alive(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return False

    def fault(self, name: str, survived: bool, detail: str) -> None:
        self.faults.append((name, bool(survived), detail))

    # --- 1. load ----------------------------------------------------------------------------------------

    def load(self) -> None:
        warm = self.compare([FAST, QWEN, SLOW, TWIN, OOM, HANG], 4, f"{NO_FAULT} warm up")
        rateable = [o["id"] for o in warm["outputs"] if o.get("status") == "done"]
        stop = time.monotonic() + self.args.load_s
        rating_latency: list[float] = []
        problems: list[str] = []

        def comparer(index: int) -> None:
            with from_address(f"127.0.1.{index + 1}", timeout=300) as client:  # six people, not one client
                while time.monotonic() < stop:
                    body = self.compare([FAST, QWEN], 8, f"Client {index}: what is shown?", client)
                    for output in body["outputs"]:
                        if output["status"] != "done":
                            problems.append(f"{output['model']}: {output['status']} {output['error']}")

        def rater(index: int, barrier: threading.Barrier) -> None:
            name = f"soak-rater-{index:02d}"
            with httpx.Client(base_url=self.url, timeout=60, trust_env=False) as client:
                barrier.wait()
                for write in range(self.args.writes):
                    output_id = rateable[(index + write) % len(rateable)]
                    started = time.perf_counter()
                    self.rate(output_id, name, 1 + (index + write) % 5, f"{name} #{write}: «ok», \"quoted\"", client)
                    rating_latency.append(time.perf_counter() - started)

        barrier = threading.Barrier(self.args.raters)
        threads = [threading.Thread(target=comparer, args=(i,)) for i in range(self.args.clients)]
        threads += [threading.Thread(target=rater, args=(i, barrier)) for i in range(self.args.raters)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(self.args.load_s + 300)
        self.load_s = time.monotonic() - started
        self.rating_latency = rating_latency
        self.load_problems = problems

    # --- 2. bad input ---------------------------------------------------------------------------------

    def bad_inputs(self) -> None:
        ok_image = [("ok.png", png())]
        multipart = {"Content-Type": "multipart/form-data; boundary=soak"}
        api = "/api/comparisons"
        big_name = "x" * 300 + ".png"
        cases: list[tuple[str, str, str, dict[str, Any], tuple[int, ...]]] = [
            ("too many images", "POST", "/api/comparisons",
             form("hi", [FAST], 2, [(f"{i}.png", png((i, i, i))) for i in range(9)]), (413,)),
            ("image over 20 MB", "POST", "/api/comparisons", form("hi", [FAST], 2, [("big.png", os.urandom(21 * MB))]),
             (413,)),
            ("body over 50 MB, chunked", "POST", api,
             {"content": chunked_body("soak", 51 * MB), "headers": multipart}, (413,)),
            ("body over 50 MB, chunked (page)", "POST", "/compare",
             {"content": chunked_body("soak", 51 * MB), "headers": multipart}, (413,)),
            ("over 40 megapixels", "POST", api, form("hi", [FAST], 2, [("wide.png", bilevel_png(8000, 6000))]),
             (413,)),
            ("decompression bomb", "POST", api, form("hi", [FAST], 2, [("bomb.png", bilevel_png(20000, 20000))]),
             (413,)),
            ("truncated PNG", "POST", api, form("hi", [FAST], 2, [("cut.png", noise("PNG")[:900])]), (422,)),
            ("truncated JPEG", "POST", "/api/comparisons", form("hi", [FAST], 2, [("cut.jpg", noise("JPEG")[:900])]),
             (422,)),
            ("not an image, named .png", "POST", "/api/comparisons",
             form("hi", [FAST], 2, [("cat.png", b"#!/bin/sh\necho hi\n")]), (422,)),
            ("empty file", "POST", "/api/comparisons", form("hi", [FAST], 2, [("empty.png", b"")]), (422,)),
            ("no image", "POST", "/api/comparisons", form("hi", [FAST], 2, []), (422,)),
            ("blank prompt", "POST", "/api/comparisons", form("   ", [FAST], 2, ok_image), (422,)),
            ("prompt of 4,001 characters", "POST", "/api/comparisons", form("x" * 4001, [FAST], 2, ok_image), (422,)),
            ("prompt with NUL", "POST", "/api/comparisons", form("a\x00b", [FAST], 2, ok_image), (422,)),
            ("unknown model", "POST", "/api/comparisons", form("hi", ["gpt-17"], 2, ok_image), (422,)),
            ("9 models", "POST", "/api/comparisons", form("hi", [f"m{i}" for i in range(9)], 2, ok_image), (422,)),
            ("duplicate models", "POST", "/api/comparisons", form("hi", [FAST, FAST], 2, ok_image), (422,)),
            ("parameter NaN", "POST", "/api/comparisons", form("hi", [FAST], 2, ok_image, temperature="nan"), (422,)),
            ("parameter out of range", "POST", "/api/comparisons", form("hi", [FAST], 99999, ok_image), (422,)),
            ("parameter as text", "POST", "/api/comparisons", form("hi", [FAST], 2, ok_image, seed="lots"), (422,)),
            ("file name with markup", "POST", "/api/comparisons",
             form("<script>alert(1)</script>", [FAST], 2, [("<img src=x onerror=alert(1)>.png", b"nope")]), (422,)),
            ("long file name, not an image", "POST", "/api/comparisons", form("hi", [FAST], 2, [(big_name, b"x")]),
             (422,)),
            ("cross-site write", "POST", "/api/comparisons",
             {**form("hi", [FAST], 2, ok_image), "headers": {"Origin": "https://evil.example"}}, (403,)),
            ("cross-site rating", "POST", "/api/outputs/1/rating",
             {"json": {"score": 3}, "headers": {"Sec-Fetch-Site": "cross-site"}}, (403,)),
            ("rating score 6", "POST", "/api/outputs/1/rating", {"json": {"score": 6}}, (422,)),
            ("rating note over 10,000 characters", "POST", "/api/outputs/1/rating",
             {"json": {"score": 3, "note": "n" * 10_001}}, (422,)),
            ("rating body not JSON", "POST", "/api/outputs/1/rating",
             {"content": b"{nope", "headers": {"Content-Type": "application/json"}}, (422,)),
            ("rating of an unknown output", "POST", "/api/outputs/999999/rating", {"json": {"score": 3}}, (404,)),
            ("id past 64 bits (API)", "GET", f"/api/comparisons/{2**64}", {}, (404, 422)),
            ("id past 64 bits (rating)", "POST", f"/api/outputs/{2**64}/rating", {"json": {"score": 3}}, (404, 422)),
            ("offset past 64 bits", "GET", f"/api/comparisons?offset={2**64}", {}, (422,)),
            ("id past 64 bits (page)", "GET", f"/comparisons/{2**64}", {}, (404, 422)),
            ("id past 64 bits (events)", "GET", f"/comparisons/{2**64}/events", {}, (404, 422)),
            ("id past 64 bits (page rating)", "POST", f"/outputs/{2**64}/rating", {"data": {"score": "3"}}, (404, 422)),
            ("page past 64 bits (history)", "GET", f"/history?page={2**64}", {}, (200, 404, 422)),
            ("negative limit", "GET", "/api/comparisons?limit=-1", {}, (422,)),
            ("export date nonsense", "GET", "/export/ratings.csv?since=yesterday", {}, (422,)),
            ("gateway: remote image URL", "POST", "/v1/chat/completions",
             {"json": {"model": FAST, "messages": [{"role": "user", "content": [
                 {"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "http://127.0.0.1:9/x.png"}}]}]}},
             (400,)),
            ("gateway: broken base64", "POST", "/v1/chat/completions",
             {"json": {"model": FAST, "messages": [{"role": "user", "content": [
                 {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}]}]}}, (400,)),
            ("gateway: unknown model", "POST", "/v1/chat/completions", {"json": chat("nope", 2)}, (400, 404)),
            ("gateway: no image", "POST", "/v1/chat/completions",
             {"json": {"model": FAST, "messages": [{"role": "user", "content": "hi"}]}}, (422,)),
            ("gateway: not JSON", "POST", "/v1/chat/completions",
             {"content": b"\xff\xfe", "headers": {"Content-Type": "application/json"}}, (400, 422)),
            ("path traversal for an image", "GET", "/images/..%2F..%2Fplayground.db", {}, (404, 422)),
            # issue 12: the gateway meets the page API's limits; hostile names, hosts and nesting are 4xx
            ("gateway: prompt of 40,000 characters", "POST", "/v1/chat/completions",
             {"json": chat(FAST, 2, "x" * 40_000)}, (422,)),
            ("gateway: seed 2**64", "POST", "/v1/chat/completions", {"json": chat(FAST, 2, seed=2**64)}, (422,)),
            ("gateway: temperature 1e-45", "POST", "/v1/chat/completions",
             {"json": chat(FAST, 2, temperature=1e-45)}, (422,)),
            ("gateway: JSON nested 1,000 deep", "POST", "/v1/chat/completions",
             {"content": b'{"model": "tiny-llava", "messages": ' + b"[" * 1000 + b"]" * 1000 + b"}",
              "headers": {"Content-Type": "application/json"}}, (400,)),
            ("NUL in an upload's file name", "POST", api, form("hi", [FAST], 2, [("nul\x00.png", png())]),
             (201, 400, 422)),
            ("wrong Host header (read)", "GET", "/api/models", {"headers": {"Host": "rebound.example"}}, (400,)),
            ("wrong Host header (export)", "GET", "/export/ratings.csv", {"headers": {"Host": "rebound.example:80"}},
             (400,)),
            ("wrong Host header (write)", "POST", "/api/outputs/1/rating",
             {"json": {"score": 3}, "headers": {"Host": "rebound.example"}}, (400,)),
        ]
        before_total = self.call("GET", "/api/comparisons", "read").json()["total"]
        for category, method, path, kwargs, expect in cases:
            for attempt in range(2):
                try:
                    with httpx.Client(timeout=60, trust_env=False) as fresh:  # one refusal may close its connection
                        response = self.call(method, path, f"bad input: {category}", expect, fresh, **kwargs)
                    self.bad[category][response.status_code] += 1
                    self.expected[category] = expect
                    break
                except httpx.HTTPError as exc:  # the server may close a huge upload early: no second try for those
                    streamed = "content" in kwargs and not isinstance(kwargs["content"], bytes)
                    if attempt or streamed:
                        self.bad[category][type(exc).__name__] += 1
                        break
        after_total = self.call("GET", "/api/comparisons", "read").json()["total"]
        self.bad_stored = after_total - before_total

    def token_cookie(self) -> None:
        """A second, short-lived server with a token holding `;` and spaces: login by ?token=, then its cookie."""
        server = Server(self.server.catalog, self.work / "data-token", {**self.server.env, "VLM_AUTH_TOKEN": TOKEN})
        server.log = self.work / "server-token.log"
        server.start()
        cases: list[tuple[str, dict[str, Any], tuple[int, ...]]] = [
            ("token with ';': ?token= sign-in", {"params": {"token": TOKEN}}, (200,)),
            ("token with ';': no credential", {}, (401,)),
            ("token with ';': bearer header", {"headers": {"Authorization": f"Bearer {TOKEN}"}}, (200,)),
            ("token with ';': cookie sent unencoded", {"headers": {"Cookie": f"vlm_token={TOKEN}"}}, (401,)),
        ]
        try:
            for category, kwargs, expect in cases:
                with httpx.Client(timeout=30, trust_env=False) as fresh:
                    response = self.tally.request(fresh, "GET", f"{server.url}/api/models", f"bad input: {category}",
                                                  expect, **kwargs)
                self.bad[category][response.status_code] += 1
                self.expected[category] = expect
                if "sign-in" in category:
                    cookie = response.headers.get("set-cookie", "").split(";", 1)[0]
                    category, expect = "token with ';': the cookie it set", (200,)
                    with httpx.Client(timeout=30, trust_env=False) as fresh:
                        again = self.tally.request(fresh, "GET", f"{server.url}/api/models",
                                                   f"bad input: {category}", expect, headers={"Cookie": cookie})
                    self.bad[category][again.status_code if cookie else "no cookie set"] += 1
                    self.expected[category] = expect
        finally:
            server.stop()

    # --- hostile load (issue 12) ----------------------------------------------------------------------

    def timed(self, address: str, body: dict[str, Any], kind: str, expect: tuple[int, ...]) -> dict[str, Any]:
        """POST a chat request from `address` in a thread; the holder gets its response and when it came back."""
        holder: dict[str, Any] = {"started": time.monotonic()}

        def run() -> None:
            try:
                with from_address(address) as client:
                    holder["response"] = self.tally.request(client, "POST", f"{self.url}/v1/chat/completions", kind,
                                                            expect, json=body)
            except httpx.HTTPError as exc:
                holder["error"] = exc
            holder["done"] = time.monotonic()

        holder["thread"] = threading.Thread(target=run, daemon=True)
        holder["thread"].start()
        return holder

    def leases(self, model: str) -> int:
        return next((r["leases"] for r in self.pool()["resident"] if r["model"] == model), 0)

    def flood_fairness(self) -> None:
        """One client queues as many long answers on `tiny-slow` as it may (and a few past that); another
        client's 1-token request meanwhile. Its latency in seconds and in turns (one flood answer)."""
        lines = self.hostile["flood fairness"]
        tokens = max(2, round(self.args.turn_s / STEP_S))
        queued = self.args.max_queued
        with from_address(QUIET) as client:  # loaded and warm before the clock starts
            self.tally.request(client, "POST", f"{self.url}/v1/chat/completions", "flood: warm-up", (200,),
                               json=chat(SLOW, 1, "warm"))
        flood = []
        for _ in range(1 + queued):  # one running and `queued` waiting
            flood.append(self.timed(FLOODER, chat(SLOW, tokens, "Describe it at length."), "flood: long answer",
                                    (200,)))
            time.sleep(0.1)
        in_line = self.wait(lambda: self.leases(SLOW) >= 1 + queued, 20)
        refused = []
        with from_address(FLOODER) as client:
            for _ in range(self.args.flood_extra):
                refused.append(self.tally.request(client, "POST", f"{self.url}/v1/chat/completions",
                                                  "flood: past its limit", (429,), json=chat(SLOW, 1)))
        quiet = self.timed(QUIET, chat(SLOW, 1, "One word?"), "flood: 1-token request", (200,))
        for request in [quiet, *flood]:
            request["thread"].join(GENERATION_LIMIT_S * (2 + queued) + 60)
        answered = [r for r in flood if r.get("response") is not None and r["response"].status_code == 200]
        full = sum(1 for r in answered if r["response"].json()["usage"]["completion_tokens"] == tokens)
        quiet_ok = quiet.get("response") is not None and quiet["response"].status_code == 200
        if len(answered) < 2 or not quiet_ok:
            got = quiet.get("response")
            lines.append(f"flood answers 200: {len(answered)} of {len(flood)}; 1-token request: "
                         f"{got.status_code if got is not None else repr(quiet.get('error'))}")
            self.bounds.append(Bound("flood fairness", False, "requests failed; see the notes"))
            return
        done = sorted(r["done"] for r in answered)
        gaps = sorted(b - a for a, b in zip(done, done[1:], strict=False))
        turn_s = gaps[len(gaps) // 2]  # one flood answer as measured here (the median gap between two)
        latency = quiet["done"] - quiet["started"]
        fcfs = done[-1] - quiet["started"]  # behind the whole flood (and then its own token)
        after = sum(1 for t in done if t > quiet["done"])
        codes = Counter(r.status_code for r in refused)
        retry = sorted({r.headers.get("retry-after", "none") for r in refused})
        lines.append(f"1-token request from {QUIET} while {FLOODER} floods {SLOW}: {latency:.2f} s = "
                     f"{latency / turn_s:.2f} turns of {turn_s:.2f} s (bound {FLOOD_BOUND_TURNS} turns)")
        lines.append(f"first-come-first-served would have made it wait ≈ {fcfs:.2f} s = {fcfs / turn_s:.1f} turns "
                     f"(behind all {len(flood)} flood answers); {after} of them finished after it")
        lines.append(f"flood: {len(flood)} answers of {tokens} tokens (1 running + {queued} queued, "
                     f"{'all in line' if in_line else 'NOT all seen in line'}), {len(answered)} × 200, {full} full "
                     f"length; {len(refused)} past the limit → "
                     f"{', '.join(f'{c}×{n}' for c, n in codes.items())} (Retry-After {', '.join(retry)} s)")
        refusals_ok = all(r.status_code == 429 and r.headers.get("retry-after", "").isdigit() for r in refused)
        self.bounds.append(Bound("flood fairness", latency <= FLOOD_BOUND_TURNS * turn_s and after >= 1
                                 and len(answered) == len(flood) and refusals_ok,
                                 f"{latency / turn_s:.2f} turns ≤ {FLOOD_BOUND_TURNS}; {len(refused)} × 429 past "
                                 f"the limit of {queued} waiting"))

    def slow_headers(self) -> None:
        """Half-sent requests, more than the server's connection cap, held and re-opened for a while:
        `/health` and a comparison must still be answered, and no half-sent connection outlives the deadline."""
        lines = self.hostile["slow-header flood"]
        port = int(self.url.rsplit(":", 1)[1])
        partial = f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: soak-slowloris\r\nX-Wait: ".encode()
        deadline_s = self.args.header_timeout_s
        log_before = self.server.log.stat().st_size
        selector = selectors.DefaultSelector()
        opened: dict[socket.socket, float] = {}
        lifetimes: list[float] = []
        closed_with: Counter = Counter()
        counts = {"attempted": 0, "refused": 0, "peak": 0}

        def open_one() -> None:
            counts["attempted"] += 1
            sock = socket.socket()
            try:
                sock.bind((SLOWLORIS, 0))
                sock.settimeout(2)
                sock.connect(("127.0.0.1", port))
                sock.sendall(partial)
            except OSError:
                counts["refused"] += 1
                sock.close()
                return
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
            opened[sock] = time.monotonic()
            counts["peak"] = max(counts["peak"], len(opened))

        def reap(wait: float) -> None:
            if not opened:
                time.sleep(wait)
                return
            for key, _ in selector.select(wait):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(4096)
                except OSError:
                    data = b""
                closed_with[data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/") else "closed"] += 1
                lifetimes.append(time.monotonic() - opened.pop(sock))
                selector.unregister(sock)
                sock.close()

        health: list[tuple[float, int | str]] = []
        comparisons: list[tuple[float, bool]] = []
        stop = threading.Event()

        def probe() -> None:
            while not stop.is_set():
                started = time.perf_counter()
                try:
                    with from_address(PROBER, timeout=15) as client:
                        status: int | str = self.call("GET", "/health", "health under the flood", (200,),
                                                      client).status_code
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                health.append((time.perf_counter() - started, status))
                stop.wait(0.25)

        def compare() -> None:
            stop.wait(1.0)
            while not stop.is_set():
                started = time.perf_counter()
                try:
                    with from_address(PROBER, timeout=60) as client:
                        body = self.compare([FAST, QWEN], 4, "Under a slow-header flood?", client,
                                            "comparison under the flood")
                    ok = bool(body["outputs"]) and all(o["status"] == "done" for o in body["outputs"])
                except httpx.HTTPError:
                    ok = False
                comparisons.append((time.perf_counter() - started, ok))
                stop.wait(0.5)

        helpers = [threading.Thread(target=probe, daemon=True), threading.Thread(target=compare, daemon=True)]
        started = time.monotonic()
        for _ in range(self.args.slow_conns):  # the first wave, all at once
            open_one()
        first_wave = set(opened)
        for thread in helpers:
            thread.start()
        while time.monotonic() - started < self.args.slow_s:  # re-opened as they close, at a bounded rate
            reap(0.05)
            allowed = int(self.args.slow_rate * (time.monotonic() - started)) + self.args.slow_conns
            for _ in range(min(self.args.slow_conns - len(opened), allowed - counts["attempted"])):
                open_one()
        stop.set()
        wave_left = 0
        end = time.monotonic() + deadline_s + 1.5
        while opened and time.monotonic() < end:  # the last ones get their deadline and a margin
            reap(0.1)
            wave_left = len(first_wave & set(opened))
        overdue = [age for age in (time.monotonic() - t for t in opened.values()) if age > deadline_s + 1]
        for sock in list(opened):
            selector.unregister(sock)
            sock.close()
        for thread in helpers:
            thread.join(90)
        time.sleep(0.5)
        growth = self.server.log.stat().st_size - log_before
        latencies = [s for s, _ in health]
        statuses = Counter(status for _, status in health)
        done = sum(1 for _, ok in comparisons if ok)
        lines.append(f"{counts['attempted']} half-sent connections opened over {self.args.slow_s:g} s (first wave "
                     f"{self.args.slow_conns}, then re-opened up to {self.args.slow_rate}/s) against a cap of "
                     f"{self.args.max_connections}, header deadline {deadline_s:g} s; {counts['refused']} refused at "
                     f"connect; at most {counts['peak']} open at once (client side)")
        lines.append(f"closed by the server: {', '.join(f'{k}×{v}' for k, v in closed_with.most_common())}; "
                     f"longest held {max(lifetimes, default=0):.2f} s; still open {deadline_s + 1:g} s past the "
                     f"deadline: {len(overdue)} (first wave: {wave_left})")
        lines.append(f"/health under the flood: {len(health)} probes, "
                     f"{', '.join(f'{k}×{v}' for k, v in statuses.items())}; "
                     f"p50 {percentile(latencies, 50) * 1000:.0f} ms, p95 {percentile(latencies, 95) * 1000:.0f} ms, "
                     f"max {max(latencies, default=0) * 1000:.0f} ms")
        lines.append(f"comparisons under the flood: {done} of {len(comparisons)} done "
                     f"(p50 {percentile([s for s, _ in comparisons], 50):.2f} s); server log grew {growth:,} bytes")
        self.bounds.append(Bound("slow-header flood", statuses == Counter({200: len(health)}) and len(health) > 0
                                 and done >= 1 and done == len(comparisons) and not overdue
                                 and growth <= LOG_GROWTH_BOUND,
                                 f"/health {len(health)}×200 needed, max {max(latencies, default=0):.2f} s; "
                                 f"{done}/{len(comparisons)} comparisons done; {len(overdue)} overdue; log "
                                 f"+{growth:,} B ≤ {LOG_GROWTH_BOUND:,}"))

    def image_bomb(self) -> None:
        """Eight single-colour 6320×6320 PNGs (about 1 MB) refused by total pixels; two of them answered, with
        the worker's peak RSS sampled meanwhile."""
        import psutil

        lines = self.hostile["image bomb"]
        side = self.args.bomb_side
        data = bomb_png(side)
        eight = [(f"bomb{i}.png", data) for i in range(8)]
        for category, method, path, kwargs in (
                ("image bomb: 8 single-colour PNGs (API)", "POST", "/api/comparisons",
                 form("What colour?", [FAST], 2, eight)),
                ("image bomb: 8 single-colour PNGs (gateway)", "POST", "/v1/chat/completions",
                 {"json": chat(FAST, 2, "What colour?", [data] * 8)})):
            response = self.call(method, path, f"bad input: {category}", (413,), **kwargs)
            self.bad[category][response.status_code] += 1
            self.expected[category] = (413,)
            lines.append(f"{category}: {8 * len(data) / MB:.2f} MB on the wire → {response.status_code} "
                         f"{message_of(response)[:100]!r}")
        self.compare([FAST], 2, "warm before the bomb")
        pid = self.pids()[FAST]
        worker, server = psutil.Process(pid), psutil.Process(self.server.process.pid)  # type: ignore[union-attr]
        base = {"worker": worker.memory_info().rss, "server": server.memory_info().rss}
        peak = dict(base)
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                with contextlib.suppress(psutil.Error):
                    peak["worker"] = max(peak["worker"], worker.memory_info().rss)
                    peak["server"] = max(peak["server"], server.memory_info().rss)
                time.sleep(0.01)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            response = self.call("POST", "/api/comparisons", "image bomb: 2 images within limits", (201,),
                                 **form("What colour?", [FAST], 2, eight[:2]))
        finally:
            stop.set()
            sampler.join()
        output = response.json()["outputs"][0] if response.status_code == 201 else {"status": response.status_code}
        time.sleep(1.0)
        with contextlib.suppress(psutil.Error):
            base["server after"] = server.memory_info().rss
        resident: dict[str, Any] = next((r for r in self.pool()["resident"] if r["model"] == FAST), {})
        planned = resident.get("planned_gb") or 0.0
        decoded_mb = 2 * 3 * side * side / MB
        growth_mb = (peak["worker"] - base["worker"]) / MB
        kept_mb = (base.get("server after", peak["server"]) - base["server"]) / MB  # the web server's own decode
        lines.append(f"2 of them ({2 * side * side / 1e6:.1f} MP, decoded {decoded_mb:.0f} MB): "
                     f"{response.status_code}, answer {output.get('status')}; "
                     f"{str(output.get('image_note') or '')[:120]!r}")
        lines.append(f"{FAST} worker (pid {pid}) peak RSS growth {growth_mb:.1f} MB = {growth_mb / decoded_mb:.1%} of "
                     f"the decoded images, {growth_mb / 1024 / planned:.1%} of its planned {planned} GB "
                     f"(RSS {base['worker'] / MB:.0f} → peak {peak['worker'] / MB:.0f} MB; measured_gb "
                     f"{resident.get('measured_gb')}); server peak RSS growth "
                     f"{(peak['server'] - base['server']) / MB:.0f} MB, "
                     f"{kept_mb:.0f} MB kept 1 s later" + ("  <-- kept, not planned by the pool"
                                                             if kept_mb > decoded_mb else "")
                     if planned else f"{FAST} not resident after the request")
        self.bounds.append(Bound("image bomb", self.bad["image bomb: 8 single-colour PNGs (API)"] == Counter({413: 1})
                                 and output.get("status") == "done" and bool(planned)
                                 and growth_mb < min(decoded_mb / 4, planned * 1024),
                                 f"8 → 413, 2 → {output.get('status')}; worker +{growth_mb:.1f} MB < "
                                 f"min(¼ of {decoded_mb:.0f} MB decoded, planned {planned} GB)"))

    def schema_fuzz(self) -> None:
        """Schemathesis against the live `/openapi.json`: every operation, positive and negative, with the
        server-error and response-conformance checks; failures counted per check."""
        import schemathesis
        from hypothesis.errors import Unsatisfiable
        from schemathesis import GenerationMode
        from schemathesis.core.result import Err

        schema = schemathesis.openapi.from_url(f"{self.url}/openapi.json")
        self.schema = {"calls": Counter(), "failures": defaultdict(Counter), "examples": {}, "errors": []}
        started = time.monotonic()
        for result in schema.get_all_operations():
            if isinstance(result, Err):  # an operation the document does not describe well enough to call
                self.schema["errors"].append(f"unreadable operation: {str(result.err())[:160]}")
                continue
            operation = result.ok()
            label = f"{operation.method.upper()} {operation.path}"
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                try:
                    self._fuzz(operation.as_strategy(generation_mode=mode), label)
                except Unsatisfiable:  # nothing to break: an operation with no parameters has no negative cases
                    pass
                except Exception as exc:  # a broken operation is reported, the others still run
                    self.schema["errors"].append(f"{label} ({mode.value}): {type(exc).__name__}: {str(exc)[:120]}")
        self.schema["wall_s"] = time.monotonic() - started
        failing = sum(sum(c.values()) for c in self.schema["failures"].values())
        self.bounds.append(Bound("schemathesis", not failing and not self.schema["errors"]
                                 and len(self.schema["calls"]) >= 10,
                                 f"{failing} failing checks over {sum(self.schema['calls'].values())} requests"))

    def _fuzz(self, strategy: Any, label: str) -> None:
        from hypothesis import HealthCheck, Phase, given, settings
        from schemathesis.checks import not_a_server_error
        from schemathesis.core.failures import Failure, FailureGroup
        from schemathesis.specs.openapi.checks import (
            content_type_conformance,
            response_schema_conformance,
            status_code_conformance,
        )

        checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

        @settings(max_examples=self.args.schema_examples, deadline=None, database=None, derandomize=True,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def exercise(case: Any) -> None:
            response = case.call(base_url=self.url, timeout=60)
            self.schema["calls"][label] += 1
            if response.status_code >= 500:
                self.tally.five_xx.append(f"schemathesis: {label} → {response.status_code}")
            for check in checks:
                try:
                    case.validate_response(response, checks=[check])
                except (Failure, FailureGroup) as exc:
                    for failure in exc.exceptions if isinstance(exc, FailureGroup) else [exc]:
                        key = f"{label}: {failure.title} ({response.status_code})"
                        self.schema["failures"][check.__name__][key] += 1
                        self.schema["examples"].setdefault(check.__name__, f"{key}: {failure.message[:160]!r}")

        exercise()

    # --- 3. faults --------------------------------------------------------------------------------------

    def fault_worker_kill(self) -> None:
        thread, holder, comparison_id = self.in_background([SLOW, FAST], 2000)
        if not self.wait(lambda: self.generating(comparison_id, [SLOW]), 60):
            return self.fault("worker SIGKILL mid-answer", False, "never saw it generate")
        time.sleep(1.0)
        victim = self.pids()[SLOW]
        os.kill(victim, signal.SIGKILL)
        thread.join(120)
        outs = self.outputs(comparison_id)
        again = self.compare([SLOW], 4, "after the kill")
        replaced = self.pids().get(SLOW)
        survived = (outs[SLOW]["status"] == "error" and outs[FAST]["status"] == "done"
                    and again["outputs"] and again["outputs"][0]["status"] == "done" and replaced not in (None, victim)
                    and not self.alive(victim) and self.accounting_ok())
        other = outs[FAST]["status"] + (f" ({outs[FAST]['error']!r})" if outs[FAST]["error"] else "")
        self.fault("worker SIGKILL mid-answer", survived, f"panel: {outs[SLOW]['error']!r}; other panel {other}; "
                   f"replaced by pid {replaced}")

    def fault_oom_and_hang(self) -> None:
        before = self.pids()
        started = time.monotonic()
        body = self.compare([FAST, OOM, HANG], 32, "Describe the image.")
        took = time.monotonic() - started
        outs = {o["model"]: o for o in body["outputs"]}
        oom_ok = outs.get(OOM, {}).get("status") == "error" and "out of memory" in (outs[OOM]["error"] or "").lower()
        self.fault("out of memory (stand-in)", oom_ok and outs[FAST]["status"] == "done",
                   f"panel: {outs.get(OOM, {}).get('error')!r}")
        hang_ok = outs.get(HANG, {}).get("status") == "error" and "time limit" in (outs[HANG]["error"] or "")
        old = before.get(HANG)
        gone = self.wait(lambda: old is None or not self.alive(old), 20)
        again = self.compare([HANG, OOM], 4, f"{NO_FAULT} and now?")
        new = self.pids().get(HANG)
        recovered = bool(again["outputs"]) and all(o["status"] == "done" for o in again["outputs"])
        self.fault(f"hang past the {GENERATION_LIMIT_S} s limit", hang_ok and bool(gone) and recovered
                   and new not in (None, old) and self.accounting_ok(),
                   f"panel after {took:.1f} s: {outs.get(HANG, {}).get('error')!r}; pid {old} → {new}")

    def fault_disconnects(self) -> None:
        self.compare([SLOW, TWIN], 2, "warm")
        # the browser: the page's form, its event stream left after the first text
        response = self.call("POST", "/compare", "page compare", (303,),
                             **form("Describe it in detail.", [SLOW, TWIN], 2000), follow_redirects=False)
        detail = "no page route"
        survived = False
        if response.status_code == 303:
            comparison_id = int(response.headers["location"].rstrip("/").rsplit("/", 1)[1])
            with self.client.stream("GET", f"{self.url}/comparisons/{comparison_id}/events", timeout=60) as events:
                self.tally.sent += 1
                self.tally.probes += 1
                event = ""
                for line in events.iter_lines():
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:") and event.startswith("text-") and '"append"' in line:
                        break
            left = time.monotonic()

            def ended() -> dict[str, dict[str, Any]] | None:
                current = self.outputs(comparison_id)
                return current if all(o["status"] == "interrupted" for o in current.values()) else None

            outs = self.wait(ended, 15)
            after = time.monotonic() - left
            survived = bool(outs) and all("browser went away" in o["error"] for o in outs.values()) \
                and self.accounting_ok()
            detail = f"interrupted {after:.1f} s after the page left: {next(iter(outs.values()))['error']!r}" \
                if outs else "not interrupted"
        self.fault("browser went away (SSE closed)", survived, detail)
        # a script: the JSON API's client gives up waiting
        before = self.latest_id()
        self.tally.sent += 1
        self.tally.probes += 1
        with contextlib.suppress(httpx.ReadTimeout):
            httpx.post(f"{self.url}/api/comparisons", timeout=httpx.Timeout(10, read=3), trust_env=False,
                       **form("Describe it in detail.", [SLOW, TWIN], 2000))
        comparison_id = self.wait(lambda: self.latest_id() > before and self.latest_id(), 10) or 0

        def interrupted() -> dict[str, dict[str, Any]] | None:
            current = self.outputs(comparison_id)
            return current if all(o["status"] == "interrupted" for o in current.values()) else None

        outs = self.wait(interrupted, 15)
        self.fault("API client went away", bool(outs) and all("client went away" in o["error"] for o in outs.values())
                   and self.accounting_ok(), f"{next(iter(outs.values()))['error']!r}" if outs else "not interrupted")

    def fault_sigterm(self) -> None:
        self.compare([SLOW, TWIN], 2, "warm")
        thread, holder, comparison_id = self.in_background([SLOW, TWIN], 2000)
        self.wait(lambda: self.generating(comparison_id, [SLOW, TWIN]), 60)
        workers = list(self.pids().values())
        assert self.server.process is not None
        sent = time.monotonic()
        self.server.process.send_signal(signal.SIGTERM)
        self.server.process.wait(60)
        took = time.monotonic() - sent
        thread.join(30)
        orphans = self.wait(lambda: not any(self.alive(pid) for pid in workers), 15) is None
        restart = self.server.start()
        outs = self.outputs(comparison_id)
        statuses = sorted(o["status"] for o in outs.values())
        waiting = holder.get("response")
        client_saw = waiting.status_code if waiting is not None else type(holder.get("error")).__name__
        complete = self.all_complete()
        answered = waiting is None or waiting.status_code < 500  # the waiting client got its answers, not a 5xx
        survived = took < 12 and not orphans and set(statuses) <= {"done", "interrupted"} and complete and answered
        self.fault("server SIGTERM mid-answer", survived,
                   f"exited in {took:.1f} s; answers {statuses}; waiting client got {client_saw}; "
                   f"workers left: {'some' if orphans else 'none'}; restart {restart:.1f} s")

    def fault_sigkill(self) -> None:
        self.compare([SLOW, TWIN], 2, "warm")
        done = self.compare([FAST], 2, "to rate before the crash")
        thread, holder, comparison_id = self.in_background([SLOW, TWIN], 2000)
        self.wait(lambda: self.generating(comparison_id, [SLOW, TWIN]), 60)
        workers = list(self.pids().values())
        written = 0
        for output in done["outputs"]:
            for index in range(10):  # acknowledged while two answers generate
                written += self.rate(output["id"], f"crash-rater-{index}", 1 + index % 5, f"acknowledged #{index} ✓")
        assert self.server.process is not None
        self.server.process.send_signal(signal.SIGKILL)
        self.server.process.wait(30)
        thread.join(30)
        gone = self.wait(lambda: not any(self.alive(pid) for pid in workers), 5)
        with sqlite3.connect(self.server.data_dir / "playground.db") as db:
            integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
        restart = self.server.start()
        outs = self.outputs(comparison_id)
        missing = self.audit()
        survived = bool(gone) and integrity == "ok" and missing == 0 and \
            {o["status"] for o in outs.values()} == {"interrupted"} and self.all_complete()
        self.fault("server kill -9 mid-answer", survived,
                   f"{written} ratings acknowledged just before; integrity_check {integrity}; workers "
                   f"{'gone within 5 s' if gone else 'LEFT BEHIND'}; answers after restart "
                   f"{sorted(o['status'] for o in outs.values())}; restart {restart:.1f} s")

    def every_comparison(self) -> list[dict[str, Any]]:
        """The whole history, page by page."""
        items: list[dict[str, Any]] = []
        while True:
            page = self.call("GET", f"/api/comparisons?limit=500&offset={len(items)}", "read").json()
            items += page["items"]
            if not page["items"] or len(items) >= page["total"]:
                return items

    def all_complete(self) -> bool:
        """Every comparison has all its outputs, none queued, loading or generating."""
        for item in self.every_comparison():
            if len(item["outputs"]) != len(item["models"]) or not item["outputs"]:
                return False
            if any(o["status"] not in ("done", "error", "interrupted") for o in item["outputs"]):
                return False
        return True

    # --- 4. audit ---------------------------------------------------------------------------------------

    def audit(self) -> int:
        """Acknowledged ratings missing or different when read back (from every comparison that has any)."""
        stored: dict[tuple[int, str], tuple[int, str]] = {}
        for item in self.every_comparison():
            if not item["ratings"]["count"]:
                continue
            body = self.call("GET", f"/api/comparisons/{item['id']}", "read").json()
            stored.update({(o["id"], r["rater"]): (r["score"], r["note"]) for o in body["outputs"]
                           for r in o["ratings"]})
        self.read_back = sum(1 for key, value in self.acknowledged.items() if stored.get(key) == value)
        return len(self.acknowledged) - self.read_back

    # --- running and reporting ----------------------------------------------------------------------------

    def run(self) -> int:
        started = time.monotonic()
        self.start_s = self.server.start()
        steps: list[tuple[str, Callable[[], None]]] = [
            ("load", self.load), ("bad input", self.bad_inputs), ("token cookie", self.token_cookie),
            ("flood fairness", self.flood_fairness), ("image bomb", self.image_bomb),
            ("slow-header flood", self.slow_headers), ("worker kill", self.fault_worker_kill),
            ("oom and hang", self.fault_oom_and_hang), ("disconnects", self.fault_disconnects),
            ("sigterm", self.fault_sigterm), ("sigkill", self.fault_sigkill)]
        try:
            for name, step in steps:
                self.step(name, step)
            lost = self.audit()
            self.step("schemathesis", self.schema_fuzz)  # last: it writes what it likes, after the audit
            log = self.server.log.read_text(errors="replace")
        finally:
            self.server.stop()
        return self.report(time.monotonic() - started, lost, log)

    def step(self, name: str, step: Callable[[], None]) -> None:
        """Run one phase; a broken one is reported (never hidden) and the server restarted if it is down."""
        step_started = time.monotonic()
        try:
            step()
        except Exception as exc:
            self.notes.append(f"step '{name}' failed: {type(exc).__name__}: {exc}")
            if name in ("flood fairness", "image bomb", "slow-header flood", "schemathesis") and \
                    not any(bound.name == name for bound in self.bounds):
                self.bounds.append(Bound(name, False, f"the step failed: {type(exc).__name__}"))
            if self.server.process is None or self.server.process.poll() is not None:
                self.server.start()
        print(f"  … {name}: {time.monotonic() - step_started:.1f} s", file=sys.stderr, flush=True)

    def report(self, wall_s: float, lost: int, log: str) -> int:
        tally = self.tally
        out = print
        out("=" * 78)
        out("VLM Playground soak report (bench/soak.py)")
        out(f"machine: {os.cpu_count()} CPUs; tiny random-weight models; wall time {wall_s:.0f} s; "
            f"server start {self.start_s:.1f} s")
        out("-" * 78)
        out(f"requests sent            {tally.sent}")
        out(f"peak concurrency held    {tally.peak} requests in flight at once "
            f"({self.args.clients} comparing clients, each from its own address, + {self.args.raters} raters)")
        judged = tally.sent - tally.probes
        out(f"success rate             {tally.ok / max(1, judged):.2%} of requests got the status expected "
            f"({tally.ok} of {judged}; {tally.probes} cut off on purpose not counted)")
        comparisons = tally.latencies.get("comparison", [])
        out(f"comparisons under load   {len(comparisons)} in {self.load_s:.0f} s (2 models each, 8 tokens), "
            f"p50 {percentile(comparisons, 50):.2f} s, p95 {percentile(comparisons, 95):.2f} s; "
            f"{len(self.load_problems)} outputs not done")
        ratings = self.rating_latency
        out(f"rating writes            {len(ratings)} by {self.args.raters} concurrent raters "
            f"(new and replaced, during the load): p50 {percentile(ratings, 50) * 1000:.0f} ms, "
            f"p95 {percentile(ratings, 95) * 1000:.0f} ms, max {max(ratings, default=0) * 1000:.0f} ms")
        out(f"ratings written/read     {len(self.acknowledged)} acknowledged, {self.read_back} read back exactly "
            f"after a SIGTERM restart and a kill -9 restart; lost {lost}")
        out(f"'database is locked'     {log.count('database is locked')} in the server log")
        out("-" * 78)
        out(f"bad inputs tried         {sum(sum(c.values()) for c in self.bad.values())} in {len(self.bad)} "
            f"categories; comparisons stored by them: {self.bad_stored}")
        for category, codes in self.bad.items():
            shown = ", ".join(f"{code}×{count}" if count > 1 else str(code) for code, count in codes.items())
            flag = "   <-- 5xx" if any(isinstance(c, int) and c >= 500 for c in codes) else ""
            if not flag and any(code not in self.expected.get(category, ()) for code in codes):
                flag = f"   <-- expected {' or '.join(map(str, self.expected.get(category, ())))}"
            out(f"  {category:<44} {shown}{flag}")
        out(f"5xx responses            {len(tally.five_xx)}")
        for line in tally.five_xx[:12]:
            out(f"  {line}")
        out("-" * 78)
        out("hostile load (issue 12)")
        for phase, lines in self.hostile.items():
            out(f"  {phase}")
            for line in lines:
                out(f"    {line}")
        self.report_schema(out)
        for bound in self.bounds:
            out(f"  [{'held  ' if bound.held else 'FAILED'}] {bound.name}: {bound.detail}")
        out("-" * 78)
        survived = sum(1 for _, ok, _ in self.faults if ok)
        out(f"faults injected          {len(self.faults)}, survived {survived}")
        for name, ok, detail in self.faults:
            out(f"  [{'survived' if ok else 'FAILED  '}] {name}: {detail}")
        other = [line for line in tally.unexpected if not line.startswith("bad input")]
        if other or self.notes or self.load_problems:
            out("-" * 78)
            out("notes")
            for line in self.notes + other[:10] + self.load_problems[:5]:
                out(f"  {line}")
        out("=" * 78)
        held = sum(1 for bound in self.bounds if bound.held)
        clean = lost == 0 and not tally.five_xx and survived == len(self.faults) and len(self.faults) >= 7 \
            and held == len(self.bounds) >= 4
        out(f"verdict                  {'PASS' if clean else 'FAIL'} (lost ratings {lost}, 5xx {len(tally.five_xx)}, "
            f"faults survived {survived}/{len(self.faults)}, issue-12 bounds held {held}/{len(self.bounds)})")
        return 0 if clean else 1

    def report_schema(self, out: Callable[..., None]) -> None:
        """Schemathesis: requests per operation, then failures per check (each distinct failure with its count)."""
        if not self.schema:
            return
        calls: Counter = self.schema["calls"]
        out(f"  schemathesis ({self.schema['wall_s']:.0f} s): {sum(calls.values())} requests over {len(calls)} "
            f"operations, {self.args.schema_examples} examples an operation and mode (positive, negative)")
        for name in ("not_a_server_error", "status_code_conformance", "content_type_conformance",
                     "response_schema_conformance"):
            failures: Counter = self.schema["failures"].get(name, Counter())
            operations = {key.split(":", 1)[0] for key in failures}
            out(f"    {name:<28} {sum(failures.values())} failing responses"
                + (f" in {len(operations)} operations" if failures else ""))
            for key, count in failures.most_common(8):
                out(f"      {count:>4} × {key}")
            if len(failures) > 8:
                out(f"      … and {len(failures) - 8} more kinds")
        for line in self.schema["errors"]:
            out(f"    error: {line}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny-dir", type=Path, default=Path(os.environ["VLM_TINY_DIR"])
                        if os.environ.get("VLM_TINY_DIR") else None)
    parser.add_argument("--load-s", type=float, default=20.0, help="seconds of comparison load")
    parser.add_argument("--clients", type=int, default=6, help="threads comparing in a loop during the load")
    parser.add_argument("--raters", type=int, default=16)
    parser.add_argument("--writes", type=int, default=20, help="ratings each rater writes")
    parser.add_argument("--max-queued", type=int, default=4, help="VLM_MAX_QUEUED_PER_CLIENT: the flood's size")
    parser.add_argument("--turn-s", type=float, default=2.0, help="seconds one flood answer lasts on tiny-slow")
    parser.add_argument("--flood-extra", type=int, default=2, help="flood requests past the limit (each a 429)")
    parser.add_argument("--max-connections", type=int, default=64, help="VLM_MAX_CONNECTIONS of the soak server")
    parser.add_argument("--header-timeout-s", type=float, default=2.0, help="VLM_HEADER_TIMEOUT_S of the server")
    parser.add_argument("--slow-conns", type=int, default=300, help="half-sent connections held at once")
    parser.add_argument("--slow-s", type=float, default=8.0, help="seconds the slow-header flood lasts")
    parser.add_argument("--slow-rate", type=int, default=100, help="half-sent connections re-opened a second")
    parser.add_argument("--bomb-side", type=int, default=6320, help="side of the image bomb's single-colour PNGs")
    parser.add_argument("--schema-examples", type=int, default=20, help="schemathesis examples an operation and mode")
    parser.add_argument("--keep", action="store_true", help="keep the data directory and logs")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="vlm-soak-"))
    if args.tiny_dir is None:
        args.tiny_dir = work / "tiny"
    from app.tiny.checkpoints import build_tiny_models

    build_tiny_models(args.tiny_dir)
    try:
        return Soak(args, work).run()
    finally:
        if not args.keep:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
