"""Per-rater accounts through the real app, real argon2 and real tiny workers (issue 12, defect 13): the
rater is whoever signed in, whatever name a request gives; exports and flag overrides need an admin."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from app.core.settings import Settings
from app.web.accounts import AccessError, hash_secret, read_users, write_users
from app.web.app import create_app
from tests.helpers import png_bytes

pytestmark = pytest.mark.slow  # the battle starts two real tiny workers
SECRETS = {"alice": "alice-secret-1", "bob": 'b;o b=c"é-secret', "root": "root-secret-99"}
MODELS = ["tiny-qwen2-vl", "tiny-llava"]


def users_file(path: Path, admins: tuple[str, ...] = ("root",)) -> Path:
    write_users(path, {name: ("admin" if name in admins else "rater", hash_secret(secret))
                       for name, secret in SECRETS.items()})
    return path


def auth(name: str, secret: str | None = None) -> dict[str, bytes]:
    return {"Authorization": f"Bearer {name}:{secret or SECRETS[name]}".encode()}


def app_with_accounts(tiny_catalog_path: Path, root: Path, **settings: object) -> TestClient:
    values = {"models_path": tiny_catalog_path, "data_dir": root / "data", "budget_gb": 1.2,
              "users_file": users_file(root / "users"), "allowed_hosts": "testserver", **settings}
    return TestClient(create_app(Settings(**values)))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def client(tiny_catalog_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with app_with_accounts(tiny_catalog_path, tmp_path_factory.mktemp("accounts")) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def battle(client: TestClient) -> dict:
    """A battle alice started (claiming to be root) and voted on: its outputs can be rated."""
    response = client.post("/api/battles", headers=auth("alice"), cookies={"rater": "root"},
                           data={"prompt": "Which is red?", "models": MODELS, "max_new_tokens": "3"},
                           files=[("images", ("red.png", png_bytes((220, 20, 20)), "image/png"))])
    assert response.status_code == 201, response.text
    body = response.json()
    assert all(panel["status"] == "done" for panel in body["panels"]), body
    vote = client.post(f"/api/battles/{body['id']}/vote", headers=auth("alice"), json={"winner": "A"})
    assert vote.status_code == 201 and vote.json()["vote_id"] >= 1
    return {**body, "vote_id": vote.json()["vote_id"]}


def test_without_an_account_only_health_static_and_sign_in_answer(client: TestClient) -> None:
    for path in ("/api/pool", "/api/models", "/export/ratings.csv", "/openapi.json"):
        response = client.get(path)
        assert response.status_code == 401, path
        assert response.json()["detail"].startswith("sign in first: send Authorization: Bearer NAME:SECRET")
    page = client.get("/leaderboard?ci=bootstrap", headers={"Accept": "text/html"}, follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/login?next=%2Fleaderboard%3Fci%3Dbootstrap"
    assert client.post("/api/outputs/1/rating", json={"score": 5, "rater": "alice"}).status_code == 401
    assert client.get("/health").status_code == 200
    assert client.get("/static/app.css").status_code == 200
    assert client.get("/login").status_code == 200


@pytest.mark.parametrize("credential", ["alice:wrong-secret", "alice:" + SECRETS["bob"], "mallory:alice-secret-1",
                                        "alice", ":alice-secret-1", "alice-secret-1"])
def test_a_wrong_credential_is_401(client: TestClient, credential: str) -> None:
    response = client.get("/api/pool", headers={"Authorization": f"Bearer {credential}".encode()})
    assert response.status_code == 401 and "sign in first" in response.json()["detail"]
    cookie = client.get("/api/pool", headers={"Cookie": f"vlm_account={quote(credential, safe='')}"})
    assert cookie.status_code == 401


def test_the_rater_is_the_account_not_the_name_sent(client: TestClient, battle: dict) -> None:
    """The attack: bob sends alice's name to replace her rating and her vote."""
    output_id = battle["panels"][0]["output_id"]
    mine = client.post(f"/api/outputs/{output_id}/rating", headers=auth("alice"), json={"score": 5, "note": "good"})
    assert mine.status_code == 201 and mine.json()["rater"] == "alice"
    forged = client.post(f"/api/outputs/{output_id}/rating", headers=auth("bob"),
                         json={"score": 1, "note": "replaced", "rater": "alice"}, cookies={"rater": "alice"})
    assert forged.status_code == 201 and forged.json()["rater"] == "bob"  # a new rating of bob's, not a replacement
    page_form = client.post(f"/outputs/{output_id}/rating", headers=auth("bob"), cookies={"rater": "alice"},
                            data={"score": "2", "note": "from the page", "rater": "alice"}, follow_redirects=False)
    assert page_form.status_code == 303
    vote = client.post(f"/api/battles/{battle['id']}/vote", headers=auth("bob"), json={"winner": "B", "rater": "alice"})
    assert vote.status_code == 201  # bob's own vote, created; alice's stays
    ratings = client.get(f"/api/comparisons/{battle['comparison_id']}", headers=auth("root")).json()
    by_rater = {r["rater"]: (r["score"], r["note"]) for o in ratings["outputs"] if o["id"] == output_id
                for r in o["ratings"]}
    assert by_rater == {"alice": (5, "good"), "bob": (2, "from the page")}
    assert ratings["rater"] == "alice"  # the battle was started by alice, though her cookie said root
    votes = {v["rater"]: v["winner"] for v in client.get(f"/api/battles/{battle['id']}", headers=auth("bob")).json()
             ["votes"]}
    assert votes == {"alice": "A", "bob": "B"}


