"""The page's routes through FastAPI's TestClient against the real app on the tiny catalogue.

Most tests store comparisons directly (no model runs); the ones that start real workers are marked slow.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from app.core.settings import Settings
from app.storage import comparisons, outputs
from app.storage.comparisons import OutputInput, StoredImageInput
from tests.helpers import CATALOGUE, png_bytes

HX = {"HX-Request": "true"}
SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(2)>"
HXGET = '<div hx-get="/x" hx-trigger="load">'
HOSTILE = f"{SCRIPT}{IMG}{HXGET}"
HOSTILE_NAME = "<img src=x onerror=alert(3)>.png"
RAW_MARKERS = ("<script>alert", "<img src=x", 'hx-get="/x"', "onerror=alert(3)>")


@pytest.fixture(scope="module")
def catalog_path(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny catalogue plus one unavailable, one unreachable and one too-large model."""
    data = yaml.safe_load((tiny_dir / "models.yaml").read_text())
    for entry in data["models"]:
        entry["repo"] = str(tiny_dir / entry["repo"][2:])
    data["models"] += [
        {"id": "gone", "name": "Gone <b>model</b>", "available": False,
         "unavailable_reason": "withdrawn by its <i>authors</i>"},
        {"id": "no-weights", "repo": str(tiny_dir / "does-not-exist"), "family": "llava", "min_gpu_gb": 0.5,
         "tiny": True},
        {"id": "huge", "name": "Huge", "repo": str(tiny_dir / "llava"), "family": "llava", "min_gpu_gb": 80,
         "languages": ["en", "zh", "fr"], "scores": {"mmmu": 41.1, "docvqa": 90.1}},
    ]
    path = tmp_path_factory.mktemp("web-catalog") / "models.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def client(catalog_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    from app.web.app import create_app

    data_dir = tmp_path_factory.mktemp("web") / "data"
    app = create_app(Settings(models_path=catalog_path, data_dir=data_dir, budget_gb=1.2,
                              allowed_hosts="testserver"))  # the TestClient's Host
    with TestClient(app) as test_client:
        yield test_client


def stored(client: TestClient, prompt: str = "What is this?", models=("tiny-qwen2-vl", "tiny-llava"),
           name: str = "cat.png", text: str = "An answer.", status: str = "done", blind: bool = False) -> dict:
    """A finished comparison written straight to the store (no model runs)."""
    state = client.app.state.services
    image = StoredImageInput(name, png_bytes((200, 30, 30)), "PNG", 48, 40)
    params = {"max_new_tokens": 16, "temperature": 0.0, "top_p": 1.0, "seed": 0}
    created = comparisons.create_comparison(state.engine, state.settings.data_dir, prompt, params, "ann", blind,
                                            [image], [OutputInput(model, repo=f"org/{model}") for model in models])
    for output_id in created.output_ids:
        outputs.finish_output(state.engine, output_id, status=status, text=text, ttft_s=0.1, total_s=0.5, tokens=5,
                            error="it broke" if status == "error" else None)
    return comparisons.get_comparison(state.engine, created.id)


def assert_escaped(html: str) -> None:
    for marker in RAW_MARKERS:
        assert marker not in html, marker


