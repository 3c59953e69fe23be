"""DNS rebinding: a foreign page whose name resolves to 127.0.0.1 sends its own name as Host; the server
answers only its bind address, the localhost names and the configured ones (issue 12, defect 4)."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.core.settings import Settings
from app.web.app import create_app
from app.web.security import HostCheck, machine_names
from tests.helpers import LiveServer


@pytest.fixture(scope="module")
def server(tiny_catalog_path: Path, tmp_path_factory: pytest.TempPathFactory):
    live = LiveServer(tiny_catalog_path, tmp_path_factory.mktemp("hosts") / "data",
                      extra=["--allowed-hosts", "playground.lan, Review.Example.ORG:8443"])
    yield live
    live.stop()


def test_a_rebound_foreign_name_reads_and_writes_nothing(server: LiveServer) -> None:
    """The attack: evil.example resolves to 127.0.0.1; its page reads the export and posts a rating."""
    with httpx.Client(base_url=server.url, headers={"Host": "evil.example:8000"}) as foreign:
        export = foreign.get("/export/ratings.csv")
        rating = foreign.post("/api/outputs/1/rating", json={"score": 1, "rater": "evil"})
        health = foreign.get("/health")
    for response in (export, rating, health):
        assert response.status_code == 400 and response.headers["content-type"] == "application/json"
        detail = response.json()["detail"]
        assert detail.startswith("host 'evil.example:8000' is not one this playground answers to; allowed: ")
        assert "localhost" in detail and "playground.lan" in detail and detail.endswith("add it with --allowed-hosts")
        assert "ratings" not in response.text  # no row of the export came along
    assert httpx.get(f"{server.url}/export/ratings.csv").text.count("\n") == 1  # the header only: nothing rated


@pytest.mark.parametrize("host", ["localhost", "localhost:{port}", "127.0.0.1:{port}", "[::1]:{port}", "::1",
                                  "LOCALHOST.", "playground.lan:{port}", "review.example.org"])
def test_the_bind_address_localhost_and_configured_names_are_answered(server: LiveServer, host: str) -> None:
    response = httpx.get(f"{server.url}/export/ratings.csv", headers={"Host": host.format(port=server.port)})
    assert response.status_code == 200 and response.text.startswith("rating_id,")


@pytest.mark.parametrize("host", ["127.0.0.2", "localhost.evil.example", "playground.lan.evil.example", "[::2]:80",
                                  socket.gethostname()])
def test_other_names_and_the_machine_name_are_refused_on_loopback(server: LiveServer, host: str) -> None:
    if host in ("localhost", "127.0.0.1"):
        pytest.skip("this machine is called localhost")  # its own name is then a localhost name
    assert httpx.get(f"{server.url}/api/pool", headers={"Host": host}).status_code == 400


def test_bound_to_every_address_the_machine_names_and_addresses_are_answered(tiny_catalog_path: Path,
                                                                          tmp_path: Path) -> None:
    app = create_app(Settings(models_path=tiny_catalog_path, data_dir=tmp_path / "data"), bind_host="0.0.0.0")
    names = sorted(machine_names())
    assert socket.gethostname().lower() in names and any(name.count(".") == 3 for name in names)
    with TestClient(app, base_url="http://localhost") as client:
        for name in names:
            host = f"[{name}]:8000" if ":" in name else f"{name}:8000"
            assert client.get("/health", headers={"Host": host}).status_code == 200, host
        assert client.get("/health", headers={"Host": "evil.example"}).status_code == 400


def test_a_star_answers_any_name_and_the_environment_adds_names(monkeypatch: pytest.MonkeyPatch) -> None:
    assert HostCheck("127.0.0.1", "*").allows("anything.example:1234")
    monkeypatch.setenv("VLM_ALLOWED_HOSTS", "from-env.example")
    check = HostCheck("127.0.0.1", Settings().allowed_hosts)
    assert check.allows("from-env.example:80") and not check.allows("evil.example")
    assert HostCheck("10.1.2.3").allows("10.1.2.3:8000") and not HostCheck().allows("10.1.2.3")
