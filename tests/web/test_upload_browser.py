"""Picking images in Chromium (issue 14, item 7): the page itself refuses what the server would refuse, at
pick time and with the server's own limits (this server runs with 3 images of 2 MB at most); the messages
name no library; a photo turned by its EXIF orientation is shown and sized upright; a `"` in a file name
is shown as itself."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.helpers import ARTIFACTS, LiveServer, png_bytes
from tests.web.test_browser import browser, open_page, wait_until_finished  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LIMITS = {"VLM_MAX_IMAGES": "3", "VLM_MAX_IMAGE_MB": "2"}


@pytest.fixture(scope="module")
def upload_server(tiny_catalog_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(tiny_catalog_path, tmp_path_factory.mktemp("upload") / "data", budget_gb=1.2, env=LIMITS)
    yield live
    live.stop()


@pytest.fixture
def picker(browser, upload_server: LiveServer):  # noqa: F811
    context, page, problems = open_page(browser, upload_server)
    yield page
    context.close()
    assert problems == [], problems


def png(name: str, color: tuple[int, int, int] = (200, 40, 40)) -> dict:
    return {"name": name, "mimeType": "image/png", "buffer": png_bytes(color)}


def thumbs(page) -> list[str]:
    return page.locator("#thumbs .img-name").all_inner_texts()


def picked_names(page) -> list[str]:
    return page.evaluate("[...document.getElementById('images').files].map(f => f.name)")


def problems_shown(page) -> str:
    return page.locator("#error-images").inner_text()


def test_the_page_refuses_what_the_server_would_at_pick_time(picker, upload_server: LiveServer) -> None:
    page = picker
    sent: list[str] = []
    page.on("request", lambda request: sent.append(request.url) if request.method == "POST" else None)
    page.goto("/")
    zone = page.locator("#dropzone")
    assert zone.get_attribute("data-max-images") == "3"  # the server's settings, not numbers in the script
    assert zone.get_attribute("data-max-image-bytes") == str(2 * 1024 * 1024)

    # a text file named .png: a clear message and no broken thumbnail
    page.set_input_files("#images", [{"name": "notes.png", "mimeType": "image/png", "buffer": b"just text, really"}])
    page.locator("#error-images", has_text="notes.png is not a readable image").wait_for()
    assert thumbs(page) == [] and picked_names(page) == []
    # a PNG signature on garbage: the browser's decode fails, so it is refused too
    page.set_input_files("#images", [{"name": "broken.png", "mimeType": "image/png",
                                      "buffer": b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4}])
    page.locator("#error-images", has_text="broken.png is not a readable image").wait_for()
    assert thumbs(page) == []

    # more than the limit: the first three are kept, the fourth is refused by name
    page.set_input_files("#images", [png(f"p{i}.png", (40 * i, 90, 120)) for i in range(1, 5)])
    page.locator("#error-images", has_text="1 image not added: the limit is 3 images (p4.png)").wait_for()
    assert thumbs(page) == ["p1.png", "p2.png", "p3.png"] == picked_names(page)
    page.wait_for_function("() => document.querySelectorAll('#thumbs .thumb-item.is-ok img[src]').length === 3")
    for i in range(3):  # every thumbnail decoded: none is broken
        assert page.locator("#thumbs img.thumb").nth(i).evaluate("img => img.complete && img.naturalWidth > 0")
    page.click("#thumbs button[aria-label='remove p3.png']")

    # a file over the size limit is refused before anything is sent
    big = bytearray(png_bytes((1, 2, 3))) + bytes(3 * 1024 * 1024)
    page.set_input_files("#images", [{"name": "huge.png", "mimeType": "image/png", "buffer": bytes(big)}])
    page.locator("#error-images", has_text="huge.png is 3.0 MB; the limit is 2 MB per image").wait_for()
    assert thumbs(page) == ["p1.png", "p2.png"]
    assert "Pillow" not in problems_shown(page)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "upload-refused-at-pick.png"))
    assert sent == []  # nothing was uploaded to be refused

    # what is left compares as usual
    page.fill("#prompt", "Two images.")
    page.check("input[name=models][value='tiny-qwen2-vl']")
    page.fill("input[name=max_new_tokens]", "4")
    page.click("button.go:not(.battle-go)")
    wait_until_finished(page, 1)
    assert page.locator(".shown-images .img-name").all_inner_texts() == ["p1.png", "p2.png"]


def exif_turned_jpeg() -> bytes:
    """A photo stored 96×48 (landscape) whose EXIF says: turn 90° clockwise to show it (portrait)."""
    image = Image.new("RGB", (96, 48), (240, 200, 20))
    image.paste((20, 40, 230), (0, 0, 48, 48))  # blue on the stored left: on top once shown upright
    exif = Image.Exif()
    exif[0x0112] = 6
    out = io.BytesIO()
    image.save(out, format="JPEG", exif=exif.tobytes(), quality=95)
    return out.getvalue()


def test_an_exif_turned_photo_and_a_quoted_name_are_shown_as_they_are(picker, upload_server: LiveServer) -> None:
    page = picker
    page.goto("/")
    page.set_input_files("#images", [
        {"name": "portrait.jpg", "mimeType": "image/jpeg", "buffer": exif_turned_jpeg()},
        {"name": 'say "cheese".png', "mimeType": "image/png", "buffer": png_bytes((30, 160, 60))},
    ])
    page.wait_for_function("() => document.querySelectorAll('#thumbs .thumb-item.is-ok').length === 2")
    assert thumbs(page) == ["portrait.jpg", 'say "cheese".png']
    page.fill("#prompt", "Upright?")
    page.check("input[name=models][value='tiny-qwen2-vl']")
    page.fill("input[name=max_new_tokens]", "4")
    page.click("button.go:not(.battle-go)")
    wait_until_finished(page, 1)

    assert page.locator(".shown-images .img-name").all_inner_texts() == ["portrait.jpg", 'say "cheese".png']
    assert page.locator(".shown-images .img-size").all_inner_texts() == ["48×96", "48×40"]  # sized upright
    shown = page.locator(".shown-images img").first
    page.wait_for_function("() => [...document.querySelectorAll('.shown-images img')].every(i => i.complete)")
    assert shown.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [48, 96]  # shown upright
    comparison_id = int(page.url.rsplit("/", 1)[1])
    stored = httpx.get(f"{upload_server.url}/api/comparisons/{comparison_id}").json()
    assert [(i["name"], i["width"], i["height"]) for i in stored["images"]] == [
        ("portrait.jpg", 48, 96), ('say "cheese".png', 48, 40)]
    # the top of the upright photo is the stored left edge: blue
    page.locator(".shown-images a.zoom").first.click()
    page.locator("#lightbox").wait_for(state="visible")
    page.wait_for_function("() => document.getElementById('lightbox-image').complete")
    assert page.evaluate("document.getElementById('lightbox-image').naturalHeight") == 96
    top = page.evaluate("""() => {
        const img = document.getElementById('lightbox-image');
        const canvas = document.createElement('canvas');
        canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
        const ctx = canvas.getContext('2d');
        ctx.drawImage(img, 0, 0);
        return [...ctx.getImageData(24, 10, 1, 1).data.slice(0, 3)];
    }""")
    assert top[2] > 150 and top[0] < 100, top
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "upload-exif-upright.png"))
