"""Faults against real servers and real workers on tiny models: a killed worker, out of memory, a hang,
a browser or client that goes away, SIGTERM and kill -9 of the server, and many raters at once.

Tiny Qwen2-VL answers greedily for the full `max_new_tokens`, but fast: 2000 tokens take 2–4 s on a
CPU, less on a GPU, too short to hurt it mid-answer reliably. The long answers here come from the
same checkpoint served through the `throttled` fake (tests/fakes/faulty.py: the real `generate`,
paused 25 ms per token, so 2000 tokens last about a minute on any machine). Tiny LLaVA answers the
same 2000 tokens in a few seconds.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.fakes.faulty import ENV as FAULTY_ENV
from tests.helpers import LiveServer, png_bytes

pytestmark = pytest.mark.slow
SLOW = "tiny-slow"  # tiny Qwen2-VL, throttled: about 40 tokens/s
TWIN = "tiny-slow-twin"  # the same again: two slow panels at once
FAST = "tiny-llava"
LONG = 2000


# ---------------------------------------------------------------- helpers


def write_catalog(tiny_dir: Path, out: Path, extra: list[dict[str, Any]] | None = None) -> Path:
    """The tiny catalogue with absolute paths, two throttled entries on tiny Qwen2-VL, and `extra` ones (each
    on the same checkpoint unless it says otherwise)."""
    data = yaml.safe_load((tiny_dir / "models.yaml").read_text())
    for entry in data["models"]:
        if str(entry["repo"]).startswith("./"):
            entry["repo"] = str(tiny_dir / entry["repo"][2:])
    qwen = next(entry for entry in data["models"] if entry["id"] == "tiny-qwen2-vl")
    slow = [{"id": SLOW, "name": "Tiny Qwen2-VL, throttled (test fake)", "family": "throttled"},
            {"id": TWIN, "name": "Tiny Qwen2-VL, throttled twin (test fake)", "family": "throttled"}]
    for entry in slow + (extra or []):
        data["models"].append({**qwen, **entry})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(data))
    return out


def form(prompt: str, models: list[str], max_new_tokens: int) -> tuple[dict[str, Any], list]:
    data = {"prompt": prompt, "models": models, "max_new_tokens": str(max_new_tokens)}
    return data, [("images", ("red.png", png_bytes((220, 20, 20)), "image/png"))]


def compare(server: LiveServer, models: list[str], max_new_tokens: int = 4, prompt: str = "Describe the image.",
            timeout: float = 300) -> dict[str, Any]:
    data, files = form(prompt, models, max_new_tokens)
    response = httpx.post(f"{server.url}/api/comparisons", data=data, files=files, timeout=timeout)
    assert response.status_code == 201, response.text
    return response.json()


class Background:
    """POST /api/comparisons in a thread (it waits for every answer), and find the comparison it made."""

    def __init__(self, server: LiveServer, models: list[str], max_new_tokens: int = LONG,
                 prompt: str = "Describe the image in detail.") -> None:
        self.server = server
        self.before = latest_id(server)
        self.response: httpx.Response | None = None
        self.error: BaseException | None = None
        data, files = form(prompt, models, max_new_tokens)

        def run() -> None:
            try:
                self.response = httpx.post(f"{server.url}/api/comparisons", data=data, files=files, timeout=300)
            except BaseException as exc:  # the server may be killed under it
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        self.id = wait_for(lambda: (latest_id(server) or 0) > (self.before or 0) and latest_id(server),
                           30, "the comparison to be stored")

    def join(self, timeout: float = 120) -> httpx.Response | None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the request did not come back"
        return self.response


def latest_id(server: LiveServer) -> int | None:
    items = httpx.get(f"{server.url}/api/comparisons", params={"limit": 1}, timeout=10).json()["items"]
    return items[0]["id"] if items else None


def comparison(server: LiveServer, comparison_id: int) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/api/comparisons/{comparison_id}", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def outputs(server: LiveServer, comparison_id: int) -> dict[str, dict[str, Any]]:
    return {o["model"]: o for o in comparison(server, comparison_id)["outputs"]}


def pool(server: LiveServer) -> dict[str, Any]:
    return httpx.get(f"{server.url}/api/pool", timeout=10).json()


def pids(server: LiveServer) -> dict[str, int]:
    return {r["model"]: r["pid"] for r in pool(server)["resident"] if r["pid"]}


def wait_for(condition: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def generating(server: LiveServer, comparison_id: int, models: list[str]) -> bool:
    current = outputs(server, comparison_id)
    return all(current[m]["status"] == "generating" for m in models)


def alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def assert_accounting(status: dict[str, Any]) -> None:
    """used_gb is exactly what the resident workers plan for: nothing leaked, nothing draining."""
    assert status["draining_gb"] == 0, status
    assert abs(status["used_gb"] - sum(r["planned_gb"] for r in status["resident"])) < 1e-6, status
    assert all(r["leases"] == 0 and r["state"] == "ready" for r in status["resident"]), status


def settled(server: LiveServer) -> dict[str, Any]:
    """The pool once nothing is leased, loading or draining."""

    def quiet() -> dict[str, Any] | None:
        status = pool(server)
        idle = status["draining_gb"] == 0 and all(r["leases"] == 0 and r["state"] == "ready"
                                                  for r in status["resident"])
        return status if idle else None

    return wait_for(quiet, 30, "the pool to settle")


@pytest.fixture(scope="module")
def catalog(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_catalog(tiny_dir, tmp_path_factory.mktemp("faults") / "models.yaml")


@pytest.fixture(scope="module")
def server(catalog: Path, tmp_path_factory: pytest.TempPathFactory):
    """A server that stops answers one second after their last watcher left; three tiny models fit."""
    live = LiveServer(catalog, tmp_path_factory.mktemp("faults-live") / "data", budget_gb=2.0,
                      env={**FAULTY_ENV, "VLM_ABANDON_AFTER_S": "1"})
    yield live
    live.stop()


# ---------------------------------------------------------------- a worker killed mid-answer


def test_a_killed_worker_errors_its_panel_only_and_is_replaced(server):
    warm = compare(server, [SLOW, FAST])  # both resident
    assert [o["status"] for o in warm["outputs"]] == ["done", "done"], warm
    run = Background(server, [SLOW, FAST])
    wait_for(lambda: generating(server, run.id, [SLOW]), 60, "the slow model to generate")
    time.sleep(1.5)  # well into a minute-long answer
    victim = pids(server)[SLOW]
    os.kill(victim, signal.SIGKILL)
    response = run.join()
    assert response is not None and response.status_code == 201, run.error
    body = {o["model"]: o for o in response.json()["outputs"]}
    killed, other = body[SLOW], body[FAST]
    assert killed["status"] == "error", killed
    assert SLOW in killed["error"], killed
    assert killed["text"], "the text streamed before the crash is kept"
    assert other["status"] == "done" and other["tokens"] == LONG, other
    wait_for(lambda: not alive(victim), 10, "the killed worker to be reaped")
    status = settled(server)
    assert victim not in [r["pid"] for r in status["resident"]]
    assert SLOW not in [r["model"] for r in status["resident"]]
    assert status["crashes"] >= 1
    assert_accounting(status)
    again = compare(server, [SLOW])
    assert again["outputs"][0]["status"] == "done" and again["outputs"][0]["text"]
    replaced = pids(server)[SLOW]
    assert replaced != victim and alive(replaced)


# ---------------------------------------------------------------- the browser or the client goes away


def sse_until_first_text(url: str, timeout: float = 60) -> list[str]:
    """Follow a comparison's events and leave as soon as the first streamed text arrives."""
    seen: list[str] = []
    with httpx.stream("GET", url, timeout=timeout) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        event = ""
        for line in response.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
                seen.append(event)
            elif line.startswith("data:") and event.startswith("text-") and '"append"' in line:
                return seen  # closing the stream here is the browser going away
    raise AssertionError(f"the stream ended without text: {seen}")


