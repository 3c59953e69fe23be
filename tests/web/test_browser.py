"""The page in Debian's Chromium (Playwright) against a live server on tiny models.

A person's whole flow (upload, pick, compare, watch the panels finish, rate, export CSV, screenshot),
and hostile prompts and file names that must stay text: no dialog, no request fired, shown literally.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ARTIFACTS, LiveServer, png_bytes

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
THREE = ["tiny-qwen2-vl", "tiny-idefics3", "tiny-paligemma"]
FINISH_MS = 240_000
# What the page must work under; used where the server sends no policy of its own.
STRICT_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self'; "
              "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


@pytest.fixture(scope="module")
def server(tiny_catalog_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(tiny_catalog_path, tmp_path_factory.mktemp("browser") / "data", budget_gb=1.2)
    yield live
    live.stop()


@pytest.fixture
def own_server(tiny_catalog_path: Path, tmp_path: Path) -> Iterator[LiveServer]:
    """A server of the test's own, so that the CSV export holds exactly that test's ratings."""
    live = LiveServer(tiny_catalog_path, tmp_path / "data", budget_gb=1.2)
    yield live
    live.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):  # CI must run the browser test: .ci/run installs Chromium
            pytest.fail("Debian's Chromium is not installed (apt-get install -y chromium)")
        pytest.skip("Debian's Chromium is not installed (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def with_csp(route) -> None:
    """Pages get a strict Content-Security-Policy unless the server already sends one."""
    request = route.request
    if request.resource_type != "document" or "/export/" in request.url:
        route.continue_()
        return
    response = route.fetch()
    headers = dict(response.headers)
    headers.setdefault("content-security-policy", STRICT_CSP)
    route.fulfill(response=response, headers=headers)


def open_page(browser, server: LiveServer):
    """A fresh browser context on the server; `problems` collects script errors and CSP violations."""
    context = browser.new_context(base_url=server.url, accept_downloads=True, viewport={"width": 1400, "height": 900})
    context.route("**/*", with_csp)
    page = context.new_page()
    return context, page, watch_problems(page)


def watch_problems(page) -> list[str]:
    """The page's script errors and CSP violations as they happen (a 30 s default timeout set too)."""
    page.set_default_timeout(30_000)
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text)
            if message.type == "error" and not message.text.startswith("Failed to load resource") else None)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    return problems


@pytest.fixture
def page(browser, server: LiveServer):
    context, page, problems = open_page(browser, server)
    yield page
    context.close()
    assert problems == [], problems  # no script errors, no Content-Security-Policy violations


def pick_images(page, files: list[dict]) -> None:
    page.set_input_files("#images", files)
    page.locator("#thumbs li").nth(len(files) - 1).wait_for()


def wait_until_finished(page, count: int) -> None:
    page.locator(".panel").nth(count - 1).wait_for()
    try:
        page.wait_for_function(
            "n => document.querySelectorAll('.panel .st-done, .panel .st-error').length === n", arg=count,
            timeout=FINISH_MS)
    except Exception as exc:  # say where each panel and the pool stood, so a stall can be told from slowness
        states = page.locator(".panel .state").all_inner_texts()
        pool = page.evaluate("() => fetch('/api/pool').then(r => r.text())")
        raise AssertionError(f"panels not finished after {FINISH_MS / 1000:g} s: {states}; pool: {pool}") from exc


MAKE_TRANSFER = """async name => {
    const canvas = document.createElement("canvas");
    canvas.width = 8; canvas.height = 8;
    const blob = await new Promise(done => canvas.toBlob(done, "image/png"));
    const transfer = new DataTransfer();
    transfer.items.add(new File([blob], name, {type: "image/png"}));
    return transfer;
}"""


def test_upload_compare_rate_export(browser, own_server: LiveServer) -> None:
    context, page, problems = open_page(browser, own_server)
    try:
        upload_compare_rate_export(page)
    finally:
        context.close()
    assert problems == [], problems


