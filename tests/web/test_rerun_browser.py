"""Issue 14 items 1, 4 and 5 in a real browser: run a comparison again on its stored images (one removed,
one added), stop an answer and retry it, and a finished panel saying how long it waited and loaded."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fakes.faulty import ENV as FAULTY_ENV
from tests.helpers import ARTIFACTS, LiveServer, png_bytes
from tests.web.test_browser import FINISH_MS, browser, open_page, pick_images  # noqa: F401  (browser: a fixture)
from tests.web.test_faults import SLOW, write_catalog

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("rerun")
    live = LiveServer(write_catalog(tiny_dir, root / "models.yaml"), root / "data", budget_gb=1.2,
                      env=FAULTY_ENV)
    yield live
    live.stop()


def comparison(server: LiveServer, comparison_id: str) -> dict:
    return httpx.get(f"{server.url}/api/comparisons/{comparison_id}", timeout=10).json()


def test_run_again_keeps_the_stored_images_and_a_panel_says_it_waited_and_loaded(browser, server):  # noqa: F811
    context, page, problems = open_page(browser, server)
    try:
        page.goto("/")
        pick_images(page, [{"name": "red.png", "mimeType": "image/png", "buffer": png_bytes((230, 30, 30))},
                           {"name": "green.png", "mimeType": "image/png", "buffer": png_bytes((20, 200, 90))}])
        page.fill("#prompt", "What colour is it?")
        page.check("input[name=models][value='tiny-idefics3']")
        page.fill("input[name=max_new_tokens]", "4")
        page.click("button.go")
        page.wait_for_url(re.compile(r"/comparisons/\d+$"))
        page.locator(".panel .st-done").wait_for(timeout=FINISH_MS)
        assert "loading" in page.locator(".panel .st-done").inner_text(), "a cold model's wait and load are told"
        first = page.url.rsplit("/", 1)[1]

        page.reload()  # the comparison's own page, as a link or the history opens it: "Run again"
        page.click("a.run-again")
        assert page.locator("#reused .img-name").all_inner_texts() == ["red.png", "green.png"]
        assert page.input_value("#prompt") == "What colour is it?"
        assert page.is_checked("input[name=models][value='tiny-idefics3']")
        page.click("#reused button[aria-label='remove red.png']")
        pick_images(page, [{"name": "blue.png", "mimeType": "image/png", "buffer": png_bytes((20, 20, 230))}])
        page.check("input[name=models][value='tiny-llava']")
        with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/compare")) as sent:
            page.click("button.go")
        assert b"red.png" not in (sent.value.post_data_buffer or b""), "a removed image is not sent"
        assert b"green.png" in (sent.value.post_data_buffer or b"")
        page.wait_for_url(re.compile(r"/comparisons/\d+$"))
        page.wait_for_function("n => document.querySelectorAll('.panel .st-done').length === n", arg=2,
                               timeout=FINISH_MS)
        again = comparison(server, page.url.rsplit("/", 1)[1])
        before = comparison(server, first)
        assert [image["name"] for image in again["images"]] == ["green.png", "blue.png"]
        assert again["images"][0]["sha256"] == before["images"][1]["sha256"], "the stored image, reused by hash"
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "run-again.png"), full_page=True)
    finally:
        context.close()
    assert problems == [], problems


def test_stop_an_answer_then_retry_it(browser, server):  # noqa: F811
    context, page, problems = open_page(browser, server)
    try:
        page.goto("/")
        pick_images(page, [{"name": "red.png", "mimeType": "image/png", "buffer": png_bytes((230, 30, 30))}])
        page.fill("#prompt", "Describe the image in detail.")
        page.check(f"input[name=models][value='{SLOW}']")
        page.fill("input[name=max_new_tokens]", "2000")  # about a minute: long enough to stop
        page.click("button.go")
        panel = page.locator(".panel").first
        panel.locator(".st-generating").wait_for(timeout=FINISH_MS)
        panel.locator(".answer").filter(has_text=re.compile(r"\w")).wait_for(timeout=60_000)
        panel.locator("button.stop").click()
        panel.locator(".st-error", has_text="interrupted").wait_for(timeout=30_000)
        assert "stopped: by the person following it" in panel.locator(".foot").inner_text()
        output_id = panel.get_attribute("data-output")
        stopped = next(o for o in comparison(server, page.url.rsplit("/", 1)[1])["outputs"]
                       if str(o["id"]) == output_id)
        assert stopped["status"] == "interrupted" and len(stopped["text"]) > 0
        page.screenshot(path=str(ARTIFACTS / "stopped.png"), full_page=True)

        panel.locator("button.retry").click()
        panel = page.locator(f".panel[data-output='{output_id}']")
        panel.locator(".st-generating").wait_for(timeout=FINISH_MS)  # answering again, followed live
        panel.locator("button.stop").click()  # and stopped again: stop works on a retried panel too
        panel.locator(".st-error", has_text="interrupted").wait_for(timeout=30_000)
        assert panel.locator("button.retry").count() == 1
        page.locator(".comparison .stop-all").wait_for(state="detached", timeout=30_000)  # nothing left to stop
    finally:
        context.close()
    assert problems == [], problems