def test_the_browser_going_away_stops_generation_and_frees_the_workers(server):
    assert {o["status"] for o in compare(server, [SLOW, TWIN])["outputs"]} == {"done"}  # both resident
    data, files = form("Describe the image in detail.", [SLOW, TWIN], LONG)
    response = httpx.post(f"{server.url}/compare", data=data, files=files, follow_redirects=False, timeout=60)
    assert response.status_code == 303, response.text
    comparison_id = int(response.headers["location"].rstrip("/").rsplit("/", 1)[1])
    sse_until_first_text(f"{server.url}/comparisons/{comparison_id}/events")
    left = time.monotonic()

    def ended() -> dict[str, dict[str, Any]] | None:
        current = outputs(server, comparison_id)
        return current if all(o["status"] == "interrupted" for o in current.values()) else None

    finished = wait_for(ended, 10, "both answers to be interrupted")
    assert time.monotonic() - left < 8
    for output in finished.values():
        assert "the browser went away" in output["error"], output
        assert output["tokens"] is None or output["tokens"] < LONG
    status = settled(server)
    assert_accounting(status)
    started = time.monotonic()
    assert compare(server, [SLOW], max_new_tokens=4)["outputs"][0]["status"] == "done"
    assert time.monotonic() - started < 20, "the worker was still busy with the abandoned answer"