def upload_compare_rate_export(page) -> None:
    page.goto("/")
    assert page.locator(".model .badge.demo").count() >= 3  # tiny models are labelled as demos
    page.fill("#rater", "Zoë Tester")
    page.locator("#rater").dispatch_event("change")
    pick_images(page, [
        {"name": "red square.png", "mimeType": "image/png", "buffer": png_bytes((230, 30, 30), (64, 48))},
        {"name": "green.png", "mimeType": "image/png", "buffer": png_bytes((20, 200, 90), (40, 80))},
    ])
    assert page.locator("#thumbs .img-name").all_inner_texts() == ["red square.png", "green.png"]
    # a dropped and a pasted image join the selection; the remove buttons take them out again
    page.dispatch_event("#dropzone", "drop", {"dataTransfer": page.evaluate_handle(MAKE_TRANSFER, "dropped.png")})
    page.evaluate("dt => document.dispatchEvent(new ClipboardEvent('paste', {clipboardData: dt, bubbles: true}))",
                  page.evaluate_handle(MAKE_TRANSFER, "clipboard.png"))
    assert page.locator("#thumbs .img-name").all_inner_texts() == ["red square.png", "green.png", "dropped.png",
                                                                   "pasted-1.png"]
    assert page.evaluate("document.getElementById('images').files.length") == 4
    page.click("#thumbs button[aria-label='remove dropped.png']")
    page.click("#thumbs button[aria-label='remove pasted-1.png']")
    assert page.locator("#thumbs .img-name").all_inner_texts() == ["red square.png", "green.png"]
    assert page.evaluate("[...document.getElementById('images').files].map(f => f.name)") == ["red square.png",
                                                                                              "green.png"]
    page.fill("#prompt", "What differs between the two images?")
    for model in THREE:
        page.check(f"input[name=models][value='{model}']")
    page.fill("input[name=max_new_tokens]", "12")
    page.click("button.go")

    page.wait_for_url(re.compile(r"/comparisons/\d+$"))
    wait_until_finished(page, 3)
    panels = page.locator(".panel")
    assert page.locator(".panel .st-done").count() == 3, page.locator(".panel .foot").all_inner_texts()
    names = [panels.nth(i).locator(".panel-name").inner_text() for i in range(3)]
    assert sorted(names) == sorted(["Tiny Qwen2-VL", "Tiny SmolVLM (Idefics3)", "Tiny PaliGemma"]), names
    for i in range(3):
        assert panels.nth(i).locator(".stats").inner_text().startswith("TTFT")
        assert panels.nth(i).locator(".answer").inner_text() != ""
    assert page.locator(".shown-images .img-name").all_inner_texts() == ["red square.png", "green.png"]
    paligemma = page.locator(".panel[data-model='tiny-paligemma']")
    assert "grid" in paligemma.locator(".image-note").inner_text()

    given = {}
    for i, (score, note) in enumerate([(5, 'clear, "exact" — ünïcødé ✓'), (3, "so-so, 'partly' right"),
                                       (1, "=SUM(A1), wrong")]):
        panel = panels.nth(i)
        output_id = panel.get_attribute("data-output")
        panel.locator(f"label[for='score-{output_id}-{score}']").click()
        panel.locator("textarea[name=note]").fill(note)
        panel.locator("button.save").click()
        panel.locator(".rating-status", has_text="saved").wait_for()
        given[panel.get_attribute("data-model")] = (score, note)
    # a rating can be changed, and the change replaces it
    first = panels.nth(0)
    first_id = first.get_attribute("data-output")
    first.locator(f"label[for='score-{first_id}-4']").click()
    first.locator("button.save").click()
    first.locator(".rating-status", has_text="saved").wait_for()
    assert first.locator(f"#score-{first_id}-4").is_checked()
    first_model = first.get_attribute("data-model")
    given[first_model] = (4, given[first_model][1])

    with page.expect_download() as download_info:
        page.click("#export-link")
    text = Path(download_info.value.path()).read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert len(rows) == 3, text
    got = {row["model"]: (int(row["score"]), row["note"]) for row in rows}
    expected = {model: (score, "'" + note if note.startswith("=") else note) for model, (score, note) in given.items()}
    assert got == expected
    assert {row["rater"] for row in rows} == {"Zoë Tester"}

    # the pool summary in the header follows the panels' states
    page.wait_for_function("() => /· [1-9] resident/.test(document.querySelector('#pool .pool-sum').textContent)")

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "playground.png"), full_page=True)


HOSTILE_PROMPT = ('<script>alert(1)</script><img src=x onerror=alert(2)>\n'
                  '<div hx-get="/api/pool" hx-trigger="load">loaded?</div>')
HOSTILE_NAME = "<img src=x onerror=alert(3)>.png"