def sse_events(client: TestClient, comparison_id: int) -> list[tuple[str, str]]:
    """(event, data) pairs of a comparison's stream, read to its end."""
    events, name, data = [], None, []
    with client.stream("GET", f"/comparisons/{comparison_id}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
            elif line == "" and name:
                events.append((name, "\n".join(data)))
                name, data = None, []
    return events


def comparison_count(client: TestClient) -> int:
    return comparisons.count_comparisons(client.app.state.services.engine)


# ---------------------------------------------------------------- the page


def test_page_lists_every_model_with_its_figures_and_badges(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    text = page.text
    assert '<meta name="htmx-config"' in text and '"selfRequestsOnly":true' in text
    assert '"allowScriptTags":false' in text and '"allowEval":false' in text and '"historyCacheSize":0' in text
    for model in ("tiny-qwen2-vl", "tiny-idefics3", "tiny-paligemma", "tiny-llava"):
        assert f'value="{model}"' in text
    assert text.count("random-weight demo</span>") == 9  # the eight tiny models and no-weights
    assert "0.50 GB" in text and "ms-fits" in text
    # unavailable, unreachable and too-large models are shown, disabled, with the reason (escaped)
    assert re.search(r'value="gone" disabled', text)
    assert "withdrawn by its &lt;i&gt;authors&lt;/i&gt;" in text and "Gone &lt;b&gt;model&lt;/b&gt;" in text
    assert re.search(r'value="no-weights" disabled', text) and "no checkpoint at" in text
    assert re.search(r'value="huge" disabled', text) and "ms-too-large" in text
    assert "the pool&#39;s budget is 1.2 GB" in text
    assert "mmmu 41.1" in text and "docvqa 90.1" in text and "en zh fr" in text
    assert client.app.state.services.settings.limits.help_text().replace("'", "&#39;") in text
    assert "pool 0.0 / 1.2 GB · 0 resident" in text
    assert 'href="/export/ratings.csv"' in text and 'href="/history"' in text


def test_page_has_no_inline_script_style_or_handlers(client: TestClient) -> None:
    stored(client, prompt="inline check")
    for url in ("/", "/history", f"/comparisons/{comparison_count(client)}"):
        page = client.get(url).text
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page), url
        assert not re.search(r"\sstyle=", page), url
        assert not re.search(r"\son[a-z]+=", page), url
        assert "<style" not in page, url


def test_static_files_are_versioned_and_served(client: TestClient) -> None:
    page = client.get("/").text
    scripts = re.findall(r'<script src="([^"]+)"', page)
    assert scripts == ["/static/htmx-2.0.11.min.js", "/static/htmx-ext-sse-2.2.4.min.js", "/static/app.js"]
    for url in [*scripts, "/static/app.css"]:
        assert client.get(url).status_code == 200, url
    app_js = client.get("/static/app.js").text
    assert "innerHTML" not in app_js.replace("no innerHTML", "") and "eval(" not in app_js


# ---------------------------------------------------------------- hostile content


def test_hostile_prompt_file_name_and_output_are_escaped_everywhere(client: TestClient) -> None:
    comparison = stored(client, prompt=HOSTILE, name=HOSTILE_NAME, text=f"{SCRIPT} and {HXGET}")
    page = client.get(f"/comparisons/{comparison['id']}")
    assert page.status_code == 200
    assert_escaped(page.text)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "&lt;img src=x onerror=alert(3)&gt;.png" in page.text
    assert "&lt;div hx-get=&#34;/x&#34; hx-trigger=&#34;load&#34;&gt;" in page.text
    assert "sse-connect" not in page.text  # finished: nothing to stream
    history = client.get("/history")
    assert_escaped(history.text)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in history.text
    fragment = client.get(f"/comparisons/{comparison['id']}", headers=HX)
    assert_escaped(fragment.text)
    assert "<html" not in fragment.text and 'class="comparison"' in fragment.text


def test_stream_sends_text_as_json_and_fragments_escaped(client: TestClient) -> None:
    comparison = stored(client, prompt=HOSTILE, text=f"{SCRIPT}\n  {IMG}")
    events = sse_events(client, comparison["id"])
    names = [name for name, _ in events]
    first = comparison["outputs"][0]["id"]
    assert names[-1] == "end"
    assert f"state-{first}" in names and f"foot-{first}" in names
    texts = [json.loads(data) for name, data in events if name == f"text-{first}"]
    assert texts == [{"set": f"{SCRIPT}\n  {IMG}"}]  # exact, and only ever as JSON for textContent
    for name, data in events:
        if not name.startswith("text-"):
            assert_escaped(data)
    foot = dict(events)[f"foot-{first}"]
    assert 'hx-post="/outputs/' in foot and "TTFT 0.10 s" in foot
    assert client.get("/comparisons/999999/events").status_code == 404


@pytest.mark.slow
def test_compare_from_the_page_streams_and_escapes(client: TestClient) -> None:
    before = comparison_count(client)
    files = [("images", (HOSTILE_NAME, png_bytes((0, 0, 250)), "image/png")),
             ("images", ("two.png", png_bytes((0, 250, 0)), "image/png"))]
    data = {"prompt": HOSTILE, "models": ["tiny-qwen2-vl", "tiny-paligemma"], "max_new_tokens": "4",
            "temperature": "0", "seed": "1", "rater": "Zoë"}
    response = client.post("/compare", data=data, files=files, headers=HX)
    assert response.status_code == 200, response.text
    comparison_id = before + 1
    assert comparison_count(client) == comparison_id
    assert response.headers["HX-Push-Url"] == f"/comparisons/{comparison_id}"
    assert_escaped(response.text)
    assert f'sse-connect="/comparisons/{comparison_id}/events"' in response.text
    assert 'id="error-prompt" class="field-error" aria-live="polite" hx-swap-oob="true"></p>' in response.text
    assert "rater=Zo%C3%AB" in response.headers["set-cookie"]
    events = sse_events(client, comparison_id)
    assert events[-1][0] == "end"
    stored_comparison = comparisons.get_comparison(client.app.state.services.engine, comparison_id)
    assert stored_comparison["rater"] == "Zoë"
    for output in stored_comparison["outputs"]:
        assert output["status"] == "done", output
        pieces = [json.loads(d) for n, d in events if n == f"text-{output['id']}"]
        streamed = "".join(p.get("set", "") + p.get("append", "") for p in pieces)
        assert streamed == output["text"]
        assert f"foot-{output['id']}" in [n for n, _ in events]
    page = client.get(f"/comparisons/{comparison_id}").text
    assert "sse-connect" not in page and "combined into one 2×1 grid" in page
    assert_escaped(page)


# ---------------------------------------------------------------- refusals next to their field


@pytest.mark.parametrize(("data", "files", "status", "slot", "words"), [
    ({"prompt": "   ", "models": ["tiny-llava"]}, None, 422, "prompt", "must not be blank"),
    ({"prompt": "hi", "models": ["nope"]}, None, 422, "models", "unknown model 'nope'"),
    ({"prompt": "hi", "models": []}, None, 422, "models", "pick at least one model"),
    ({"prompt": "hi", "models": ["gone"]}, None, 422, "models", "gone is unavailable"),
    ({"prompt": "hi", "models": ["tiny-llava"], "temperature": "5"}, None, 422, "temperature", "between 0.0 and 2.0"),
    ({"prompt": "hi", "models": ["tiny-llava"], "max_new_tokens": "lots"}, None, 422, "max_new_tokens",
     "must be a number"),
    ({"prompt": "hi", "models": ["tiny-llava"]}, [("images", ("notes.png", b"not an image", "image/png"))], 422,
     "images", "notes.png is not a readable image"),
    ({"prompt": "hi", "models": ["tiny-llava"]}, [("images", (f"i{n}.png", png_bytes((n, 0, 0)), "image/png"))
                                                 for n in range(9)], 413, "images", "the limit is 8"),
    ({"prompt": "hi", "models": ["tiny-llava"]}, [], 422, "images", "add at least one image"),
])
def test_bad_input_is_shown_next_to_its_field_and_nothing_is_stored(client, data, files, status, slot, words):
    before = comparison_count(client)
    if files is None:
        files = [("images", ("ok.png", png_bytes((9, 9, 9)), "image/png"))]
    response = client.post("/compare", data=data, files=files or None, headers=HX)
    assert response.status_code == status, response.text
    assert response.headers["HX-Reswap"] == "none"
    message = re.search(rf'<p id="error-{slot}" class="field-error"[^>]*hx-swap-oob="true">([^<]*)</p>',
                        response.text)
    assert message and words in html.unescape(message.group(1)), response.text
    others = re.findall(r'<p id="error-([a-z_]+)" class="field-error"[^>]*>([^<]+)</p>', response.text)
    assert [name for name, _ in others] == [slot]
    assert comparison_count(client) == before


def test_bad_input_without_htmx_renders_the_page_with_the_message_and_the_values(client: TestClient) -> None:
    before = comparison_count(client)
    files = [("images", (HOSTILE_NAME, b"GIF89a broken", "image/gif"))]
    response = client.post("/compare", data={"prompt": HOSTILE, "models": ["tiny-llava"]}, files=files)
    assert response.status_code == 422
    assert "<html" in response.text
    assert re.search(r'<p id="error-images" class="field-error"[^>]*>[^<]*is not a readable image', response.text)
    assert f"{HOSTILE_NAME.replace('<', '&lt;').replace('>', '&gt;')} is not a readable image" in response.text
    assert_escaped(response.text)
    assert re.search(r'value="tiny-llava" checked', response.text)
    assert comparison_count(client) == before


# ---------------------------------------------------------------- ratings


def test_rating_is_saved_changed_and_refused_with_the_field_named(client: TestClient) -> None:
    comparison = stored(client)
    output_id = comparison["outputs"][0]["id"]
    url = f"/outputs/{output_id}/rating"
    saved = client.post(url, data={"score": "4", "note": f'comma, "quotes" ünï {SCRIPT}', "rater": "Bea"},
                        headers=HX)
    assert saved.status_code == 200
    assert "saved" in saved.text and f'id="score-{output_id}-4" class="star-input" checked' in saved.text
    assert_escaped(saved.text)
    assert "comma, &#34;quotes&#34; ünï &lt;script&gt;" in saved.text
    assert "rater=Bea" in saved.headers["set-cookie"]
    changed = client.post(url, data={"score": "2", "note": "", "rater": "Bea"}, headers=HX)
    assert changed.status_code == 200 and f'id="score-{output_id}-2" class="star-input" checked' in changed.text
    ratings = comparisons.get_comparison(client.app.state.services.engine, comparison["id"])["outputs"][0]["ratings"]
    assert [(r["score"], r["note"], r["rater"]) for r in ratings] == [(2, "", "Bea")]
    for score in ("7", "0", "abc", ""):
        refused = client.post(url, data={"score": score, "note": "kept", "rater": "Bea"}, headers=HX)
        assert refused.status_code == 422, score
        assert "score:" in refused.text and ("1 to 5" in refused.text), refused.text
        assert ">kept</textarea>" in refused.text
    long_note = client.post(url, data={"score": "3", "note": "x" * 10_001, "rater": "Bea"}, headers=HX)
    assert long_note.status_code == 422 and "note: at most 10000 characters" in long_note.text
    ratings = comparisons.get_comparison(client.app.state.services.engine, comparison["id"])["outputs"][0]["ratings"]
    assert [(r["score"], r["rater"]) for r in ratings] == [(2, "Bea")]
    assert client.post("/outputs/999999/rating", data={"score": "3"}, headers=HX).status_code == 404


def test_rater_cookie_names_the_rater_on_the_page_and_in_ratings(client: TestClient) -> None:
    response = client.post("/rater", data={"rater": "Zoë 李"})
    assert response.status_code == 204 and "rater=Zo%C3%AB%20%E6%9D%8E" in response.headers["set-cookie"]
    client.cookies.set("rater", "Zo%C3%AB%20%E6%9D%8E")
    try:
        assert 'value="Zoë 李"' in client.get("/").text
        comparison = stored(client)
        output_id = comparison["outputs"][0]["id"]
        assert client.post(f"/outputs/{output_id}/rating", data={"score": "5"}, headers=HX).status_code == 200
        engine = client.app.state.services.engine
        rating = comparisons.get_comparison(engine, comparison["id"])["outputs"][0]["ratings"][0]
        assert rating["rater"] == "Zoë 李"
    finally:
        client.cookies.clear()


def test_blind_panels_hide_names_until_rated(client: TestClient) -> None:
    comparison = stored(client, blind=True, models=("tiny-qwen2-vl", "tiny-llava", "tiny-paligemma"))
    page = client.get(f"/comparisons/{comparison['id']}").text
    panels = re.findall(r'<h3 class="panel-name" id="name-(\d+)">([^<]*)', page)
    assert [label for _, label in panels] == ["Model A ", "Model B ", "Model C "]
    for name in ("Tiny Qwen2-VL", "Tiny LLaVA-1.5", "Tiny PaliGemma"):
        assert f">{name}<" not in page.split('id="results"')[1]
    output_id = int(panels[1][0])
    model = next(o["model"] for o in comparison["outputs"] if o["id"] == output_id)
    rated = client.post(f"/outputs/{output_id}/rating", data={"score": "3", "rater": "Cy"}, headers=HX)
    assert rated.status_code == 200
    reveal = re.search(rf'<h3 class="panel-name" id="name-{output_id}" hx-swap-oob="true">([^<]*)', rated.text)
    name = {"tiny-qwen2-vl": "Tiny Qwen2-VL", "tiny-llava": "Tiny LLaVA-1.5", "tiny-paligemma": "Tiny PaliGemma"}
    assert reveal and reveal.group(1).strip() == name[model]
    client.cookies.set("rater", "Cy")
    try:
        again = client.get(f"/comparisons/{comparison['id']}").text
        assert f'id="name-{output_id}">{name[model]}' in again and again.count("(hidden until rated)") == 2
    finally:
        client.cookies.clear()
    history = client.get("/history").text  # the history does not give the unrated ones away either
    entry = next(item for item in history.split('<li class="history-item">')
                 if f">Comparison {comparison['id']}<" in item)
    assert entry.count("hidden until rated") == 2 and name[model] in entry
    assert sum(label in entry for label in name.values()) == 1


# ---------------------------------------------------------------- history, pool, images


def test_history_pages_through_comparisons(client: TestClient) -> None:
    for n in range(21):
        stored(client, prompt=f"history prompt {n}")
    first = client.get("/history")
    assert first.status_code == 200
    assert first.text.count('class="history-item"') == 20
    older = re.search(r'hx-get="(/history\?before=(\d+))"', first.text)  # keyset: below the page's last id
    assert older and "history prompt 20" in first.text and "history prompt 0" not in first.text
    assert "/images/" in first.text and "Tiny Qwen2-VL" in first.text
    second = client.get(older.group(1), headers=HX)
    assert "<html" not in second.text and 'class="history-item"' in second.text
    assert "history prompt 0" in second.text and "history prompt 20" not in second.text


def test_history_shows_ratings(client: TestClient) -> None:
    comparison = stored(client, prompt="rated in history")
    client.post(f"/outputs/{comparison['outputs'][0]['id']}/rating", data={"score": "4", "rater": "Dee"}, headers=HX)
    page = client.get("/history").text
    item = page.split("rated in history")[0].rsplit('class="history-item"', 1)[1]
    assert "1 rating" in item
    after = page.split("rated in history")[1].split("</li>\n</ul>")[0]
    assert "★ 4.0" in after


def test_pool_fragment_polls_itself_and_updates_model_states(client: TestClient) -> None:
    plain = client.get("/pool")
    assert plain.status_code == 200
    assert 'hx-get="/pool" hx-trigger="every 4s, pool-changed from:body"' in plain.text
    assert "hx-swap-oob" not in plain.text
    assert "GB ·" in plain.text and "resident" in plain.text
    polled = client.get("/pool?picker=1", headers=HX).text
    assert re.search(r'<span id="model-state-0" class="state-badge ms-[a-z-]+" hx-swap-oob="true"', polled)
    assert 'hx-get="/pool?picker=1"' in polled
    assert "hx-swap-oob" not in client.get("/pool", headers=HX).text  # a page without the picker gets none


def test_image_route_serves_stored_files_by_hash_only(client: TestClient) -> None:
    comparison = stored(client, name=HOSTILE_NAME)
    sha = comparison["images"][0]["sha256"]
    response = client.get(f"/images/{sha}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.content == png_bytes((200, 30, 30))
    assert client.get(f"/images/{'0' * 64}").status_code == 404
    assert client.get("/images/..%2F..%2Fplayground.db").status_code == 404
    assert client.get(f"/images/{sha.upper()}").status_code == 404


def test_unknown_comparison_page_is_404(client: TestClient) -> None:
    response = client.get("/comparisons/999999")
    assert response.status_code == 404 and "There is no comparison 999999." in response.text


@pytest.mark.slow
def test_compare_without_htmx_redirects_to_the_comparison_page(client: TestClient) -> None:
    files = [("images", ("a.png", png_bytes((1, 2, 3)), "image/png"))]
    response = client.post("/compare", data={"prompt": "hello", "models": ["tiny-qwen2-vl"], "max_new_tokens": "2"},
                           files=files, follow_redirects=False)
    assert response.status_code == 303
    comparison_id = int(response.headers["location"].rsplit("/", 1)[1])
    assert sse_events(client, comparison_id)[-1][0] == "end"
    page = client.get(f"/comparisons/{comparison_id}")
    assert page.status_code == 200 and "done" in page.text and "hello</textarea>" in page.text


@pytest.mark.slow
def test_a_comparison_the_page_left_is_stopped(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """When no page follows a comparison it started, its answers stop (and free their workers)."""
    import time

    monkeypatch.setattr(client.app.state.services.runner, "abandon_after_s", 0.2)
    files = [("images", ("a.png", png_bytes((1, 2, 3)), "image/png"))]
    data = {"prompt": "go on and on", "models": ["tiny-qwen2-vl"], "max_new_tokens": "2048"}
    assert client.post("/compare", data=data, files=files, headers=HX).status_code == 200
    comparison_id = comparison_count(client)
    with client.stream("GET", f"/comparisons/{comparison_id}/events") as response:
        for line in response.iter_lines():
            if line.startswith("event: state-"):
                break
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        output = comparisons.get_comparison(client.app.state.services.engine, comparison_id)["outputs"][0]
        if output["status"] not in ("queued", "loading", "generating"):
            break
        time.sleep(0.2)
    assert output["status"] == "interrupted", output
    assert "the browser went away" in output["error"]


def test_an_empty_answer_says_why_instead_of_leaving_the_panel_blank(client: TestClient) -> None:
    comparison = stored(client, text="", models=("tiny-paligemma",))
    outputs.update_output(client.app.state.services.engine, comparison["outputs"][0]["id"], tokens=1)
    page = client.get(f"/comparisons/{comparison['id']}").text
    assert "The model returned an empty answer: its first token was end-of-text" in page
    assert "which random weights often do" in page  # a tiny demo model
    assert "empty answer" not in client.get(f"/comparisons/{stored(client)['id']}").text


def test_the_panel_and_the_api_say_which_settings_were_really_applied(client: TestClient) -> None:
    comparison = stored(client, models=("tiny-qwen2-vl",))
    applied = {"max_new_tokens": 16, "temperature": 0.0, "top_p": 1.0, "seed": None, "decoding": "greedy",
               "notes": ["greedy only: temperature 0.8 and top_p 0.9 ignored"]}
    outputs.update_output(client.app.state.services.engine, comparison["outputs"][0]["id"], params=applied)
    page = client.get(f"/comparisons/{comparison['id']}").text
    assert "greedy only: temperature 0.8 and top_p 0.9 ignored" in page
    body = client.get(f"/api/comparisons/{comparison['id']}").json()
    assert body["outputs"][0]["params"] == applied


def test_model_cards_show_what_a_model_cannot_do(client: TestClient, catalog_path: Path) -> None:
    from app.core.catalog import load_catalog
    from app.web.views import capability_badges

    catalog = load_catalog(CATALOGUE)
    assert ("greedy only", "this model decodes greedily: temperature and top_p are ignored") in \
        capability_badges(catalog.get("moondream2"))
    assert capability_badges(catalog.get("llava-1.5-7b"))[0][0] == "4k ctx"
    page = client.get("/").text
    assert 'title="context of 4,096 tokens for the prompt, its images and the answer">4k ctx</span>' in page
