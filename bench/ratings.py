"""What a rating costs: the app's write path against plain sqlite3, and 16 raters over real HTTP.

    python bench/ratings.py [--calls N] [--repeats M] [--raters R] [--per-rater K]

Builds 50 comparisons of 4 finished outputs in a fresh SQLite file through the app's storage functions,
then measures, in one run:

  (a) one writer: `app.storage.ratings.rate` against plain sqlite3 doing the same insert-or-update
      (`BEGIN IMMEDIATE`, one `INSERT ... ON CONFLICT(output_id, rater) DO UPDATE`, `COMMIT`) with the
      pragmas the app's engine sets (WAL, the same `synchronous` level, foreign keys, busy timeout), on
      the same file; N calls per side per round, M rounds interleaved, median ratings/s and the ratio;
  (b) R threads at once (default 16), the same two sides: ratings/s of all threads together;
  (c) R raters over HTTP against `python -m app.cli serve` on a free loopback port and that same file:
      each rater its own `httpx.AsyncClient`, K ratings each, one after another, through the page's
      rating form (`POST /outputs/{id}/rating` as htmx sends it, answered with the form fragment) and
      then through the JSON API (`POST /api/outputs/{id}/rating`); ratings/s, p50/p95 latency and the
      server's CPU time per rating (which a machine busy with other work disturbs less than the rest).
      Afterwards every rater's latest score for every output it rated is read back from the file.

Calls alternate between new ratings and replacements of the rater's earlier ones. Runs in about a
minute on 2 cores; absolute figures vary from machine to machine, the ratios less so.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil
from sqlalchemy import Engine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.storage import comparisons, outputs, ratings  # noqa: E402
from app.storage.comparisons import OutputInput, StoredImageInput  # noqa: E402
from app.storage.db import init_db, make_engine  # noqa: E402

PARAMS = {"max_new_tokens": 64, "temperature": 0.0, "top_p": 1.0, "seed": 0}
UPSERT = """INSERT INTO ratings (output_id, score, note, rater, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (output_id, rater) DO UPDATE SET score = excluded.score, note = excluded.note,
                                            updated_at = excluded.updated_at"""
SYNC_NAMES = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


def build(engine: Engine, data_dir: Path, comparisons_n: int = 50, per_comparison: int = 4) -> list[int]:
    """`comparisons_n` comparisons of `per_comparison` finished outputs, one image each; their output ids."""
    output_ids: list[int] = []
    for c in range(comparisons_n):
        image = StoredImageInput(f"photo-{c}.jpg", f"image {c}".encode(), "JPEG", 64, 48)
        answers = [OutputInput(f"model-{m}", f"org/model-{m}", "main") for m in range(per_comparison)]
        created = comparisons.create_comparison(engine, data_dir, f"Describe picture {c}.", PARAMS, "", False,
                                                [image], answers)
        for output_id in created.output_ids:
            outputs.finish_output(engine, output_id, text="A picture. " * 20, ttft_s=0.2, total_s=1.0, tokens=30)
        output_ids.extend(created.output_ids)
    return output_ids


def app_synchronous(engine: Engine) -> int:
    """The `synchronous` level the app's connections run with."""
    with engine.connect() as connection:
        return int(connection.exec_driver_sql("PRAGMA synchronous").scalar() or 0)


def plain_connection(database: Path, synchronous: int) -> sqlite3.Connection:
    """sqlite3 with the app's pragmas, transactions under our control."""
    connection = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA busy_timeout = 30000")
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute(f"PRAGMA synchronous = {synchronous}")
    connection.execute("PRAGMA foreign_keys = ON")
    return connection


def plain_rate(connection: sqlite3.Connection, output_id: int, score: int, note: str, rater: str) -> None:
    now = datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ")
    connection.execute("BEGIN IMMEDIATE")
    try:
        connection.execute(UPSERT, (output_id, score, note, rater, now, now))
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise


def plan(output_ids: list[int], side: str, start: int, count: int) -> list[tuple[int, int, str, str]]:
    """`count` calls (output, score, note, rater): each output twice in a row per rater name, so every
    other call replaces the rating the one before made."""
    calls = []
    for j in range(start, start + count):
        pair = j // 2
        output_id = output_ids[pair % len(output_ids)]
        calls.append((output_id, 1 + j % 5, f"note {j}", f"{side}-{pair // len(output_ids)}"))
    return calls


def one_writer(engine: Engine, database: Path, output_ids: list[int], synchronous: int, calls: int,
               repeats: int) -> tuple[float, float]:
    """Median ratings/s of `rate` and of plain sqlite3, one call after another."""
    connection = plain_connection(database, synchronous)
    sides: dict[str, Callable[[int, int, str, str], object]] = {
        "ours": lambda *call: ratings.rate(engine, *call),
        "plain": lambda *call: plain_rate(connection, *call),
    }
    rates: dict[str, list[float]] = {"ours": [], "plain": []}
    for round_ in range(repeats):
        for side, call in sides.items():
            todo = plan(output_ids, f"serial-{side}", round_ * calls, calls)
            started = time.perf_counter()
            for args in todo:
                call(*args)
            rates[side].append(calls / (time.perf_counter() - started))
    connection.close()
    return statistics.median(rates["ours"]), statistics.median(rates["plain"])


def at_once(threads: int, work: Callable[[int], None]) -> float:
    """Seconds for `threads` threads to run `work(index)` each, started together."""
    barrier = threading.Barrier(threads + 1)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        barrier.wait()
        try:
            work(index)
        except BaseException as exc:  # noqa: BLE001 - raised below
            errors.append(exc)

    workers = [threading.Thread(target=run, args=(index,)) for index in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()
    started = time.perf_counter()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return elapsed


def many_writers(engine: Engine, database: Path, output_ids: list[int], synchronous: int, threads: int,
                 calls: int) -> tuple[float, float]:
    """Ratings/s of `threads` threads at once, `calls` each: `rate`, then plain sqlite3 (a connection each)."""

    def ours(index: int) -> None:
        for args in plan(output_ids, f"threads-ours-{index}", 0, calls):
            ratings.rate(engine, *args)

    connections = [plain_connection(database, synchronous) for _ in range(threads)]

    def plain(index: int) -> None:
        for args in plan(output_ids, f"threads-plain-{index}", 0, calls):
            plain_rate(connections[index], *args)

    ours_s, plain_s = at_once(threads, ours), at_once(threads, plain)
    for connection in connections:
        connection.close()
    return threads * calls / ours_s, threads * calls / plain_s


# ---------------------------------------------------------------- over HTTP


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(data_dir: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """`python -m app.cli serve` on the bench's data directory (SQLite, no token, no accounts)."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("VLM_") and key != "DATABASE_URL"}
    command = [sys.executable, "-m", "app.cli", "serve", "--models", str(ROOT / "models.yaml"), "--data-dir",
               str(data_dir), "--port", str(port), "--budget-gb", "1"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError("server not ready in 90 s")


async def http_raters(url: str, route: str, output_ids: list[int], raters: int, per_rater: int
                      ) -> tuple[float, list[float], dict[tuple[int, str], int]]:
    """`raters` clients rating at once, `per_rater` each: ratings/s, latencies, each (output, rater)'s last score."""
    latencies: list[float] = []
    last: dict[tuple[int, str], int] = {}

    async def rater(index: int, client: httpx.AsyncClient) -> None:
        for output_id, score, note, name in plan(output_ids, f"http-{route}-{index}", 0, per_rater):
            started = time.perf_counter()
            if route == "page":
                response = await client.post(f"/outputs/{output_id}/rating", headers={"HX-Request": "true"},
                                             data={"score": str(score), "note": note, "rater": name})
                ok = response.status_code == 200 and "saved" in response.text
            else:
                response = await client.post(f"/api/outputs/{output_id}/rating",
                                             json={"score": score, "note": note, "rater": name})
                ok = response.status_code in (200, 201)
            if not ok:
                raise RuntimeError(f"{route} rating answered {response.status_code}: {response.text[:300]}")
            latencies.append(time.perf_counter() - started)
            last[(output_id, name)] = score

    clients = [httpx.AsyncClient(base_url=url, timeout=60) for _ in range(raters)]
    try:
        for client in clients:  # connections open before the clock starts
            await client.get("/health")
        started = time.perf_counter()
        await asyncio.gather(*(rater(index, client) for index, client in enumerate(clients)))
        elapsed = time.perf_counter() - started
    finally:
        for client in clients:
            await client.aclose()
    return raters * per_rater / elapsed, latencies, last


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def read_back(database: Path, expected: dict[tuple[int, str], int]) -> int:
    """How many of the expected (output, rater) → score pairs are not in the file as expected."""
    connection = sqlite3.connect(database)
    try:
        stored = {(output_id, rater): score for output_id, rater, score in
                  connection.execute("SELECT output_id, rater, score FROM ratings")}
    finally:
        connection.close()
    return sum(1 for key, score in expected.items() if stored.get(key) != score)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000, help="calls per side per round, one writer")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--raters", type=int, default=16)
    parser.add_argument("--per-rater", type=int, default=150, help="ratings each HTTP rater sends per route")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        data_dir = Path(scratch) / "data"
        database = data_dir / "playground.db"
        engine = make_engine(f"sqlite:///{database}", data_dir)
        init_db(engine)
        output_ids = build(engine, data_dir)
        synchronous = app_synchronous(engine)
        print(f"{len(output_ids)} outputs in a fresh SQLite file; the app's connections: WAL, "
              f"synchronous={SYNC_NAMES.get(synchronous, synchronous)}")

        ours, plain = one_writer(engine, database, output_ids, synchronous, args.calls, args.repeats)
        print(f"one writer:   rate {ours:,.0f}/s, plain sqlite3 {plain:,.0f}/s, ours / plain {ours / plain:.2f} "
              f"(median of {args.repeats} interleaved rounds of {args.calls:,})")
        per_thread = max(1, args.calls // args.raters)
        ours, plain = many_writers(engine, database, output_ids, synchronous, args.raters, per_thread)
        print(f"{args.raters} threads:   rate {ours:,.0f}/s, plain sqlite3 {plain:,.0f}/s, ours / plain "
              f"{ours / plain:.2f} ({per_thread} each)")
        engine.dispose()

        process, url = start_server(data_dir, Path(scratch) / "server.log")
        server = psutil.Process(process.pid)
        try:
            expected: dict[tuple[int, str], int] = {}
            for route in ("page", "api"):
                cpu_before = sum(server.cpu_times()[:2])
                per_s, latencies, last = asyncio.run(http_raters(url, route, output_ids, args.raters, args.per_rater))
                cpu_ms = (sum(server.cpu_times()[:2]) - cpu_before) * 1000 / len(latencies)
                expected.update(last)
                print(f"{args.raters} HTTP raters, {route + ' route:':12} {per_s:,.0f} ratings/s, "
                      f"p50 {percentile(latencies, 50) * 1000:.0f} ms, p95 {percentile(latencies, 95) * 1000:.0f} ms, "
                      f"server CPU {cpu_ms:.2f} ms per rating ({len(latencies):,} ratings)")
        finally:
            process.terminate()
            process.wait(30)
        wrong = read_back(database, expected)
        print(f"read back: {len(expected) - wrong:,} of {len(expected):,} (output, rater) latest scores as sent")
        if wrong:
            raise SystemExit(f"{wrong} ratings lost or wrong")


if __name__ == "__main__":
    main()