def test_hostile_prompt_and_file_name_stay_text(page, server: LiveServer) -> None:
    dialogs: list[str] = []
    requests: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.on("request", lambda request: requests.append(request.url))

    page.goto("/")
    pick_images(page, [{"name": HOSTILE_NAME, "mimeType": "image/png", "buffer": png_bytes((10, 10, 200))}])
    assert page.locator("#thumbs .img-name").inner_text() == HOSTILE_NAME
    page.fill("#prompt", HOSTILE_PROMPT)
    page.check("input[name=models][value='tiny-qwen2-vl']")
    page.fill("input[name=max_new_tokens]", "6")
    page.click("button.go")
    wait_until_finished(page, 1)

    def shown_literally() -> None:
        assert page.locator(".prompt-shown").inner_text() == HOSTILE_PROMPT
        assert page.locator(".shown-images .img-name").inner_text() == HOSTILE_NAME
        assert page.locator("img[src='x'], script:not([src]), [hx-get='/api/pool'], [onerror]").count() == 0

    shown_literally()
    page.reload()
    wait_until_finished(page, 1)
    shown_literally()
    assert page.locator("#prompt").input_value() == HOSTILE_PROMPT

    page.goto("/history")
    assert HOSTILE_PROMPT.replace("\n", "") in page.locator(".history-prompt").first.inner_text().replace("\n", "")
    assert page.locator("img[src='x'], [hx-get='/api/pool'], [onerror]").count() == 0

    page.wait_for_timeout(500)
    assert dialogs == []
    assert not [url for url in requests if "/api/pool" in url]
    assert not [url for url in requests if not url.startswith((server.url, "blob:" + server.url))]


SET_FILES_QUIETLY = """([name, size, text]) => {
    // straight onto the form's input, without the change event that runs the page's own checks: what the
    // server does with files the page did not get to see (an old page, a script, a modified page)
    const file = text !== null ? new File([text], name, {type: "image/png"})
                               : new File([new Uint8Array(size)], name, {type: "image/png"});
    const transfer = new DataTransfer();
    transfer.items.add(file);
    document.getElementById("images").files = transfer.files;
}"""


def test_refusals_are_shown_next_to_the_images(page, server: LiveServer) -> None:
    """The server's own refusals, past the page's checks: a body over the request limit (refused before
    the form is read) and a file that is not an image; each message appears under the upload area and
    nothing is stored. (The page's checks at pick time: tests/web/test_upload_browser.py.)"""
    import httpx

    before = httpx.get(f"{server.url}/api/comparisons").json()["total"]
    page.goto("/")
    page.evaluate(SET_FILES_QUIETLY, ["big.png", 51 * 1024 * 1024, None])
    page.fill("#prompt", "too big?")
    page.check("input[name=models][value='tiny-qwen2-vl']")
    page.click("button.go")
    page.locator("#error-images", has_text="larger than the limit of 50 MB").wait_for()

    page.evaluate(SET_FILES_QUIETLY, ["notes.png", 0, "just text"])
    page.click("button.go")
    page.locator("#error-images", has_text="notes.png is not a readable image").wait_for()
    assert "Pillow" not in page.locator("#error-images").inner_text()
    page.fill("#prompt", " ")
    page.click("button.go")
    page.locator("#error-prompt", has_text="must not be blank").wait_for()
    assert page.locator("#error-images").inner_text() == ""  # the earlier message is cleared
    assert httpx.get(f"{server.url}/api/comparisons").json()["total"] == before
    assert page.locator(".panel").count() == 0


def test_blind_names_appear_once_rated(page, server: LiveServer) -> None:
    page.goto("/")
    pick_images(page, [{"name": "one.png", "mimeType": "image/png", "buffer": png_bytes((90, 90, 200))}])
    page.fill("#prompt", "Which is better?")
    for model in ("tiny-qwen2-vl", "tiny-idefics3"):
        page.check(f"input[name=models][value='{model}']")
    page.check("input[name=blind]")
    page.fill("input[name=max_new_tokens]", "4")
    page.click("button.go")
    wait_until_finished(page, 2)
    names = page.locator(".panel .panel-name")
    assert names.all_inner_texts() == ["Model A (hidden until rated)", "Model B (hidden until rated)"]
    second = page.locator(".panel").nth(1)
    output_id = second.get_attribute("data-output")
    second.locator(f"label[for='score-{output_id}-2']").click()
    second.locator("button.save").click()
    second.locator(".rating-status", has_text="saved").wait_for()
    revealed = second.locator(".panel-name").inner_text()
    assert revealed in ("Tiny Qwen2-VL (Model B)", "Tiny SmolVLM (Idefics3) (Model B)"), revealed
    assert names.nth(0).inner_text() == "Model A (hidden until rated)"
