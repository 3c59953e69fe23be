"""Generated input against a live server: no request may get a 5xx.

1. Schemathesis reads the running app's `/openapi.json` and sends, for every operation, a bounded
   number of inputs that fit the schema (positive) and that break it (negative); every answer must
   be documented: its status code, its content type, and its body's schema.
2. Two operations take bodies the schema does not describe (`POST /api/comparisons` reads a
   multipart form by hand; `POST /v1/chat/completions` reads OpenAI JSON by hand), so Schemathesis
   can only send them empty bodies. Hypothesis fills that gap with hostile forms and chat bodies:
   wrong types, NaN, huge numbers, NUL, non-images named .png, remote image URLs, broken base64.

Nothing is excluded: no operation in the schema streams forever (the page's SSE route is not in it).
The whole module takes well under a minute.
"""

from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis  # the test extra: schemathesis>=4
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.helpers import LiveServer, png_bytes

pytestmark = pytest.mark.slow
EXAMPLES = 25  # per operation and generation mode
MODELS = ["tiny-llava", "tiny-qwen2-vl"]
QUICK = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                 phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
BODIES = settings(QUICK, max_examples=60)  # the hand-read bodies: more examples, each a valid one made hostile
CONFORMANCE = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def fuzz_server(tiny_catalog_path: Path, tmp_path_factory: pytest.TempPathFactory):
    """Its own server, so that generated ratings land in no other test's data; one finished comparison
    (ids 1 and 1–2 exist) so that generated ids sometimes hit real rows."""
    server = LiveServer(tiny_catalog_path, tmp_path_factory.mktemp("fuzz") / "data", budget_gb=1.2)
    response = httpx.post(f"{server.url}/api/comparisons", timeout=120,
                          data={"prompt": "Seed comparison.", "models": MODELS, "max_new_tokens": "3"},
                          files=[("images", ("seed.png", png_bytes((10, 200, 10)), "image/png"))])
    assert response.status_code == 201, response.text
    for output in response.json()["outputs"]:
        httpx.post(f"{server.url}/api/outputs/{output['id']}/rating", json={"score": 3, "rater": "seed"})
    yield server
    server.stop()


SEEN: dict[str, dict[int, int]] = {}  # label → status code → count, printed with -s


def _record(failures: list[str], label: str, response: Any, sent: str) -> None:
    codes = SEEN.setdefault(label, {})
    codes[response.status_code] = codes.get(response.status_code, 0) + 1
    if response.status_code >= 500:
        failures.append(f"{label}: {response.status_code} for {sent[:300]} → {response.text[:300]}")


def _fuzz_operation(strategy: Any, label: str, base_url: str, counts: dict[str, int], failures: list[str]) -> None:
    @QUICK
    @given(case=strategy)
    def exercise(case: Any) -> None:
        response = case.call(base_url=base_url, timeout=60)
        counts[label] = counts.get(label, 0) + 1
        _record(failures, label, response, repr(case))
        try:  # the answer is one the document describes: its status, its type, its body's schema
            case.validate_response(response, checks=CONFORMANCE)
        except Exception as exc:  # schemathesis raises a group of check failures
            failures.append(f"{label}: {response.status_code} does not match the document: "
                            f"{str(exc).strip()[:400]} (body {response.text[:200]!r})")

    exercise()


def test_schemathesis_finds_no_5xx_and_every_answer_matches_the_document(fuzz_server):
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json")
    failures: list[str] = []
    counts: dict[str, int] = {}
    started = time.monotonic()
    for result in schema.get_all_operations():
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _fuzz_operation(operation.as_strategy(generation_mode=mode), label, fuzz_server.url, counts,
                                failures)
            except Unsatisfiable:  # nothing to break: an operation with no parameters has no negative cases
                assert mode == GenerationMode.NEGATIVE, label
    print(f"schemathesis: {sum(counts.values())} requests over {len(counts)} operations: {counts}")
    assert len(counts) >= 10, counts  # every operation in the document was exercised
    assert not failures, "\n".join(failures[:10])
    assert time.monotonic() - started < 120
    assert httpx.get(f"{fuzz_server.url}/health").status_code == 200


# ---------------------------------------------------------------- bodies the schema does not describe


def _gif() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    return buffer.getvalue()


