"""A store that breaks under a running server: a real SQLite file with thousands of ratings, damaged
in the middle while the real app serves it. Every answer is then 200 or a clear 503 (never a 500),
/health says what is wrong, and no export is ever cut off mid-file."""

from __future__ import annotations

import csv
import io
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.helpers import LiveServer
from tests.storage.damage import build_rated_store, damage, quick_check
from tests.storage.test_postgres import SQLITE_ONLY

pytestmark = SQLITE_ONLY
UNUSABLE = "the database is unusable: database disk image is malformed; see /health"


@pytest.fixture
def rated_server(tiny_catalog_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    data_dir = tmp_path / "data"
    ratings = build_rated_store(data_dir)
    server = LiveServer(tiny_catalog_path, data_dir)
    server.ratings = ratings  # type: ignore[attr-defined]
    yield server
    server.stop()


def test_a_healthy_store_exports_every_rating_with_its_length(rated_server: LiveServer) -> None:
    response = httpx.get(f"{rated_server.url}/export/ratings.csv", timeout=60)
    assert response.status_code == 200
    assert int(response.headers["content-length"]) == len(response.content)
    rows = list(csv.reader(io.StringIO(response.text, newline="")))
    assert len(rows) == 1 + rated_server.ratings  # type: ignore[attr-defined]
    with httpx.Client(base_url=rated_server.url) as client:  # the store check keeps /health cheap
        started = time.perf_counter()
        assert all(client.get("/health").status_code == 200 for _ in range(100))
        per_call_ms = (time.perf_counter() - started) * 10
    print(f"/health: {per_call_ms:.2f} ms a call over 100 calls on a {rated_server.ratings}-rating store")
    assert per_call_ms < 50


def test_damage_while_serving_is_a_503_that_says_so(rated_server: LiveServer) -> None:
    db_file = rated_server.data_dir / "playground.db"
    damage(db_file)
    assert quick_check(db_file) != "ok"
    with httpx.Client(base_url=rated_server.url, timeout=60) as client:
        export = client.get("/export/ratings.csv")  # it was a 200 cut off mid-stream
        assert export.status_code == 503, export.text[:300]
        assert export.json()["detail"].startswith(UNUSABLE)
        assert export.headers["retry-after"]
        codes = Counter(client.get(f"/api/comparisons/{i}").status_code for i in range(1, 121))
        assert set(codes) <= {200, 503} and codes[503] > 0, codes  # pages the damage spared still read
        for path in ("/export/battles.csv", "/export/battles.jsonl", "/api/leaderboard", "/api/comparisons"):
            answer = client.get(path)
            assert answer.status_code in (200, 503), (path, answer.status_code, answer.text[:300])
            if answer.status_code == 200 and path.startswith("/export"):
                assert int(answer.headers["content-length"]) == len(answer.content)
        health = client.get("/health")  # at once: the failed reads are reported before the next check
        assert health.status_code == 503
        assert health.json()["detail"] == f"the database is unusable: {db_file}: database disk image is malformed"
    log = rated_server.log.read_text()
    assert "Traceback" not in log
    assert log.count("the database failed under") == 1  # the same failure is logged once a minute, not per request


def test_health_finds_damage_nobody_has_read_yet(rated_server: LiveServer) -> None:
    db_file = rated_server.data_dir / "playground.db"
    damage(db_file)
    deadline = time.monotonic() + 20
    while (health := httpx.get(f"{rated_server.url}/health")).status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.5)  # the quick check runs again once the last one is a few seconds old
    assert health.status_code == 503
    assert health.json()["detail"].startswith(f"the database is unusable: {db_file}")