def test_exports_need_an_admin(client: TestClient, battle: dict) -> None:
    for path in ("/export/ratings.csv", "/export/battles.csv", "/export/battles.jsonl"):
        refused = client.get(path, headers=auth("bob"))
        assert refused.status_code == 403, path
        assert refused.json() == {"detail": "this needs an admin account; bob is a rater"}
        allowed = client.get(path, headers=auth("root"))
        assert allowed.status_code == 200, path
    assert "alice" in client.get("/export/ratings.csv", headers=auth("root")).text


def test_an_admin_flags_and_clears_a_vote_and_the_leaderboard_follows(client: TestClient, battle: dict) -> None:
    vote_id = battle["vote_id"]

    def board() -> dict:
        return client.get("/api/leaderboard", headers=auth("bob")).json()

    def flag(flagged: bool, who: str = "root", reason: str = "") -> dict:
        response = client.post(f"/api/votes/{vote_id}/flag", headers=auth(who),
                               json={"flagged": flagged, "reason": reason})
        assert response.status_code == 200, response.text
        return response.json()

    cleared = flag(False)
    assert cleared["flagged"] is False and cleared["rater"] == "alice" and cleared["flag_reason"] is None
    counted = board()
    flagged = flag(True, reason="alice asked a friend to vote")
    assert flagged == {**cleared, "flagged": True, "flag_reason": "alice asked a friend to vote"}
    left_out = board()
    assert left_out["votes_used"] == counted["votes_used"] - 1
    assert left_out["votes_flagged"] == counted["votes_flagged"] + 1
    with_flagged = client.get("/api/leaderboard?include_flagged=true", headers=auth("bob")).json()
    assert with_flagged["votes_used"] == counted["votes_used"]
    refused = client.post(f"/api/votes/{vote_id}/flag", headers=auth("bob"), json={"flagged": False, "reason": ""})
    assert refused.status_code == 403 and refused.json()["detail"] == "this needs an admin account; bob is a rater"
    assert board()["votes_used"] == left_out["votes_used"]  # bob changed nothing
    flag(False)
    assert board()["votes_used"] == counted["votes_used"]
    missing = client.post("/api/votes/999999/flag", headers=auth("root"), json={"flagged": True, "reason": "x"})
    assert missing.status_code == 404 and missing.json()["detail"] == "vote 999999 not found"


def test_the_sign_in_page_sets_an_encoded_strict_cookie(client: TestClient) -> None:
    wrong = client.post("/login", data={"name": "bob", "secret": "nope", "next": "/leaderboard"})
    assert wrong.status_code == 401 and "wrong name or secret" in wrong.text and "set-cookie" not in wrong.headers
    signed = client.post("/login", data={"name": "bob", "secret": SECRETS["bob"], "next": "//evil.example/x"},
                         follow_redirects=False)
    assert signed.status_code == 303 and signed.headers["location"] == "/"  # never off the site
    cookie = signed.headers["set-cookie"]
    assert cookie.startswith(f"vlm_account={quote('bob:' + SECRETS['bob'], safe='')};")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    page = client.get("/", cookies={"rater": "alice"})  # the cookie jar now carries the sign-in
    assert page.status_code == 200
    assert "signed in as <strong>bob</strong>" in page.text
    assert 'type="hidden" id="rater" name="rater" value="bob"' in page.text  # no name box to type into
    assert 'id="export-link"' not in page.text  # bob may not export
    out = client.post("/logout", follow_redirects=False)
    assert out.status_code == 303 and "vlm_account=;" in out.headers["set-cookie"]
    client.cookies.clear()
    assert client.get("/api/pool").status_code == 401


def test_verified_credentials_are_remembered_and_a_removed_user_is_locked_out(tiny_catalog_path: Path,
                                                                             tmp_path: Path) -> None:
    with app_with_accounts(tiny_catalog_path, tmp_path) as fresh:
        timings = []
        for _ in range(6):
            started = time.perf_counter()
            assert fresh.get("/api/pool", headers=auth("bob")).status_code == 200
            timings.append(time.perf_counter() - started)
        first, cached = timings[0], statistics.median(timings[1:])
        print(f"\nfirst request (argon2 verify) {first * 1000:.1f} ms, cached {cached * 1000:.1f} ms")
        assert cached < first / 3
        path = tmp_path / "users"
        users = read_users(path)
        del users["bob"]
        write_users(path, users)
        assert fresh.get("/api/pool", headers=auth("bob")).status_code == 401
        assert fresh.get("/api/pool", headers=auth("alice")).status_code == 200


def test_a_token_and_a_users_file_together_are_refused(tiny_catalog_path: Path, tmp_path: Path) -> None:
    with pytest.raises(AccessError, match="pick one way in"):
        app_with_accounts(tiny_catalog_path, tmp_path, auth_token="shared-token")
