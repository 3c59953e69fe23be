"""Headers, cross-site refusal and the access token, through the real app (no model is loaded)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.core.settings import Settings
from app.web.app import create_app


def client(tiny_catalog_path: Path, tmp_path: Path, **settings) -> TestClient:
    settings.setdefault("allowed_hosts", "testserver")  # the TestClient's Host
    app = create_app(Settings(models_path=tiny_catalog_path, data_dir=tmp_path / "data", budget_gb=1.2, **settings))
    return TestClient(app)


@pytest.fixture
def open_client(tiny_catalog_path, tmp_path):
    with client(tiny_catalog_path, tmp_path) as c:
        yield c


def test_every_answer_carries_the_security_headers(open_client):
    for path in ("/", "/api/pool", "/health", "/static/app.css", "/no-such-page"):
        headers = open_client.get(path).headers
        csp = headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "same-origin"


@pytest.mark.parametrize("headers", [
    {"Origin": "http://evil.example"},
    {"Origin": "null"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site", "Origin": "http://sub.testserver"},
])
def test_cross_site_writes_are_refused(open_client, headers):
    response = open_client.post("/api/outputs/1/rating", json={"score": 3}, headers=headers)
    assert response.status_code == 403 and "cross-site" in response.json()["detail"]


@pytest.mark.parametrize("headers", [{}, {"Origin": "http://testserver"}, {"Sec-Fetch-Site": "same-origin"}])
def test_same_site_and_script_writes_pass_the_check(open_client, headers):
    response = open_client.post("/api/outputs/999/rating", json={"score": 3}, headers=headers)
    assert response.status_code == 404  # reached the handler: no such output


def test_nothing_changes_state_on_get(open_client):
    """Every route that writes answers only POST; a GET to it changes nothing (405)."""
    paths = open_client.app.openapi()["paths"]
    writers = {path for path, methods in paths.items() if "post" in methods}
    assert {"/api/comparisons", "/api/outputs/{output_id}/rating", "/v1/chat/completions"} <= writers
    for path in ("/api/outputs/1/rating", "/v1/chat/completions", "/compare"):
        assert open_client.get(path).status_code == 405, path


def test_access_token_is_required_when_set(tiny_catalog_path, tmp_path):
    with client(tiny_catalog_path, tmp_path, auth_token="s3cret") as c:
        assert c.get("/api/pool").status_code == 401
        assert c.get("/health").status_code == 200  # for health checks
        assert c.get("/api/pool", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/api/pool", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        page = c.get("/?token=s3cret")
        assert page.status_code == 200 and "vlm_token=s3cret" in page.headers["set-cookie"]
        assert c.get("/api/pool").status_code == 200  # the cookie now carries it


def test_request_body_over_the_limit_is_refused_while_reading(open_client):
    limit = open_client.app.state.services.settings.limits.max_request_bytes

    def body():
        chunk = b"x" * (1024 * 1024)
        for _ in range(limit // len(chunk) + 2):
            yield chunk

    # no Content-Length: the body is counted as it arrives
    response = open_client.post("/api/comparisons", content=body(),
                                headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert response.status_code == 413 and "50 MB" in response.json()["detail"]


def test_lying_content_length_does_not_help(open_client):
    response = open_client.post("/api/comparisons", content=b"x" * 10,
                                headers={"Content-Length": str(60 * 1024 * 1024),
                                         "Content-Type": "multipart/form-data; boundary=x"})
    assert response.status_code == 413


def test_a_query_token_becomes_a_cookie_only_when_it_is_right(tiny_catalog_path, tmp_path):
    with client(tiny_catalog_path, tmp_path, auth_token="s3cret") as c:
        forged = c.get("/api/pool", params={"token": "attacker; Path=/api"}, headers={"Authorization": "Bearer s3cret"})
        assert forged.status_code == 200 and "set-cookie" not in forged.headers


def test_too_many_files_is_413_naming_the_limit(open_client):
    files = [("images", (f"{i}.png", b"x", "image/png")) for i in range(40)]
    response = open_client.post("/api/comparisons", data={"prompt": "hi", "models": "tiny-llava"}, files=files)
    assert response.status_code == 413
    assert response.json()["field"] == "images" and "the limit is 8 images" in response.json()["detail"]


def test_control_characters_in_a_rater_name_are_dropped(open_client):
    from starlette.requests import Request

    from app.web.deps import rater_of

    def request(cookie: str) -> Request:
        scope = {"type": "http", "headers": [(b"cookie", cookie.encode())], "app": open_client.app}
        return Request(scope)

    assert rater_of(request("rater=x%00y"), None) == "xy"
    assert rater_of(request(""), "bob\x00\n") == "bob"
    assert rater_of(request(""), "\x00") == "anonymous"
