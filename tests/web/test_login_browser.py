"""Signing in with an account in Debian's Chromium: redirected to the form, a wrong secret refused, the right
one (with `;`, space, `=`, `"` and `é` in it) lets the page in, the rating is recorded under the account."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.web.accounts import hash_secret, write_users
from tests.helpers import ARTIFACTS, LiveServer, png_bytes
from tests.web.test_browser import browser, watch_problems  # noqa: F401  (browser: the fixture)

pytestmark = [pytest.mark.browser, pytest.mark.slow]
SECRET = 'a;b c=d"é-secret'


@pytest.fixture(scope="module")
def server(tiny_catalog_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("login")
    users = root / "users"
    write_users(users, {"alice": ("rater", hash_secret(SECRET)), "root": ("admin", hash_secret("root-secret-99"))})
    live = LiveServer(tiny_catalog_path, root / "data", extra=["--users-file", str(users)])
    yield live
    live.stop()


def test_sign_in_rate_as_the_account_and_sign_out(browser, server: LiveServer) -> None:  # noqa: F811
    alice = {"Authorization": f"Bearer alice:{SECRET}".encode()}
    made = httpx.post(f"{server.url}/api/comparisons", headers=alice, timeout=120,
                      data={"prompt": "Colour?", "models": "tiny-qwen2-vl", "max_new_tokens": "3"},
                      files=[("images", ("red.png", png_bytes((220, 20, 20)), "image/png"))])
    assert made.status_code == 201, made.text
    comparison_id, output_id = made.json()["id"], made.json()["outputs"][0]["id"]

    # no request routing (Playwright's route.fetch would follow the redirects itself): the server's own CSP
    context = browser.new_context(base_url=server.url, viewport={"width": 1200, "height": 800})
    page = context.new_page()
    problems = watch_problems(page)
    page.goto(f"/comparisons/{comparison_id}")
    assert page.url == f"{server.url}/login?next=%2Fcomparisons%2F{comparison_id}"
    page.fill("input[name=name]", "alice")
    page.fill("input[name=secret]", "not-the-secret")
    page.click("button.go")
    assert page.locator("#signin-error").inner_text() == "wrong name or secret"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "login-refused.png"))

    page.fill("input[name=secret]", SECRET)
    page.click("button.go")
    page.wait_for_url(re.compile(rf"/comparisons/{comparison_id}$"))
    assert " ".join(page.locator("#account").inner_text().split()) == "signed in as alice sign out"
    assert page.locator("#rater").get_attribute("type") == "hidden"  # no name box: the account is the rater
    assert page.locator("#export-link").count() == 0  # alice is no admin
    (cookie,) = [c for c in context.cookies() if c["name"] == "vlm_account"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert "vlm_account" not in page.evaluate("document.cookie")  # no script can read it

    panel = page.locator(f".panel[data-output='{output_id}']")
    panel.locator(f"label[for='score-{output_id}-4']").click()
    panel.locator("textarea[name=note]").fill("rated in the browser")
    panel.locator("button.save").click()
    panel.locator(".rating-status", has_text="saved").wait_for()
    page.screenshot(path=str(ARTIFACTS / "signed-in.png"), full_page=True)
    stored = httpx.get(f"{server.url}/api/comparisons/{comparison_id}",
                       headers={"Authorization": "Bearer root:root-secret-99"}).json()
    assert [(r["rater"], r["score"]) for r in stored["outputs"][0]["ratings"]] == [("alice", 4)]

    page.click("#account button")
    page.wait_for_url(re.compile(r"/login$"))
    page.goto("/leaderboard")
    assert page.url.startswith(f"{server.url}/login?next=")
    context.close()
    assert problems == [], problems