def test_a_client_that_disconnects_from_the_json_api_interrupts_its_answers(server):
    assert {o["status"] for o in compare(server, [SLOW, TWIN])["outputs"]} == {"done"}  # both resident
    before = latest_id(server) or 0
    data, files = form("Describe the image in detail.", [SLOW, TWIN], LONG)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.url}/api/comparisons", data=data, files=files,
                   timeout=httpx.Timeout(10.0, read=3.0))
    comparison_id = wait_for(lambda: (latest_id(server) or 0) > before and latest_id(server), 10, "the comparison")

    def ended() -> dict[str, dict[str, Any]] | None:
        current = outputs(server, comparison_id)
        return current if all(o["status"] == "interrupted" for o in current.values()) else None

    finished = wait_for(ended, 10, "the answers to be interrupted")
    for output in finished.values():
        assert "the client went away" in output["error"], output
    assert_accounting(settled(server))


def test_a_page_leaving_does_not_stop_a_comparison_an_api_client_waits_for(server):
    """Abandonment is for comparisons the page started: a viewer closing its tab must not cut short the
    answers a script is still waiting for."""
    run = Background(server, [SLOW], max_new_tokens=120)  # about 3 s
    sse_until_first_text(f"{server.url}/comparisons/{run.id}/events")
    response = run.join()
    assert response is not None and response.status_code == 201, run.error
    output = response.json()["outputs"][0]
    assert output["status"] == "done" and output["tokens"] == 120, output


# ---------------------------------------------------------------- many raters at once


