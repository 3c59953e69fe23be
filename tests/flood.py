"""A slow-header (slowloris) flood over raw sockets, for the connection tests and the soak."""

from __future__ import annotations

import socket
import time

import httpx

HALF_REQUEST = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "  # the headers never end


def half_sent(port: int, count: int, host: str = "127.0.0.1") -> list[socket.socket]:
    """`count` connections that each send the start of a request's headers and never finish them."""
    conns = []
    for _ in range(count):
        conn = socket.create_connection((host, port), timeout=5)
        conn.sendall(HALF_REQUEST)
        conns.append(conn)
    return conns


def still_open(conns: list[socket.socket]) -> int:
    """How many of `conns` the server has neither closed nor answered."""
    count = 0
    for conn in conns:
        conn.setblocking(False)
        try:
            conn.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            count += 1
        except OSError:
            pass
    return count


def close_all(conns: list[socket.socket]) -> None:
    for conn in conns:
        conn.close()


def timed_get(url: str, timeout_s: float = 10) -> tuple[int, float]:
    """A fresh connection's GET: its status and seconds taken."""
    started = time.perf_counter()
    status = httpx.get(url, timeout=timeout_s).status_code
    return status, time.perf_counter() - started


def read_until_closed(conn: socket.socket, limit_s: float = 30) -> tuple[bytes, float]:
    """Everything the server sends until it closes `conn`, and the seconds that took."""
    conn.settimeout(limit_s)
    started, received = time.perf_counter(), b""
    try:
        while chunk := conn.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received, time.perf_counter() - started
