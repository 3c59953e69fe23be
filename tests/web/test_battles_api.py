"""Battles through the JSON API on a live server with tiny models: drawn models, anonymous panels,
votes that reveal, and the leaderboard and exports that follow."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.helpers import LiveServer, png_bytes

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tiny_catalog_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(tiny_catalog_path, tmp_path_factory.mktemp("battles") / "data", budget_gb=1.2)
    yield live
    live.stop()


def start(server: LiveServer, **fields: str) -> httpx.Response:
    files = [("images", ("a.png", png_bytes((200, 30, 30)), "image/png")),
             ("images", ("b.png", png_bytes((20, 200, 90)), "image/png"))]
    data = {"prompt": "Which is brighter?", "max_new_tokens": "6", **fields}
    return httpx.post(f"{server.url}/api/battles", data=data, files=files, timeout=240)


def test_a_drawn_battle_names_no_model_until_its_vote(server: LiveServer, tiny_catalog_path: Path) -> None:
    response = start(server)
    assert response.status_code == 201, response.text
    battle = response.json()
    assert [p["label"] for p in battle["panels"]] == ["A", "B"] and battle["revealed"] is False
    catalogue = yaml.safe_load(tiny_catalog_path.read_text())["models"]
    secrets = [entry["id"] for entry in catalogue] + [entry["name"] for entry in catalogue]
    seen = [response.text,
            httpx.get(f"{server.url}/api/battles/{battle['id']}").text,
            httpx.get(f"{server.url}/api/comparisons").text,
            httpx.get(f"{server.url}/history").text,
            httpx.get(f"{server.url}/export/ratings.csv").text,
            httpx.get(f"{server.url}/export/battles.csv").text]
    assert not [s for s in secrets for body in seen if s in body]
    assert httpx.get(f"{server.url}/api/comparisons/{battle['comparison_id']}").status_code == 409
    output_id = battle["panels"][0]["output_id"]
    assert httpx.post(f"{server.url}/api/outputs/{output_id}/rating", json={"score": 4}).status_code == 409
    page = httpx.get(f"{server.url}/comparisons/{battle['comparison_id']}", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == f"/battles/{battle['id']}"

    vote = httpx.post(f"{server.url}/api/battles/{battle['id']}/vote", json={"winner": "B", "rater": "ann"})
    assert vote.status_code == 201, vote.text
    revealed = vote.json()["panels"]
    assert [p["label"] for p in revealed] == ["A", "B"] and all(p["model"].startswith("tiny-") for p in revealed)
    again = httpx.post(f"{server.url}/api/battles/{battle['id']}/vote", json={"winner": "tie", "rater": "ann"})
    assert again.status_code == 200
    wrong = httpx.post(f"{server.url}/api/battles/{battle['id']}/vote", json={"winner": "Z"})
    assert wrong.status_code == 422 and "must be one of A, B, tie, bothbad" in wrong.json()["detail"]
    assert httpx.post(f"{server.url}/api/outputs/{output_id}/rating", json={"score": 4}).status_code == 201
    assert httpx.get(f"{server.url}/api/comparisons/{battle['comparison_id']}").status_code == 200

    # a random-weight answer may be blank, which flags the vote: counted here on request
    board = httpx.get(f"{server.url}/api/leaderboard", params={"include_flagged": "true"}).json()
    assert board["votes_used"] == 1 and {m["model"] for m in board["models"]} == {p["model"] for p in revealed}
    assert all(m["ties"] == 1 and m["provisional"] for m in board["models"])
    rows = list(csv.DictReader(io.StringIO(httpx.get(f"{server.url}/export/battles.csv").text)))
    assert len(rows) == 1 and rows[0]["winner"] == "tie" and rows[0]["judge"] == "ann"
    lines = httpx.get(f"{server.url}/export/battles.jsonl").text.splitlines()
    assert json.loads(lines[0])["battle_id"] == battle["id"]


def test_a_battle_of_picked_models_and_bad_requests(server: LiveServer) -> None:
    response = httpx.post(f"{server.url}/api/battles", data={"prompt": "x", "models": "tiny-llava"},
                          files=[("images", ("a.png", png_bytes((1, 2, 3)), "image/png"))], timeout=60)
    assert response.status_code == 422 and "at least two models" in response.json()["detail"]
    bad_k = start(server, k="9")
    assert bad_k.status_code == 422 and "from 2 to 8" in bad_k.json()["detail"]
    picked = httpx.post(f"{server.url}/api/battles", data={"prompt": "x", "models": ["tiny-llava", "tiny-qwen2-vl"],
                                                           "max_new_tokens": "4"},
                        files=[("images", ("a.png", png_bytes((1, 2, 3)), "image/png"))], timeout=240)
    assert picked.status_code == 201
    assert httpx.post(f"{server.url}/api/battles/999/vote", json={"winner": "A"}).status_code == 404
