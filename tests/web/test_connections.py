"""Slow clients against a real server over raw sockets: header and body deadlines, the connection cap that
sheds slowloris connections first, and a low descriptor limit that neither stops service nor floods the log."""

from __future__ import annotations

import json
import os
import resource
import socket
import time
from pathlib import Path

import httpx
import pytest

from tests.flood import close_all, half_sent, read_until_closed, still_open, timed_get
from tests.helpers import LiveServer, png_bytes


@pytest.fixture(scope="module")
def strict(tiny_catalog_path: Path, tmp_path_factory: pytest.TempPathFactory):
    """Headers within 1 s, bodies within 1.5 s, at most 8 connections."""
    server = LiveServer(tiny_catalog_path, tmp_path_factory.mktemp("strict") / "data",
                        env={"VLM_HEADER_TIMEOUT_S": "1", "VLM_BODY_TIMEOUT_S": "1.5", "VLM_MAX_CONNECTIONS": "8"})
    yield server
    server.stop()


def connect(server: LiveServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def status_and_detail(response: bytes) -> tuple[int, str]:
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)["detail"]


def test_half_sent_headers_are_closed_after_the_header_timeout(strict):
    conn = connect(strict)
    conn.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    response, seconds = read_until_closed(conn)
    print(f"half-sent headers closed after {seconds:.2f} s (limit 1 s)")
    assert 0.9 <= seconds < 3
    assert status_and_detail(response) == (408, "request headers: not received within the limit of 1 s")


def test_a_slow_second_request_on_a_kept_alive_connection_is_closed_too(strict):
    conn = connect(strict)
    conn.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    first = b""
    while not first.endswith(b"}"):
        first += conn.recv(65536)
    assert first.startswith(b"HTTP/1.1 200")
    conn.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # uvicorn's keep-alive timer stops here
    response, seconds = read_until_closed(conn)
    assert 0.9 <= seconds < 3
    assert status_and_detail(response)[0] == 408


def test_a_body_sent_too_slowly_gets_408_naming_the_limit(strict):
    conn = connect(strict)
    conn.sendall(b"POST /api/comparisons HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n"
                 b"Content-Type: multipart/form-data; boundary=x\r\n\r\n--x\r\n")
    response, seconds = read_until_closed(conn)
    assert 1.4 <= seconds < 4
    assert b"\r\nconnection: close\r\n" in response.lower()
    assert status_and_detail(response) == (408, "request body: not received within the limit of 1.5 s")


def test_when_every_connection_is_busy_a_newcomer_is_refused_naming_the_limit(strict):
    busy = []
    for _ in range(8):  # headers complete, bodies pending: none of them is a slowloris to shed
        conn = connect(strict)
        conn.sendall(b"POST /api/comparisons HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n"
                     b"Content-Type: multipart/form-data; boundary=x\r\n\r\n")
        busy.append(conn)
    time.sleep(0.3)  # their headers are in
    try:
        response, _ = read_until_closed(connect(strict), limit_s=1)
        assert status_and_detail(response) == (503, "server busy: 8 connections open, the limit; try again shortly")
    finally:
        close_all(busy)


@pytest.mark.slow
def test_a_slowloris_flood_past_the_cap_leaves_health_and_a_comparison_answering(tiny_catalog_path, tmp_path):
    server = LiveServer(tiny_catalog_path, tmp_path / "data",
                        env={"VLM_HEADER_TIMEOUT_S": "60", "VLM_MAX_CONNECTIONS": "64"})
    flood = half_sent(server.port, 200)
    try:
        latencies = [timed_get(f"{server.url}/health") for _ in range(3)]
        assert all(status == 200 for status, _ in latencies)
        assert max(seconds for _, seconds in latencies) < 1
        response = httpx.post(f"{server.url}/api/comparisons", timeout=120,
                              data={"prompt": "Describe.", "models": ["tiny-qwen2-vl"], "max_new_tokens": "4"},
                              files=[("images", ("red.png", png_bytes((250, 0, 0)), "image/png"))])
        assert response.status_code == 201, response.text
        assert response.json()["outputs"][0]["status"] == "done"
        held = still_open(flood)
        print(f"flood of 200 half-sent, cap 64: {held} held open; /health "
              f"{', '.join(f'{s * 1000:.0f}' for _, s in latencies)} ms; the comparison done")
        assert 0 < held <= 64
    finally:
        close_all(flood)
        server.stop()


def test_a_flood_under_a_low_descriptor_limit_neither_stops_service_nor_floods_the_log(tiny_catalog_path, tmp_path):
    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    server = LiveServer(tiny_catalog_path, tmp_path / "data", preexec_fn=low_limit)  # default cap: 512
    flood = half_sent(server.port, 600)
    try:
        latencies = [timed_get(f"{server.url}/health") for _ in range(3)]
        descriptors = len(os.listdir(f"/proc/{server.process.pid}/fd"))
        held = still_open(flood)
    finally:
        close_all(flood)
        server.stop()
    log = server.log.read_text()
    print(f"600 half-sent under 256 descriptors: {held} held open, {descriptors} descriptors in use; /health "
          f"{', '.join(f'{s * 1000:.0f}' for _, s in latencies)} ms; server log {len(log.encode())} bytes")
    assert all(status == 200 for status, _ in latencies)
    assert max(seconds for _, seconds in latencies) < 1
    assert "max_connections 512 lowered to 144: the process may open only 256 files" in log
    assert held <= 144 and descriptors < 256
    assert len(log.encode()) < 20_000