def test_sixteen_concurrent_raters_lose_nothing_and_never_see_a_locked_database(server):
    body = compare(server, [SLOW, TWIN, FAST])
    output_ids = [o["id"] for o in body["outputs"]]
    raters, writes = 16, 20
    barrier = threading.Barrier(raters)
    problems: list[str] = []
    last: dict[tuple[str, int], tuple[int, str]] = {}
    statuses: list[int] = []
    lock = threading.Lock()

    def rater(index: int) -> None:
        name = f"rater-{index:02d}"
        seen: set[int] = set()
        with httpx.Client(base_url=server.url, timeout=60) as client:
            barrier.wait()
            for write in range(writes):
                output_id = output_ids[(index + write) % len(output_ids)]
                score, note = 1 + (index * 7 + write) % 5, f"{name} write {write} ✓ \"quoted\", comma"
                response = client.post(f"/api/outputs/{output_id}/rating",
                                       json={"score": score, "note": note, "rater": name})
                expected = 200 if output_id in seen else 201  # replaced, or new
                with lock:
                    statuses.append(response.status_code)
                    if response.status_code != expected or "locked" in response.text.lower():
                        problems.append(f"{name} #{write}: {response.status_code} {response.text[:200]}")
                    else:
                        last[(name, output_id)] = (score, note)
                seen.add(output_id)

    threads = [threading.Thread(target=rater, args=(i,)) for i in range(raters)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not problems, problems[:5]
    assert len(statuses) == raters * writes and max(statuses) < 500
    stored = {(r["rater"], o["id"]): (r["score"], r["note"])
              for o in comparison(server, body["id"])["outputs"] for r in o["ratings"]}
    assert stored == last
    assert "database is locked" not in server.log.read_text(errors="replace")


# ---------------------------------------------------------------- out of memory and a hang


def test_stop_one_panel_and_its_worker_stops_generating_while_the_other_goes_on(server):
    """Issue 14 item 4: stop a minute-long answer; its panel keeps the text so far, marked stopped; the worker
    stops generating (a 1-token request to the same model is answered at once, not after the minute); the other
    panel finishes; stopping what has finished stops nothing."""
    run = Background(server, [SLOW, FAST])
    wait_for(lambda: generating(server, run.id, [SLOW]), 60, "the slow model to generate")
    time.sleep(1.0)
    slow_id = outputs(server, run.id)[SLOW]["id"]
    response = httpx.post(f"{server.url}/api/outputs/{slow_id}/stop", timeout=30)
    assert response.status_code == 200 and response.json() == {"stopped": [slow_id]}
    stopped = outputs(server, run.id)[SLOW]
    assert stopped["status"] == "interrupted" and stopped["error"] == "stopped: by the person following it"
    assert stopped["text"], "the text streamed before the stop is kept"
    asked = time.monotonic()
    compare(server, [SLOW], max_new_tokens=1, timeout=60)
    assert time.monotonic() - asked < 20, "the worker was still generating the stopped answer"
    response = run.join()
    assert response is not None and response.status_code == 201
    assert outputs(server, run.id)[FAST]["status"] == "done"
    again = httpx.post(f"{server.url}/api/comparisons/{run.id}/stop", timeout=30)
    assert again.status_code in (200, 404) and again.json().get("stopped", []) == []


def test_stop_the_whole_comparison(server):
    run = Background(server, [SLOW, TWIN])
    wait_for(lambda: generating(server, run.id, [SLOW]), 60, "the slow model to generate")
    response = httpx.post(f"{server.url}/api/comparisons/{run.id}/stop", timeout=30)
    assert response.status_code == 200 and len(response.json()["stopped"]) == 2
    assert run.join() is not None
    assert {o["status"] for o in outputs(server, run.id).values()} == {"interrupted"}
    assert httpx.post(f"{server.url}/api/outputs/999999/stop", timeout=10).status_code == 404


@pytest.fixture(scope="module")
def faulty_server(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """Two fake-fault models (tests/fakes/faulty.py) beside a normal one; a 3 s generation limit."""
    root = tmp_path_factory.mktemp("faulty")
    catalog = write_catalog(tiny_dir, root / "models.yaml", extra=[
        {"id": "faulty-oom", "name": "Fault injector: out of memory", "family": "faulty_oom"},
        {"id": "faulty-hang", "name": "Fault injector: hang", "family": "faulty_hang"},
    ])
    live = LiveServer(catalog, root / "data", budget_gb=2.0, env={**FAULTY_ENV, "VLM_GENERATION_TIMEOUT_S": "3"})
    yield live
    live.stop()


def test_out_of_memory_and_a_hang_error_their_panels_and_the_hung_worker_is_replaced(faulty_server):
    models = [FAST, "faulty-oom", "faulty-hang"]
    warm = compare(faulty_server, models, max_new_tokens=6, prompt="[no fault] Describe the image.")
    assert [o["status"] for o in warm["outputs"]] == ["done"] * 3
    before = pids(faulty_server)
    started = time.monotonic()
    body = {o["model"]: o for o in compare(faulty_server, models, max_new_tokens=64)["outputs"]}
    assert time.monotonic() - started < 30
    assert body[FAST]["status"] == "done" and body[FAST]["text"], body[FAST]
    oom = body["faulty-oom"]
    assert oom["status"] == "error" and "out of memory" in oom["error"].lower(), oom
    assert "faulty-oom" in oom["error"]
    hung = body["faulty-hang"]
    assert hung["status"] == "error", hung
    assert "generation time limit of 3 s" in hung["error"] and "restarted" in hung["error"], hung
    assert hung["text"], "the pieces streamed before the hang are kept"
    wait_for(lambda: not alive(before["faulty-hang"]), 20, "the hung worker to be stopped")
    status = settled(faulty_server)
    assert "faulty-hang" not in [r["model"] for r in status["resident"]]
    assert status["crashes"] >= 1
    assert_accounting(status)
    again = {o["model"]: o for o in compare(faulty_server, ["faulty-hang", "faulty-oom"], max_new_tokens=6,
                                            prompt="[no fault] And now?")["outputs"]}
    assert again["faulty-hang"]["status"] == "done" and again["faulty-oom"]["status"] == "done", again
    after = pids(faulty_server)
    assert after["faulty-hang"] != before["faulty-hang"], "the hung worker was replaced by a new process"
    assert_accounting(settled(faulty_server))


# ---------------------------------------------------------------- SIGTERM and kill -9 of the server


def assert_nothing_half_done(server: LiveServer, expected: dict[int, int]) -> None:
    """Every comparison has all its outputs, and none is left queued, loading or generating."""
    listing = httpx.get(f"{server.url}/api/comparisons", params={"limit": 500}, timeout=10).json()
    assert listing["total"] == len(expected)
    for item in listing["items"]:
        assert len(item["models"]) == expected[item["id"]], item
        full = comparison(server, item["id"])
        assert len(full["outputs"]) == expected[item["id"]]
        for output in full["outputs"]:
            assert output["status"] in ("done", "interrupted", "error"), output
            if output["status"] == "interrupted":
                assert output["error"], output


def test_sigterm_finishes_or_interrupts_answers_and_leaves_no_worker(catalog, tmp_path):
    data_dir = tmp_path / "data"
    live = LiveServer(catalog, data_dir, budget_gb=2.0, env={**FAULTY_ENV, "VLM_SHUTDOWN_GRACE_S": "1"})
    try:
        first = compare(live, [FAST])
        run = Background(live, [SLOW, TWIN])
        wait_for(lambda: generating(live, run.id, [SLOW, TWIN]), 60, "both answers to generate")
        workers = list(pids(live).values())
        assert len(workers) == 3
        sent = time.monotonic()
        live.process.send_signal(signal.SIGTERM)
        live.process.wait(30)
        took = time.monotonic() - sent
        assert took < 12, f"the server took {took:.1f} s to stop"
        wait_for(lambda: not any(alive(pid) for pid in workers), 10, "every worker to exit")
    finally:
        live.stop()
    restarted = LiveServer(catalog, data_dir, budget_gb=2.0, env=FAULTY_ENV)
    try:
        assert_nothing_half_done(restarted, {first["id"]: 1, run.id: 2})
        statuses = {o["model"]: o["status"] for o in comparison(restarted, run.id)["outputs"]}
        assert set(statuses.values()) <= {"done", "interrupted"}, statuses
    finally:
        restarted.stop()
    waiting = run.join(30)  # the client that was waiting for those answers gets them, marked interrupted
    assert waiting is not None and waiting.status_code == 201, waiting.text if waiting is not None else None


def test_kill_9_keeps_every_acknowledged_rating_and_orphans_no_worker(catalog, tmp_path):
    data_dir = tmp_path / "data"
    sqlite = {**FAULTY_ENV, "DATABASE_URL": ""}  # the embedded database, whatever the environment says
    live = LiveServer(catalog, data_dir, budget_gb=2.0, env=sqlite)
    acknowledged: dict[tuple[int, str], tuple[int, str]] = {}

    def rate(output_id: int, rater: str, score: int, note: str) -> None:
        response = httpx.post(f"{live.url}/api/outputs/{output_id}/rating",
                              json={"score": score, "note": note, "rater": rater}, timeout=30)
        assert response.status_code in (200, 201), response.text
        acknowledged[(output_id, rater)] = (score, note)

    try:
        done = compare(live, [FAST, SLOW])
        for index, output in enumerate(done["outputs"]):
            for rater in ("ana", "bo", "cy"):
                rate(output["id"], rater, 1 + index, f"before the crash: {rater}")
        run = Background(live, [SLOW, TWIN])
        wait_for(lambda: generating(live, run.id, [SLOW, TWIN]), 60, "both answers to generate")
        workers = list(pids(live).values())
        for output in done["outputs"]:
            for score, rater in enumerate(("ana", "dee", "eve"), start=3):
                rate(output["id"], rater, score, f"during generation: {rater} ✓")
        live.process.send_signal(signal.SIGKILL)
        live.process.wait(10)
        wait_for(lambda: not any(alive(pid) for pid in workers), 5, "the orphaned workers to exit")
        with sqlite3.connect(data_dir / "playground.db") as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        live.stop()
    restarted = LiveServer(catalog, data_dir, budget_gb=2.0, env=sqlite)
    try:
        stored = {(o["id"], r["rater"]): (r["score"], r["note"])
                  for o in comparison(restarted, done["id"])["outputs"] for r in o["ratings"]}
        assert stored == acknowledged
        cut = outputs(restarted, run.id)
        assert {o["status"] for o in cut.values()} == {"interrupted"}, cut
        assert_nothing_half_done(restarted, {done["id"]: 2, run.id: 2})
    finally:
        restarted.stop()


def test_a_hang_through_the_openai_gateway_hits_the_time_limit_and_frees_the_worker(faulty_server):
    """/v1/chat/completions is bounded by the same generation limit as the page, and a stuck worker is
    replaced rather than holding its lease for ever."""
    import base64

    url = "data:image/png;base64," + base64.b64encode(png_bytes((5, 5, 200))).decode()
    body = {"model": "faulty-hang", "max_tokens": 64,
            "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                                      {"type": "text", "text": "Describe."}]}]}
    httpx.post(f"{faulty_server.url}/v1/chat/completions", json={**body, "messages": [
        {"role": "user", "content": [body["messages"][0]["content"][0], {"type": "text", "text": "[no fault] hi"}]}]},
        timeout=120)  # warm: the model is resident
    before = pids(faulty_server)["faulty-hang"]
    started = time.monotonic()
    response = httpx.post(f"{faulty_server.url}/v1/chat/completions", json=body, timeout=120)
    assert time.monotonic() - started < 30
    assert response.status_code == 502, response.text
    assert "generation time limit of 3 s" in response.json()["error"]["message"]
    wait_for(lambda: not alive(before), 20, "the hung worker to be stopped")
    assert all(r["leases"] == 0 for r in settled(faulty_server)["resident"])
