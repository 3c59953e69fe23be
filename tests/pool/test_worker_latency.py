"""A REAL worker answers requests on a kept-alive connection without the 40 ms Nagle/delayed-ACK stall
(its socket must ask for TCP_NODELAY: every pool call — load, unload, park, each answer — paid it)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import httpx

from app.pool.launcher import ProcessLauncher


async def test_kept_alive_requests_to_a_worker_answer_in_milliseconds(tmp_path: Path):
    launcher = ProcessLauncher(tmp_path / "logs", load_timeout_s=300)
    try:
        await launcher.prepare("default")
        spare = launcher._spares["default"]
        port, _ = spare.prepared.result()
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {spare.token}"}, trust_env=False) as client:
            times = []
            for _ in range(12):  # one connection, kept alive: the stall hit every request after the first
                started = time.perf_counter()
                response = await client.get(f"http://127.0.0.1:{port}/memory")
                times.append(time.perf_counter() - started)
                assert response.status_code == 200
        assert statistics.median(times[1:]) < 0.025, f"median {statistics.median(times[1:]) * 1000:.1f} ms (was 44)"
    finally:
        await launcher.close()
