"""The history in Chromium (issue 14, item 9): search and filters that combine, update the results in place
(htmx) and put themselves in a URL that opens the same results; older pages by keyset; the per-model
summary; and a page that says who is rating, warns when it is the default name, and sets a name.

The comparisons are stored straight into the server's SQLite file (the history reads them as it reads any);
every check of a rater name set from the page reads it back from the server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from app.storage import comparisons, ratings
from app.storage.comparisons import OutputInput, StoredImageInput
from app.storage.db import make_engine
from tests.helpers import ARTIFACTS, LiveServer, png_bytes
from tests.web.test_browser import browser, open_page  # noqa: F401

pytestmark = [pytest.mark.browser]

LLAVA, QWEN, IDEFICS, PALI = "tiny-llava", "tiny-qwen2-vl", "tiny-idefics3", "tiny-paligemma"
SEEDED: dict[str, list[int]] = {}  # output ids of the seeded comparisons the tests come back to


@pytest.fixture(scope="module")
def history_server(tiny_catalog_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(tiny_catalog_path, tmp_path_factory.mktemp("history") / "data", budget_gb=1.2,
                      env={"VLM_SPARE_WORKERS": "0"})
    engine = make_engine(None, live.data_dir)
    image = StoredImageInput(name="dot.png", data=png_bytes((200, 60, 30)), format="png", width=48, height=40)

    def store(prompt: str, models: tuple[str, ...], rater: str = "ann", blind: bool = False,
              battle: bool = False) -> comparisons.CreatedComparison:
        return comparisons.create_comparison(engine, live.data_dir, prompt, {}, rater, blind, [image],
                                             [OutputInput(model=m) for m in models], battle=battle)

    for n in range(22):
        store(f"street scene {n}", (QWEN, IDEFICS) if n % 2 else (QWEN,), rater="anonymous" if n == 21 else "bob")
    sunset = store("A sunset over the bay", (LLAVA, QWEN))
    ratings.rate(engine, sunset.output_ids[0], 5, "the Giraffe is missing", "ann")
    ratings.rate(engine, sunset.output_ids[1], 2, "", "ann")
    sunrise = store("A sunrise over the bay", (LLAVA,), rater="cy")
    ratings.rate(engine, sunrise.output_ids[0], 4, "", "cy")
    store("Is 100% of the square red?", (IDEFICS,))
    SEEDED["blind"] = store("Which is bigger, blind?", (LLAVA, IDEFICS), blind=True).output_ids
    store("An unvoted battle", (PALI, LLAVA), battle=True)  # names nothing: tiny-paligemma is nowhere else
    engine.dispose()
    yield live
    live.stop()


@pytest.fixture
def page(browser, history_server: LiveServer):  # noqa: F811
    context, page, problems = open_page(browser, history_server)
    yield page
    context.close()
    assert problems == [], problems  # no script errors, no Content-Security-Policy violations


def prompts(page) -> list[str]:
    return [text.strip() for text in page.locator(".history-item .history-prompt").all_inner_texts()]


def wait_rows(page, count: int) -> None:
    page.wait_for_function("n => document.querySelectorAll('.history-item').length === n", arg=count)


def query(page) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(page.url).query, keep_blank_values=True)


def summary_rows(page) -> dict[str, list[str]]:
    page.locator("#history-model-summary").wait_for()
    rows = page.locator("#history-model-summary tbody tr")
    return {rows.nth(i).get_attribute("data-model"):
            [cell.strip() for cell in rows.nth(i).locator("td").all_inner_texts()] for i in range(rows.count())}


def test_search_and_filters_combine_update_in_place_and_live_in_a_shareable_url(page, history_server: LiveServer):
    page.goto("/history")
    assert len(prompts(page)) == 20 and prompts(page)[0] == "An unvoted battle"
    assert page.locator("#history-match-count").inner_text() == "27"
    rows = summary_rows(page)
    assert PALI not in rows and page.locator("#history-model option[value='tiny-paligemma']").count() == 0
    assert rows[LLAVA] == ["2", "2", "★ 4.50"]  # sunset and sunrise; the blind one is unrated, so unnamed
    page.evaluate("window.notReloaded = true")  # gone if a filter reloaded the page instead of swapping

    with page.expect_response(lambda r: "/history?" in r.url and "q=giraffe" in r.url):
        page.fill("#history-q", "giraffe")  # a word in a note, not in any prompt
    wait_rows(page, 1)
    assert prompts(page) == ["A sunset over the bay"] and query(page) == [("q", "giraffe")]  # empty filters left out
    page.locator("#history-match-count", has_text="1").wait_for()

    page.fill("#history-q", "over the bay")
    wait_rows(page, 2)
    page.select_option("#history-rated", "rated")
    page.fill("#history-rater-filter", "cy")
    wait_rows(page, 1)
    assert prompts(page) == ["A sunrise over the bay"]
    assert dict(query(page)) == {"q": "over the bay", "rater": "cy", "rated": "rated"}
    page.locator("#history-model-summary caption", has_text="ratings by cy").wait_for()
    assert summary_rows(page) == {LLAVA: ["1", "1", "★ 4.00"]}
    assert page.evaluate("window.notReloaded") is True
    page.screenshot(path=str(ARTIFACTS / "history-filtered.png"), full_page=True)

    shared = page.url  # opened afresh, the URL gives the same results and the form says why
    page.goto("about:blank")
    page.goto(shared)
    assert prompts(page) == ["A sunrise over the bay"]
    assert page.input_value("#history-q") == "over the bay" and page.input_value("#history-rater-filter") == "cy"
    assert page.input_value("#history-rated") == "rated"

    page.click("#history-clear")
    page.wait_for_url("**/history")
    page.fill("#history-q", "%")  # a wildcard is a character like any other
    wait_rows(page, 1)
    assert prompts(page) == ["Is 100% of the square red?"]
    page.fill("#history-q", "")
    page.select_option("#history-model", LLAVA)
    page.select_option("#history-blind", "open")
    wait_rows(page, 2)
    assert prompts(page) == ["A sunrise over the bay", "A sunset over the bay"]
    page.select_option("#history-blind", "blind")
    page.locator(".history-results .empty", has_text="No comparison matches").wait_for()
    page.go_back()  # the history of the browser holds each filter step
    wait_rows(page, 2)
    assert page.input_value("#history-blind") == "open"


def test_older_pages_continue_below_the_last_row_with_the_filters_kept(page, history_server: LiveServer):
    page.goto(f"/history?model={QWEN}")
    first = prompts(page)
    assert len(first) == 20 and first[0] == "A sunset over the bay"
    more = page.locator(".history-more a")
    assert "before=" in more.get_attribute("href") and f"model={QWEN}" in more.get_attribute("href")
    url = page.url
    more.click()
    wait_rows(page, 23)
    shown = prompts(page)
    assert shown[:20] == first and len(set(shown)) == 23  # nothing twice, nothing skipped: 22 street + sunset
    assert shown[-1] == "street scene 0" and page.locator(".history-more").count() == 0 and page.url == url
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"/history?model={QWEN}")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # the filters wrap on a phone
    page.screenshot(path=str(ARTIFACTS / "history-phone.png"), full_page=False)


def test_the_page_says_who_is_rating_and_sets_the_name(page, history_server: LiveServer):
    page.goto("/history")
    notice = page.locator("#history-rater")
    assert "history-rater-default" in notice.get_attribute("class")
    assert "stored as the default rater" in notice.inner_text() and "anonymous" in notice.inner_text()
    started = page.locator(".history-started-by", has_text="(the default name)")
    assert started.count() == 1 and started.inner_text() == "anonymous (the default name)"  # street scene 21's
    page.screenshot(path=str(ARTIFACTS / "history-default-rater.png"))

    page.fill("#history-rater input[name=rater]", "Rita Q")
    page.click("#history-rater button[type=submit]")
    page.locator("#history-rater-name-shown", has_text="Rita Q").wait_for()
    # the swapped-out notice lingers a moment (htmx-swapping) beside the new one: wait until only the new is left
    page.wait_for_function("() => { const n = document.querySelectorAll('#history-rater');"
                           " return n.length === 1 && !n[0].classList.contains('history-rater-default'); }")
    assert page.input_value("#rater") == "Rita Q"  # the header says the same
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    assert cookies.get("rater") == "Rita%20Q"
    # the server now takes this browser's ratings to be Rita's: its own page says so on a fresh load
    page.reload()
    assert page.locator("#history-rater-name-shown").inner_text() == "Rita Q"
    mine = httpx.get(f"{history_server.url}/history/rater", cookies={"rater": cookies["rater"]}).text
    assert "Rita Q" in mine and "default rater" not in mine

    page.fill("#rater", "Sam")  # the header's field: the notice follows it
    page.locator("#rater").dispatch_event("change")
    page.locator("#history-rater-name-shown", has_text="Sam").wait_for()
    page.click("#history-rater a", timeout=5000)  # "Not rated by you yet"
    page.wait_for_url("**/history?rater=Sam&rated=unrated")

    page.fill("#history-rater input[name=rater]", "")  # no name: back to the default, said so
    page.click("#history-rater button[type=submit]")
    page.locator("#history-rater.history-rater-default").wait_for()
    assert page.input_value("#rater") == "anonymous"


def test_the_summary_follows_a_new_rating(page, history_server: LiveServer):
    """The server keeps each summary until the store changes: a rating made meanwhile shows on the next load,
    and names the blind comparison's model it rates (its other answer stays unnamed)."""
    page.goto("/history")
    assert summary_rows(page)[LLAVA] == ["2", "2", "★ 4.50"]
    llava, idefics = SEEDED["blind"]
    rated = httpx.post(f"{history_server.url}/api/outputs/{llava}/rating", json={"score": 3, "rater": "dee"})
    assert rated.status_code in (200, 201), rated.text
    page.reload()
    assert summary_rows(page)[LLAVA] == ["3", "3", "★ 4.00"]
    page.goto(f"/history?model={IDEFICS}&blind=blind")
    page.locator(".history-results .empty").wait_for()  # the unrated idefics answer is still hidden
