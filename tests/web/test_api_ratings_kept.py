"""Issue 14 item 11 over real HTTP: a re-rating without `note` keeps the note; the CSV says which ratings were
made blind."""

from __future__ import annotations

import csv
import io

import httpx
import pytest

from tests.helpers import png_bytes

pytestmark = pytest.mark.slow


def compare(server, models: list[str], **fields: str) -> dict:
    files = [("images", ("red.png", png_bytes((250, 0, 0)), "image/png"))]
    response = httpx.post(f"{server.url}/api/comparisons", files=files, timeout=300,
                          data={"prompt": "Which is brighter?", "models": models, "max_new_tokens": "3", **fields})
    assert response.status_code == 201, response.text
    return response.json()


def rate(server, output_id: int, **body) -> httpx.Response:
    return httpx.post(f"{server.url}/api/outputs/{output_id}/rating", json=body)


def stored_notes(server, comparison_id: int) -> dict[str, str]:
    outputs = httpx.get(f"{server.url}/api/comparisons/{comparison_id}").json()["outputs"]
    return {r["rater"]: r["note"] for r in outputs[0]["ratings"]}


def test_rerating_without_a_note_keeps_the_note_and_only_a_given_note_replaces_it(live_server):
    comparison = compare(live_server, ["tiny-qwen2-vl"])
    output_id = comparison["outputs"][0]["id"]
    assert rate(live_server, output_id, score=4, note="sharp, but misses the dog", rater="kim").status_code == 201
    again = rate(live_server, output_id, score=2, rater="kim")
    assert again.status_code == 200 and again.json()["score"] == 2
    assert again.json()["note"] == "sharp, but misses the dog"
    assert stored_notes(live_server, comparison["id"]) == {"kim": "sharp, but misses the dog"}
    replaced = rate(live_server, output_id, score=3, note="changed my mind", rater="kim")
    assert replaced.json()["note"] == "changed my mind"
    assert rate(live_server, output_id, score=3, note="", rater="kim").json()["note"] == "", "an empty note clears"
    assert stored_notes(live_server, comparison["id"]) == {"kim": ""}
    assert rate(live_server, output_id, score=5, rater="lee").json()["note"] == "", "a first rating without one"


def test_the_page_keeps_the_note_when_only_the_stars_are_sent(live_server):
    comparison = compare(live_server, ["tiny-qwen2-vl"])
    output_id = comparison["outputs"][0]["id"]
    page = f"{live_server.url}/outputs/{output_id}/rating"
    assert httpx.post(page, data={"score": "4", "note": "keep me", "rater": "noa"}).status_code in (200, 303)
    assert httpx.post(page, data={"score": "2", "rater": "noa"}).status_code in (200, 303)  # a click on a star
    assert stored_notes(live_server, comparison["id"]) == {"noa": "keep me"}
    outputs = httpx.get(f"{live_server.url}/api/comparisons/{comparison['id']}").json()["outputs"]
    assert outputs[0]["ratings"][0]["score"] == 2


def test_the_csv_says_which_ratings_were_made_blind(live_server):
    plain = compare(live_server, ["tiny-qwen2-vl", "tiny-idefics3"])
    blind = compare(live_server, ["tiny-qwen2-vl", "tiny-idefics3"], blind="on")
    battle = httpx.post(f"{live_server.url}/api/battles", files=[("images", ("b.png", png_bytes((0, 0, 250)),
                                                                              "image/png"))],
                        data={"prompt": "Which is brighter?", "models": ["tiny-qwen2-vl", "tiny-idefics3"],
                              "max_new_tokens": "3"}, timeout=300).json()
    assert httpx.post(f"{live_server.url}/api/battles/{battle['id']}/vote", json={"winner": "A"}).status_code == 201
    rated = {"plain": plain["outputs"][0]["id"], "blind": blind["outputs"][0]["id"],
             "battle": battle["panels"][0]["output_id"]}
    for kind, output_id in rated.items():
        assert rate(live_server, output_id, score=3, rater=f"csv-{kind}").status_code == 201
    response = httpx.get(f"{live_server.url}/export/ratings.csv")
    rows = {row["rater"]: row for row in csv.DictReader(io.StringIO(response.text))}
    assert response.text.split("\r\n", 1)[0].endswith(",params,blind")
    assert {kind: rows[f"csv-{kind}"]["blind"] for kind in rated} == {"plain": "0", "blind": "1", "battle": "0"}
    assert {kind: rows[f"csv-{kind}"]["comparison_id"] for kind in rated} == {
        "plain": str(plain["id"]), "blind": str(blind["id"]), "battle": str(battle["comparison_id"])}
