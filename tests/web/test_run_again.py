"""Issue 14 item 1 (the API side): a comparison run again with the stored images, sent by hash, not re-uploaded."""

from __future__ import annotations

import httpx

from tests.helpers import png_bytes


def test_a_comparison_runs_again_on_its_stored_images(live_server):
    files = [("images", ("red.png", png_bytes((220, 20, 20)), "image/png")),
             ("images", ("green.png", png_bytes((20, 200, 20)), "image/png"))]
    first = httpx.post(f"{live_server.url}/api/comparisons", files=files, timeout=300,
                       data={"prompt": "Describe.", "models": ["tiny-llava"], "max_new_tokens": "2"})
    assert first.status_code == 201, first.text
    stored = first.json()["images"]
    shas = [image["sha256"] for image in stored]
    again = httpx.post(f"{live_server.url}/api/comparisons", timeout=300,
                       data={"prompt": "Describe again.", "models": ["tiny-qwen2-vl"], "max_new_tokens": "2",
                             "reuse_images": shas[1:], "reuse_names": ["green.png"]},
                       files=[("images", ("blue.png", png_bytes((20, 20, 220)), "image/png"))])
    assert again.status_code == 201, again.text
    images = again.json()["images"]
    assert [image["name"] for image in images] == ["green.png", "blue.png"]  # one kept, one removed, one added
    assert images[0]["sha256"] == shas[1]
    assert again.json()["outputs"][0]["status"] == "done"


def test_reused_images_that_are_not_there_are_refused_by_name(live_server):
    data = {"prompt": "Describe.", "models": ["tiny-llava"], "max_new_tokens": "2"}
    missing = httpx.post(f"{live_server.url}/api/comparisons", timeout=60, data={**data, "reuse_images": "a" * 64})
    assert missing.status_code == 404 and "is not on this server" in missing.json()["detail"]
    bad = httpx.post(f"{live_server.url}/api/comparisons", timeout=60, data={**data, "reuse_images": "../../etc"})
    assert bad.status_code == 422 and "not an image's SHA-256" in bad.json()["detail"]
    before = httpx.get(f"{live_server.url}/api/comparisons", params={"limit": 1}, timeout=10).json()["total"]
    assert before == httpx.get(f"{live_server.url}/api/comparisons", timeout=10).json()["total"]
