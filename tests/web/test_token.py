"""The shared access token: any token survives the cookie (defect 10); it comes from a file or the
environment, never a flag that `ps` shows (defect 6)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from app.cli.main import build_parser
from app.core.settings import Settings
from app.web.app import create_app
from app.web.security import parse_cookies
from tests.helpers import ROOT

ODD_TOKENS = ['a;b c=d"é', "x, y=z; Path=/api", '"quoted"', "%41 plus+sign"]


def token_client(tiny_catalog_path: Path, tmp_path: Path, token: str) -> TestClient:
    settings = Settings(models_path=tiny_catalog_path, data_dir=tmp_path / "data", auth_token=token,
                        allowed_hosts="testserver")
    return TestClient(create_app(settings))


@pytest.mark.parametrize("token", ODD_TOKENS)
def test_a_token_with_separators_survives_the_cookie_login(tiny_catalog_path: Path, tmp_path: Path,
                                                            token: str) -> None:
    with token_client(tiny_catalog_path, tmp_path, token) as client:
        assert client.get("/api/pool").status_code == 401
        page = client.get(f"/?token={quote(token, safe='')}")
        assert page.status_code == 200
        cookie = page.headers["set-cookie"]
        assert cookie.startswith(f"vlm_token={quote(token, safe='')};") and "HttpOnly" in cookie
        assert client.get("/api/pool").status_code == 200  # the cookie alone lets the page in now
        client.cookies.clear()
        assert client.get("/api/pool").status_code == 401


def test_one_odd_cookie_does_not_hide_the_token(tiny_catalog_path: Path, tmp_path: Path) -> None:
    """SimpleCookie drops the whole header over one malformed cookie; the page's other cookies must not matter."""
    token = ODD_TOKENS[0]
    with token_client(tiny_catalog_path, tmp_path, token) as client:
        header = f'junk="unterminated; ={{}}; rater=bob%20o; vlm_token={quote(token, safe="")}; x'
        assert client.get("/api/pool", headers={"Cookie": header}).status_code == 200
        wrong = f'junk="unterminated; vlm_token={quote(token[:-1], safe="")}'
        assert client.get("/api/pool", headers={"Cookie": wrong}).status_code == 401
        bearer = f"Bearer {token}".encode()  # a script sends the token raw, in UTF-8
        assert client.get("/api/pool", headers={"Authorization": bearer}).status_code == 200


def test_cookie_parsing_keeps_every_well_formed_cookie() -> None:
    assert parse_cookies('a=1; junk="x; b="two words"; c=%3B%20; =d; e') == {"a": "1", "junk": '"x', "b": "two words",
                                                                           "c": "; "}


def test_the_token_is_no_longer_a_flag(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("serve", "demo"):
        with pytest.raises(SystemExit) as exited:
            build_parser().parse_args([command, "--auth-token", "s3cret"])
        assert exited.value.code == 2
        assert "--auth-token is gone: a token on the command line shows in ps" in capsys.readouterr().err


def serve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", "serve", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})


def test_a_token_file_that_cannot_work_is_one_line_naming_it(tmp_path: Path) -> None:
    empty = tmp_path / "empty-token"
    empty.write_text("\n\n")
    unreadable = tmp_path / "a-directory"
    unreadable.mkdir()
    for path, why in ((tmp_path / "missing", "does not exist"), (empty, "is empty"), (unreadable, "cannot be read")):
        result = serve("--auth-token-file", str(path), "--data-dir", str(tmp_path / "data"))
        assert result.returncode == 2
        assert result.stderr.strip() == f"error: token file {path} {why}" + (
            ": its first line must be the access token" if why == "is empty" else
            " (Is a directory)" if why == "cannot be read" else "")
        assert "Traceback" not in result.stderr


def test_the_token_file_is_read_and_its_first_line_is_the_token(tiny_catalog_path: Path, tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("  first-line-token \nsecond line\n")
    settings = Settings(models_path=tiny_catalog_path, data_dir=tmp_path / "data", auth_token_file=path,
                        allowed_hosts="testserver")
    with TestClient(create_app(settings)) as client:
        assert client.get("/api/pool", headers={"Authorization": "Bearer first-line-token"}).status_code == 200
        assert client.get("/api/pool", headers={"Authorization": "Bearer second line"}).status_code == 401
