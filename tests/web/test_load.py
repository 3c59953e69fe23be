"""Hostile load against a real server and real workers: a client that floods one model, requests queued
past the generation limit, prompts too long for a model's context, and an image bomb.

Clients are told apart by their address, as the server does without accounts: each client here
connects from its own loopback address (127.0.0.2, 127.0.0.3, ...), which Linux routes to the server.
The slow model is tiny Qwen2-VL through the `throttled` fake (tests/fakes/faulty.py: the real
`generate`, paused 25 ms a token), so an answer's length in seconds is known on any machine.
"""

from __future__ import annotations

import base64
import io
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from PIL import Image

from tests.fakes.faulty import ENV as FAULTY_ENV
from tests.fakes.faulty import STEP_S
from tests.helpers import LiveServer, png_bytes
from tests.web.test_faults import SLOW, pids, pool, settled, wait_for, write_catalog

pytestmark = pytest.mark.slow
GENERATION_LIMIT_S = 3.0
MAX_WAITING = 3


@pytest.fixture(scope="module")
def server(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("load")
    catalog = write_catalog(tiny_dir, root / "models.yaml")
    live = LiveServer(catalog, root / "data", budget_gb=2.0, env={
        **FAULTY_ENV, "VLM_GENERATION_TIMEOUT_S": str(GENERATION_LIMIT_S), "VLM_QUEUE_TIMEOUT_S": "60",
        "VLM_MAX_QUEUED_PER_CLIENT": str(MAX_WAITING), "VLM_MAX_PROMPT_CHARS": "60000"})
    yield live
    live.stop()


def http(address: str, timeout: float = 120) -> httpx.Client:
    """A client connecting from its own loopback address."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=timeout)


def chat(model: str, tokens: int, prompt: str = "Describe the image.", stream: bool = False) -> dict[str, Any]:
    url = f"data:image/png;base64,{base64.b64encode(png_bytes((200, 40, 40))).decode()}"
    return {"model": model, "max_tokens": tokens, "stream": stream,
            "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                                      {"type": "text", "text": prompt}]}]}


class Timed:
    """A request in a thread: its response and when it came back."""

    def __init__(self, address: str, url: str, body: dict[str, Any]) -> None:
        self.response: httpx.Response | None = None
        self.done_at = 0.0
        self.started = time.monotonic()

        def run() -> None:
            with http(address) as client:
                self.response = client.post(url, json=body)
            self.done_at = time.monotonic()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def join(self) -> httpx.Response:
        self.thread.join(120)
        assert self.response is not None, "no answer"
        return self.response


def waiting(server: LiveServer, model: str) -> int:
    """Requests queued for a turn on `model`, as /api/pool says."""
    return next((r["waiting"] for r in pool(server)["resident"] if r["model"] == model), 0)


def warm(server: LiveServer, model: str) -> None:
    with http("127.0.0.1") as client:
        assert client.post(f"{server.url}/v1/chat/completions", json=chat(model, 1)).status_code == 200


def test_queue_wait_does_not_count_against_the_generation_limit_and_no_worker_is_restarted(server):
    """Three 1.5-s answers queued on one model take 4.5 s together, past the 3-s limit: each is timed
    from its own turn, so all three finish, and the worker is the same process throughout."""
    warm(server, SLOW)
    before = pids(server)[SLOW]
    tokens = int(1.5 / STEP_S)
    url = f"{server.url}/v1/chat/completions"
    requests = [Timed(f"127.0.0.{2 + i}", url, chat(SLOW, tokens)) for i in range(3)]
    answers = [request.join() for request in requests]
    assert [a.status_code for a in answers] == [200, 200, 200], [a.text for a in answers]
    assert all(a.json()["usage"]["completion_tokens"] == tokens for a in answers)
    assert max(r.done_at for r in requests) - min(r.started for r in requests) > GENERATION_LIMIT_S
    status = settled(server)
    assert pids(server)[SLOW] == before and status["crashes"] == 0


def test_a_flooding_client_cannot_starve_a_one_token_request(server):
    """One client queues as many 2-s answers as it may; a 1-token request from another client is served
    right after the answer running, not after the whole flood."""
    warm(server, SLOW)
    url = f"{server.url}/v1/chat/completions"
    flood = []
    for _ in range(1 + MAX_WAITING):  # one running and MAX_WAITING waiting
        flood.append(Timed("127.0.0.9", url, chat(SLOW, int(2.0 / STEP_S))))
        time.sleep(0.1)
    wait_for(lambda: waiting(server, SLOW) == MAX_WAITING, 10, "the flood to be queued")
    quiet = Timed("127.0.0.10", url, chat(SLOW, 1))
    assert quiet.join().status_code == 200
    latency = quiet.done_at - quiet.started
    flood_done = sorted(request.join() and request.done_at for request in flood)
    turn_s = (flood_done[-1] - flood_done[0]) / (len(flood) - 1)  # one flood answer, as measured here
    print(f"\n1-token request while one client floods: {latency:.2f} s = {latency / turn_s:.1f} turns of "
          f"{turn_s:.2f} s; first-come-first-served would have made it wait {len(flood)} turns")
    assert quiet.done_at < flood_done[1], "the 1-token request waited behind the flood's queued answers"
    assert latency < 1.6 * turn_s  # at most the answer already running, then its own single token


def test_a_client_past_its_waiting_limit_is_told_to_slow_down(server):
    warm(server, SLOW)
    url = f"{server.url}/v1/chat/completions"
    held = []
    for _ in range(1 + MAX_WAITING):
        held.append(Timed("127.0.0.11", url, chat(SLOW, int(1.0 / STEP_S))))
        time.sleep(0.1)
    wait_for(lambda: waiting(server, SLOW) == MAX_WAITING, 10, "the client's requests to be queued")
    with http("127.0.0.11") as client:
            refused = client.post(url, json=chat(SLOW, 1))
    assert refused.status_code == 429, refused.text
    assert int(refused.headers["retry-after"]) >= 1
    assert f"the limit is {MAX_WAITING} a client" in refused.json()["error"]["message"]
    with http("127.0.0.12") as client:  # another client is queued, not refused
        assert client.post(url, json=chat(SLOW, 1)).status_code == 200
    assert all(request.join().status_code == 200 for request in held)


@pytest.mark.parametrize("stream", [False, True])
def test_a_prompt_longer_than_the_models_context_is_refused_at_once(server, stream):
    """45,000 characters fit this server's prompt limit but not tiny LLaVA's 4,096-token context: a 400
    that says so, before any answer starts, and the model answers the next request at once."""
    warm(server, "tiny-llava")
    started = time.monotonic()
    with http("127.0.0.1") as client:
        response = client.post(f"{server.url}/v1/chat/completions",
                               json=chat("tiny-llava", 4, prompt="describe " * 5000, stream=stream))
        refused_s = time.monotonic() - started
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert "context" in error["message"] and "tiny-llava" in error["message"], error
        started = time.monotonic()
        assert client.post(f"{server.url}/v1/chat/completions", json=chat("tiny-llava", 1)).status_code == 200
    print(f"\ncontext-length refusal in {refused_s:.2f} s; next 1-token answer in {time.monotonic() - started:.2f} s")
    assert refused_s < 10


def bomb(side: int = 6320) -> bytes:
    """A single-colour PNG of side×side pixels: a few hundred kB that decode to 3·side² bytes."""
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (10, 120, 200)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def test_an_image_bomb_is_refused_by_its_total_pixels(server):
    data = bomb()
    files = [("images", (f"bomb{i}.png", data, "image/png")) for i in range(8)]
    with http("127.0.0.1") as client:
        response = client.post(f"{server.url}/api/comparisons", files=files,
                               data={"prompt": "What colour?", "models": "tiny-llava", "max_new_tokens": "2"})
    assert len(data) * 8 < 1.1e6  # about a megabyte on the wire
    assert response.status_code == 413, response.text
    assert "319.5 megapixels in all; the limit is 100 megapixels a request" in response.json()["detail"]


def test_large_images_reach_the_worker_at_the_size_the_model_uses(server):
    """Two 40-MP images (within every limit) are shrunk on the server: the worker's memory grows by far
    less than their decoded size, and the answer says what was done."""
    warm(server, "tiny-llava")
    worker = psutil.Process(pids(server)["tiny-llava"])
    web = psutil.Process(server.process.pid)
    rss_before, web_before = worker.memory_info().rss, web.memory_info().rss
    peak, web_peak = [rss_before], [web_before]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak.append(worker.memory_info().rss)
            web_peak.append(web.memory_info().rss)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    data = bomb()
    try:
        with http("127.0.0.1") as client:
            response = client.post(f"{server.url}/api/comparisons",
                                   files=[("images", (f"big{i}.png", data, "image/png")) for i in range(2)],
                                   data={"prompt": "What colour?", "models": "tiny-llava", "max_new_tokens": "2"})
    finally:
        stop.set()
        sampler.join()
    assert response.status_code == 201, response.text
    output = response.json()["outputs"][0]
    assert output["status"] == "done", output
    assert "big0.png 6320×6320 → 336×336" in output["image_note"], output["image_note"]
    decoded_mb = 2 * 3 * 6320 * 6320 / 2**20
    growth_mb = (max(peak) - rss_before) / 2**20
    planned = next(r["planned_gb"] for r in pool(server)["resident"] if r["model"] == "tiny-llava")
    web_peak_mb = (max(web_peak) - web_before) / 2**20
    web_kept_mb = (web.memory_info().rss - web_before) / 2**20
    print(f"\nworker RSS growth under two 40-MP images: {growth_mb:.0f} MB (decoded: {decoded_mb:.0f} MB; "
          f"planned {planned} GB); the server's own: {web_peak_mb:.0f} MB at peak, {web_kept_mb:.0f} MB kept")
    assert growth_mb < 50
    assert web_peak_mb < decoded_mb  # one image's pixels at a time, never all of them
    assert web_kept_mb < 60  # and given back afterwards


def test_a_queued_panel_says_how_many_requests_are_ahead(server):
    """The page's panel, followed over its event stream, shows its place in the model's queue."""
    warm(server, SLOW)
    url = f"{server.url}/v1/chat/completions"
    busy = [Timed(f"127.0.0.{20 + i}", url, chat(SLOW, int(1.5 / STEP_S))) for i in range(2)]
    wait_for(lambda: waiting(server, SLOW) == 1, 10, "one running and one queued")
    with http("127.0.0.1") as client:
        started = client.post(f"{server.url}/compare", files=[("images", ("red.png", png_bytes((200, 0, 0)),
                                                                          "image/png"))],
                              data={"prompt": "Describe it.", "models": SLOW, "max_new_tokens": "2"})
        assert started.status_code == 303, started.text
        seen = ""
        with client.stream("GET", f"{server.url}{started.headers['location']}/events", timeout=30) as events:
            for line in events.iter_lines():
                seen += line
                if "ahead on this model" in line or "st-done" in line:
                    break
    assert "queued <span class=\"st-detail\">· 2 requests ahead on this model" in seen, seen[-600:]  # 1 running
    assert all(request.join().status_code == 200 for request in busy)
