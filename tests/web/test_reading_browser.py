"""Reading answers in Chromium (issue 14, item 8): a finished answer is shown as markdown, a hostile one stays
inert, the copy button copies the raw text, expand widens a panel, thumbnails open full size in a lightbox.

The hostile answer comes from a scripted OpenAI-compatible endpoint in the catalogue (a remote model is where
text nobody vetted enters the page): the real server streams it through its remote backend and its SSE stream
like any model's, and the page renders it when the panel finishes. The tiny models answer alongside.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import yaml

from tests.helpers import ARTIFACTS, LiveServer, png_bytes
from tests.web.test_browser import browser, pick_images, wait_until_finished, watch_problems, with_csp  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.slow]

HOSTILE_ANSWER = """# Findings

**Bold claim** and *emphasis*, then raw HTML that must stay text:
<script>alert('script')</script>
<img src=x onerror="alert('img')">
<iframe src="/api/pool"></iframe>
<div hx-get="/api/pool" hx-trigger="load">htmx bait</div>
<style>body { display: none }</style>
<a href="javascript:alert('a')">raw link</a>

- a [markdown javascript link](javascript:alert('md'))
- an image that would be fetched: ![tracker](http://127.0.0.2:9/pixel.png)
- a [fine link](https://example.org/docs)

```html
<b>code stays code</b> <script>alert('code')</script>
```

| colour | count |
|--------|------:|
| red    | 2     |
"""


class ScriptedModel(BaseHTTPRequestHandler):
    """POST /v1/chat/completions: the answer in small streamed pieces, as an OpenAI-compatible server sends it."""

    answer = HOSTILE_ANSWER

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def do_POST(self) -> None:  # noqa: N802 (the http.server name)
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        self.server.requests.append(body)  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        pieces = [self.answer[i:i + 24] for i in range(0, len(self.answer), 24)]
        for piece in pieces:
            chunk = {"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
            time.sleep(0.02)
        done = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": len(pieces)}}
        self.wfile.write(f"data: {json.dumps(done)}\n\ndata: [DONE]\n\n".encode())
        self.wfile.flush()


@pytest.fixture(scope="module")
def scripted_endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), ScriptedModel)
    server.requests = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


@pytest.fixture(scope="module")
def reading_server(tiny_dir: Path, scripted_endpoint: str,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data = yaml.safe_load((tiny_dir / "models.yaml").read_text())
    for entry in data["models"]:
        entry["repo"] = str(tiny_dir / entry["repo"][2:])
    data["models"].append({"id": "scripted-remote", "name": "Scripted remote", "repo": "scripted/remote",
                           "family": "remote", "endpoint": scripted_endpoint, "served_model": "scripted",
                           "multi_image": True})
    folder = tmp_path_factory.mktemp("reading")
    catalog = folder / "models.yaml"
    catalog.write_text(yaml.safe_dump(data))
    live = LiveServer(catalog, folder / "data", budget_gb=1.2)
    yield live
    live.stop()


@pytest.fixture
def reader(browser, reading_server: LiveServer):  # noqa: F811
    context = browser.new_context(base_url=reading_server.url, viewport={"width": 1400, "height": 900},
                                  permissions=["clipboard-read", "clipboard-write"])
    context.route("**/*", with_csp)
    page = context.new_page()
    problems = watch_problems(page)
    yield page
    context.close()
    assert problems == [], problems


def compare(page, models: list[str], prompt: str, tokens: int = 8, images: list[dict] | None = None) -> None:
    page.goto("/")
    pick_images(page, images or [{"name": "red.png", "mimeType": "image/png", "buffer": png_bytes((220, 30, 30))}])
    page.fill("#prompt", prompt)
    for model in models:
        page.check(f"input[name=models][value='{model}']")
    page.fill("input[name=max_new_tokens]", str(tokens))
    page.click("button.go:not(.battle-go)")
    wait_until_finished(page, len(models))


# nothing the answer held is an element anywhere on the page (the page's own htmx attributes are outside #results)
INERT = ("script:not([src]), iframe, style, [onerror], #results [hx-get], #results [hx-trigger], "
         "a[href^='javascript'], .answer img")


def test_hostile_markdown_is_rendered_inert_and_copied_raw(reader, reading_server: LiveServer) -> None:
    dialogs: list[str] = []
    requests: list[str] = []
    reader.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    reader.on("request", lambda request: requests.append(request.url))
    compare(reader, ["scripted-remote", "tiny-qwen2-vl"], "Describe the image in markdown.")

    def check_rendered() -> None:
        answer = reader.locator(".panel[data-model='scripted-remote'] .answer")
        assert answer.locator("h1").inner_text() == "Findings"
        assert answer.locator("strong").first.inner_text() == "Bold claim"
        assert answer.locator("em").first.inner_text() == "emphasis"
        assert answer.locator("li").count() == 3
        assert answer.locator("table td").all_inner_texts() == ["red", "2"]
        # the code block keeps its text, markup and all
        assert answer.locator("pre code").inner_text().strip() == \
            "<b>code stays code</b> <script>alert('code')</script>"
        # the raw HTML is shown as the text it is
        text = answer.inner_text()
        for literal in ("<script>alert('script')</script>", "<img src=x onerror=\"alert('img')\">",
                        '<div hx-get="/api/pool" hx-trigger="load">htmx bait</div>'):
            assert literal in text, literal
        assert reader.locator(INERT).count() == 0
        links = answer.locator("a")
        assert [links.nth(i).get_attribute("href") for i in range(links.count())] == [
            "http://127.0.0.2:9/pixel.png", "https://example.org/docs"]  # the image became a plain link
        assert all("noopener" in (links.nth(i).get_attribute("rel") or "") for i in range(links.count()))
        assert reader.evaluate("getComputedStyle(document.body).display") != "none"

    check_rendered()  # rendered live, when the panel finished streaming
    ARTIFACTS.mkdir(exist_ok=True)
    reader.screenshot(path=str(ARTIFACTS / "markdown-hostile.png"), full_page=True)

    comparison_id = int(reader.url.rsplit("/", 1)[1])
    stored = httpx.get(f"{reading_server.url}/api/comparisons/{comparison_id}").json()
    remote = next(o for o in stored["outputs"] if o["model"] == "scripted-remote")
    assert remote["text"] == HOSTILE_ANSWER  # the record is the raw text

    panel = reader.locator(".panel[data-model='scripted-remote']")
    panel.locator("button.copy").click()
    panel.locator("button.copy", has_text="copied").wait_for()
    assert reader.evaluate("navigator.clipboard.readText()") == HOSTILE_ANSWER

    reader.reload()
    wait_until_finished(reader, 2)
    check_rendered()  # and the same from the stored record
    reader.wait_for_timeout(300)
    assert dialogs == []
    assert not [url for url in requests if "/api/pool" in url or "127.0.0.2" in url]
    assert not [url for url in requests if not url.startswith((reading_server.url, "blob:"))]


def test_expand_widens_a_panel_and_copy_takes_a_tiny_models_answer(reader, reading_server: LiveServer) -> None:
    compare(reader, ["tiny-qwen2-vl", "tiny-idefics3", "scripted-remote"], "Three panels.", tokens=12)
    panel = reader.locator(".panel[data-model='tiny-qwen2-vl']")
    before = panel.bounding_box()
    row = reader.locator(".panels").bounding_box()
    assert before["width"] < row["width"] / 2  # three in a row
    answer_box = panel.locator(".answer").bounding_box()
    panel.locator("button.expand").click()
    assert panel.locator("button.expand").get_attribute("aria-pressed") == "true"
    wide = panel.bounding_box()
    assert wide["width"] > row["width"] * 0.95, (wide, row)
    assert panel.locator(".answer").bounding_box()["width"] > answer_box["width"] * 2
    ARTIFACTS.mkdir(exist_ok=True)
    reader.screenshot(path=str(ARTIFACTS / "panel-expanded.png"), full_page=True)
    panel.locator("button.expand").click()
    assert panel.locator("button.expand").get_attribute("aria-pressed") == "false"
    assert abs(panel.bounding_box()["width"] - before["width"]) < 2

    comparison_id = int(reader.url.rsplit("/", 1)[1])
    stored = httpx.get(f"{reading_server.url}/api/comparisons/{comparison_id}").json()
    raw = next(o for o in stored["outputs"] if o["model"] == "tiny-qwen2-vl")["text"]
    panel.locator("button.copy").click()
    panel.locator("button.copy", has_text="copied").wait_for()
    assert reader.evaluate("navigator.clipboard.readText()") == raw


def test_a_thumbnail_opens_full_size_and_escape_closes_it(reader) -> None:
    compare(reader, ["tiny-qwen2-vl"], "Look closely.", tokens=4,
            images=[{"name": "wide.png", "mimeType": "image/png", "buffer": png_bytes((30, 120, 220), (640, 200))}])
    thumb = reader.locator(".shown-images a.zoom")
    assert thumb.locator("img").bounding_box()["width"] < 80
    thumb.click()
    box = reader.locator("#lightbox")
    box.wait_for(state="visible")
    image = reader.locator("#lightbox-image")
    reader.wait_for_function("() => document.getElementById('lightbox-image').complete")
    assert reader.evaluate("document.getElementById('lightbox-image').naturalWidth") == 640
    assert image.bounding_box()["width"] == pytest.approx(640, abs=2)  # full size: it fits the viewport
    assert reader.locator("#lightbox-name").inner_text() == "wide.png"
    ARTIFACTS.mkdir(exist_ok=True)
    reader.screenshot(path=str(ARTIFACTS / "lightbox.png"))
    reader.keyboard.press("Escape")
    box.wait_for(state="hidden")
    assert reader.evaluate("document.activeElement.classList.contains('zoom')")  # focus back on the thumbnail
    # by keyboard alone: Enter on the focused thumbnail opens it, the close button shuts it
    reader.keyboard.press("Enter")
    box.wait_for(state="visible")
    reader.locator(".lightbox-close").click()
    box.wait_for(state="hidden")