VALID = png_bytes((30, 30, 200))
FILES = st.sampled_from([VALID, VALID[: len(VALID) // 2], b"", b"GIF89a", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64,
                         b"<svg onload=alert(1)>", b"%PDF-1.4", _gif(), "é".encode() * 50])
NAMES = st.one_of(st.sampled_from(["a.png", "../../etc/passwd", "<script>x</script>.png", "", "a" * 300,
                                   "nul\x00.png", "ünï cödé.jpg"]),
                  st.text(min_size=0, max_size=20))
NUMBERS = st.one_of(st.none(), st.sampled_from(["", "1", "3", "0", "-1", "nan", "NaN", "inf", "-inf", "1e309",
                                                "99999999999999999999", "0x10", "3.5", "true", "[]", " 2 "]),
                    st.text(max_size=6))
PROMPTS = st.one_of(st.none(), st.text(max_size=40), st.just("x" * 4001), st.just("  \n "), st.just("a\x00b"),
                    st.just("<script>alert(1)</script> hx-get=/api/pool"))
MODEL_IDS = st.lists(st.one_of(st.sampled_from(MODELS + ["nope", "", "../tiny-llava", "TINY-LLAVA"]),
                               st.text(max_size=10)), max_size=10)


FORM_FIELDS = ["models", "prompt", "max_new_tokens", "temperature", "top_p", "seed", "blind", "images"]


@st.composite
def comparison_forms(draw: st.DrawFn) -> tuple[dict[str, Any], list]:
    """A valid form with none, one or a few fields made hostile, so that inputs reach every check."""
    broken = draw(st.sets(st.sampled_from(FORM_FIELDS), max_size=3))
    data: dict[str, Any] = {"models": draw(MODEL_IDS) if "models" in broken else [draw(st.sampled_from(MODELS))],
                            "max_new_tokens": "2"}
    prompt = draw(PROMPTS) if "prompt" in broken else "Describe the image."
    if prompt is not None:
        data["prompt"] = prompt
    tokens = draw(NUMBERS) if "max_new_tokens" in broken else "2"
    data["max_new_tokens"] = tokens if tokens not in (None, "") else "2"  # never a long answer
    for field in ("temperature", "top_p", "seed", "blind"):
        value = draw(NUMBERS) if field in broken else None
        if value is not None:
            data[field] = value
    if "images" in broken:
        files = [("images", (draw(NAMES), draw(FILES), draw(st.sampled_from(["image/png", "text/html", ""]))))
                 for _ in range(draw(st.integers(0, 10)))]
        if draw(st.booleans()) and not files:
            data["images"] = draw(st.text(max_size=10))  # a text field where a file belongs
    else:
        files = [("images", ("ok.png", VALID, "image/png"))]
    return data, files


def test_hostile_comparison_forms_get_no_5xx(fuzz_server):
    failures: list[str] = []
    before = httpx.get(f"{fuzz_server.url}/api/comparisons").json()["total"]

    @BODIES
    @given(form=comparison_forms())
    def exercise(form: tuple[dict[str, Any], list]) -> None:
        data, files = form
        response = httpx.post(f"{fuzz_server.url}/api/comparisons", data=data, files=files or None, timeout=120)
        _record(failures, "POST /api/comparisons", response, repr(data))
        assert response.status_code in (201, 400, 413, 422), response.text
        if response.status_code != 201:
            assert response.json()["detail"]

    exercise()
    print("forms:", SEEN.get("POST /api/comparisons"))
    for body, content_type in ((b"prompt=hi&models=tiny-llava", "application/x-www-form-urlencoded"),
                               (b'{"prompt": "hi"}', "application/json"),
                               (b"--x\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\nhi",
                                "multipart/form-data"),
                               (b"garbage", "multipart/form-data; boundary=zz"), (b"", "text/plain")):
        response = httpx.post(f"{fuzz_server.url}/api/comparisons", content=body,
                              headers={"Content-Type": content_type}, timeout=30)
        _record(failures, "POST /api/comparisons raw", response, repr(body))
    assert not failures, "\n".join(failures[:10])
    after = httpx.get(f"{fuzz_server.url}/api/comparisons").json()["total"]
    assert after >= before


def _data_url(payload: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(payload).decode()}"


IMAGE_URLS = st.sampled_from([
    _data_url(VALID), _data_url(VALID[:40]), _data_url(b"not an image"), "data:image/png;base64,@@@@",
    "data:image/png,rawbytes", "http://127.0.0.1:1/evil.png", "file:///etc/passwd", "", "data:;base64,",
])


CHAT_FIELDS = ["model", "messages", "content", "max_tokens", "stream", "temperature", "top_p", "seed", "whole"]


@st.composite
def chat_bodies(draw: st.DrawFn) -> Any:
    """A valid chat request with none, one or a few parts made hostile."""
    broken = draw(st.sets(st.sampled_from(CHAT_FIELDS), max_size=3))
    if "whole" in broken:  # not an object at all
        return draw(st.one_of(st.none(), st.integers(), st.text(max_size=10), st.lists(st.integers(), max_size=3)))
    if "content" in broken:
        parts: list[Any] = []
        for _ in range(draw(st.integers(0, 3))):
            parts.append(draw(st.sampled_from([
                {"type": "image_url", "image_url": {"url": draw(IMAGE_URLS)}},
                {"type": "image_url", "image_url": draw(IMAGE_URLS)},
                {"type": "text", "text": draw(st.text(max_size=30))},
                {"type": "text"}, {"type": "audio", "data": "x"}, "just a string", None,
            ])))
        content: Any = draw(st.one_of(st.just(parts), st.text(max_size=20), st.none()))
    else:
        content = [{"type": "text", "text": "What is this?"},
                   {"type": "image_url", "image_url": {"url": _data_url(VALID)}}]
    messages: Any = [{"role": "user", "content": content}]
    if "messages" in broken:
        messages = draw(st.sampled_from([[], "hello", [None], [{"role": "", "content": content}],
                                         [{"role": "system", "content": "x"}], [{"content": content}]]))
    body: dict[str, Any] = {
        "model": draw(st.one_of(st.sampled_from(["nope", "", "../x"]), st.integers(), st.none()))
        if "model" in broken else draw(st.sampled_from(MODELS)),
        "messages": messages,
        "max_tokens": draw(st.one_of(st.sampled_from([0, -1, 10**12, 2**63, "3", None]), st.floats()))
        if "max_tokens" in broken else 2}
    for key, values in (("stream", st.one_of(st.booleans(), st.sampled_from(["yes", None, 1, "false"]))),
                        ("temperature", st.one_of(st.floats(), st.sampled_from(["hot", None]))),
                        ("top_p", st.floats()), ("seed", st.one_of(st.integers(), st.text(max_size=3)))):
        if key in broken:
            body[key] = draw(values)
    return body


def test_hostile_chat_completions_get_no_5xx(fuzz_server):
    failures: list[str] = []

    @BODIES
    @given(body=chat_bodies())
    def exercise(body: Any) -> None:
        text = json.dumps(body, allow_nan=True)
        response = httpx.post(f"{fuzz_server.url}/v1/chat/completions", content=text,
                              headers={"Content-Type": "application/json"}, timeout=120)
        _record(failures, "POST /v1/chat/completions", response, text)

    exercise()
    print("chat:", SEEN.get("POST /v1/chat/completions"))
    for raw in (b"", b"{", b"\xff\xfe", b"[]", b"null", b'{"messages": [{"role": "user", "content": []}]}'):
        response = httpx.post(f"{fuzz_server.url}/v1/chat/completions", content=raw,
                              headers={"Content-Type": "application/json"}, timeout=30)
        _record(failures, "POST /v1/chat/completions raw", response, repr(raw))
    assert not failures, "\n".join(failures[:10])


def test_a_remote_image_url_is_refused_and_never_fetched(fuzz_server):
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(0.5)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/cat.png"
        body = {"model": MODELS[0], "max_tokens": 2, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": url}}]}]}
        response = httpx.post(f"{fuzz_server.url}/v1/chat/completions", json=body, timeout=30)
        assert response.status_code == 400 and "only data: URLs" in response.text, response.text
        with pytest.raises(TimeoutError):
            listener.accept()  # nobody came to fetch it


HUGE = 2**64  # past SQLite's 64-bit integers


@pytest.mark.parametrize(("method", "path", "body"), [
    ("GET", f"/api/comparisons/{HUGE}", None),
    ("GET", f"/api/comparisons?offset={HUGE}", None),
    ("POST", f"/api/outputs/{HUGE}/rating", {"json": {"score": 3}}),
    ("GET", f"/comparisons/{HUGE}", None),
    ("GET", f"/comparisons/{HUGE}/events", None),
    ("POST", f"/outputs/{HUGE}/rating", {"data": {"score": "3"}}),
    ("GET", "/api/comparisons/-1", None),
    ("GET", "/comparisons/0", None),
])
def test_ids_out_of_range_are_4xx_on_every_route(fuzz_server, method, path, body):
    """Page routes are not in the OpenAPI document, so they are checked here by hand."""
    response = httpx.request(method, f"{fuzz_server.url}{path}", timeout=30, **(body or {}))
    assert 400 <= response.status_code < 500, f"{response.status_code}: {response.text[:200]}"


def test_a_history_page_past_the_end_is_not_an_error(fuzz_server):
    response = httpx.get(f"{fuzz_server.url}/history", params={"page": HUGE}, timeout=30)
    assert response.status_code in (200, 404, 422), f"{response.status_code}: {response.text[:200]}"
