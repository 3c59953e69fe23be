"""A whole battle in Chromium: nothing on the page, and nothing in any response the page received,
names the battle's models before the vote; the vote reveals them and counts on the leaderboard."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.helpers import ARTIFACTS, LiveServer, png_bytes
from tests.web.test_browser import browser, open_page, pick_images  # noqa: F401  (the browser fixture)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def battle_server(tiny_catalog_path: Path, tmp_path: Path) -> Iterator[LiveServer]:
    live = LiveServer(tiny_catalog_path, tmp_path / "data", budget_gb=1.2)
    yield live
    live.stop()


def identities(catalog_path: Path) -> dict[str, list[str]]:
    """Each model id with the strings that would name it: its id and its display name."""
    entries = yaml.safe_load(catalog_path.read_text())["models"]
    return {entry["id"]: [entry["id"], entry["name"]] for entry in entries}


def test_a_battle_stays_blind_until_the_vote(browser, battle_server: LiveServer,  # noqa: F811
                                            tiny_catalog_path: Path) -> None:
    context, page, problems = open_page(browser, battle_server)
    try:
        page.goto("/")
        pick_images(page, [{"name": "red.png", "mimeType": "image/png", "buffer": png_bytes((200, 30, 30))},
                           {"name": "green.png", "mimeType": "image/png", "buffer": png_bytes((20, 200, 90))}])
        page.fill("#prompt", "Which image is brighter?")
        page.fill("input[name=max_new_tokens]", "12")
        received: list[str] = []

        def record(route) -> None:
            """Every response from now on but the event stream (left streaming; its events reach the DOM)."""
            if route.request.url.endswith("/events") or route.request.resource_type == "image":
                route.fallback()
                return
            response = route.fetch()
            received.append(response.text())
            route.fulfill(response=response)

        context.route("**/*", record)
        page.click("button.battle-go")
        page.wait_for_url("**/battles/*")
        page.wait_for_function(
            "() => document.querySelectorAll('.panel .st-done, .panel .st-error').length === 2", timeout=240_000)
        page.wait_for_timeout(500)
        dom = page.content()
        battle_id = int(page.url.rsplit("/", 1)[1])
        models = httpx.get(f"{battle_server.url}/api/battles/{battle_id}").json()
        assert models["revealed"] is False and models.get("models") is None
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "battle-before-vote.png"), full_page=True)

        before_vote = list(received)
        page.click("button.vote-choice[value=A]")
        page.locator(".battle .panel-name", has_text="(Model A)").wait_for()
        revealed = httpx.get(f"{battle_server.url}/api/battles/{battle_id}").json()["models"]
        in_battle = {entry["model"] for entry in revealed}
        assert len(in_battle) == 2
        names = identities(tiny_catalog_path)
        for model in in_battle:
            for text in names[model]:
                assert text not in dom, f"{text!r} was on the page before the vote"
                leaked = [body[:200] for body in before_vote if text in body]
                assert not leaked, f"{text!r} reached the page before the vote: {leaked}"
        assert len(before_vote) >= 2  # at least the battle's own page and the Battle request were looked at
        after = page.content()
        assert all(any(text in after for text in names[model]) for model in in_battle)  # revealed now
        page.screenshot(path=str(ARTIFACTS / "battle-after-vote.png"), full_page=True)

        page.goto("/leaderboard?include_flagged=true")  # a random-weight answer may be blank: a flagged vote
        board = page.content()
        assert "1 vote used" in board and "rating-chart" in board
        assert all(names[model][1] in board for model in in_battle)
        page.screenshot(path=str(ARTIFACTS / "leaderboard.png"), full_page=True)
    finally:
        context.close()
    assert problems == [], problems
