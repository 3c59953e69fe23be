"""16 raters at once against a live server on a real SQLite file: no rating is lost, each rater's latest
score and note win, and every answer says what was saved (the page's form fragment, the API's 201/200)."""

from __future__ import annotations

import re
import sqlite3
import threading
from pathlib import Path

import httpx
import pytest

from app.storage import comparisons, outputs
from app.storage.comparisons import OutputInput, StoredImageInput
from app.storage.db import init_db, make_engine
from tests.helpers import CATALOGUE, LiveServer

RATERS, ROUNDS = 16, 6


@pytest.fixture
def rated_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A server on a SQLite file holding 3 comparisons of 2 finished outputs; their output ids."""
    monkeypatch.delenv("DATABASE_URL", raising=False)  # the server inherits the environment
    data_dir = tmp_path / "data"
    engine = make_engine(None, data_dir)
    init_db(engine)
    output_ids: list[int] = []
    for index in range(3):
        image = StoredImageInput(f"p{index}.png", f"png {index}".encode(), "PNG", 4, 3)
        created = comparisons.create_comparison(engine, data_dir, f"prompt {index}", {}, "", index == 2, [image],
                                                [OutputInput("m1"), OutputInput("m2")])
        for output_id in created.output_ids:
            outputs.finish_output(engine, output_id, text="an answer", ttft_s=0.1, total_s=0.2, tokens=3)
        output_ids.extend(created.output_ids)
    engine.dispose()
    server = LiveServer(CATALOGUE, data_dir)
    try:
        yield server, output_ids
    finally:
        server.stop()


def test_sixteen_raters_at_once_lose_nothing_and_the_latest_score_wins(rated_server) -> None:
    server, output_ids = rated_server
    barrier = threading.Barrier(RATERS)
    errors: list[str] = []
    sent: dict[tuple[int, str], tuple[int, str]] = {}

    def rater(index: int) -> None:
        name = f"rater {index}"
        with httpx.Client(base_url=server.url, timeout=60) as client:
            barrier.wait()
            for round_ in range(ROUNDS):
                for position, output_id in enumerate(output_ids):
                    score, note = 1 + (index + round_ + position) % 5, f"{name}, round {round_}"
                    if (index + round_) % 2:  # the page's form, as htmx sends it
                        response = client.post(f"/outputs/{output_id}/rating", headers={"HX-Request": "true"},
                                               data={"score": str(score), "note": note, "rater": name})
                        checked = re.search(r'value="(\d)" id="score-\d+-\d" class="star-input" checked', response.text)
                        if response.status_code != 200 or "saved" not in response.text or not checked \
                                or int(checked.group(1)) != score:
                            errors.append(f"page {output_id} {name}: {response.status_code} {response.text[:200]}")
                    else:
                        response = client.post(f"/api/outputs/{output_id}/rating",
                                               json={"score": score, "note": note, "rater": name})
                        expected = 201 if round_ == 0 else 200
                        if response.status_code != expected or response.json()["score"] != score:
                            errors.append(f"api {output_id} {name}: {response.status_code} (expected {expected}) "
                                          f"{response.text[:200]}")
                    sent[(output_id, name)] = (score, note)

    threads = [threading.Thread(target=rater, args=(index,)) for index in range(RATERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    assert len(sent) == RATERS * len(output_ids)

    connection = sqlite3.connect(server.data_dir / "playground.db")
    try:
        stored = connection.execute("SELECT output_id, rater, score, note FROM ratings").fetchall()
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        connection.close()
    assert len(stored) == RATERS * len(output_ids)  # one row per rater and output: none lost, none doubled
    assert {(output_id, rater): (score, note) for output_id, rater, score, note in stored} == sent
