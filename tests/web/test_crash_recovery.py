"""kill -9 in the middle of storing an upload, at each step of it, then the real server restarted on
what was left: every stored comparison has its image, no `.tmp` stays, old files no row names are
swept, and a row whose file is missing (left by an older release) is reported and answers a clear 404."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from app.storage import files
from tests.helpers import ROOT, LiveServer, png_bytes

# A process that stores one comparison and kills itself (SIGKILL: no cleanup runs) at one step of it.
STORE_AND_DIE = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from app.storage import comparisons
    from app.storage.comparisons import OutputInput, StoredImageInput
    from app.storage.db import init_db, make_engine

    data_dir, step, color = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    from tests.helpers import png_bytes
    image = StoredImageInput(f"shot{color}.png", png_bytes((color, 0, 0)), "PNG", 48, 40)
    engine = make_engine(None, data_dir)
    init_db(engine)
    die = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
    if step == "files written, not yet in place":
        comparisons.publish = die
    elif step == "files in place, rows not committed":
        comparisons._insert_comparison = die
    elif step == "rows committed":
        insert = comparisons._insert_comparison
        comparisons._insert_comparison = lambda *a, **k: (insert(*a, **k), die())[0]
    comparisons.create_comparison(engine, data_dir, "What is this?", {}, "ann", False, [image],
                                  [OutputInput("tiny-qwen2-vl")])
""")
STEPS = ["files written, not yet in place", "files in place, rows not committed", "rows committed"]


def store_and_die(data_dir: Path, step: str, color: int) -> str:
    """Run STORE_AND_DIE; returns the hash of the image it was storing."""
    result = subprocess.run([sys.executable, "-c", STORE_AND_DIE, str(data_dir), step, str(color)], cwd=ROOT,
                            env={k: v for k, v in os.environ.items() if k != "DATABASE_URL"}, timeout=120)
    assert result.returncode == -signal.SIGKILL, (step, result.returncode)
    return hashlib.sha256(png_bytes((color, 0, 0))).hexdigest()


def leftovers(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "images").glob("*/.*.tmp"))


@pytest.mark.parametrize("step", STEPS)
def test_a_kill_at_any_step_leaves_every_stored_comparison_with_its_image(tiny_catalog_path: Path, tmp_path: Path,
                                                                        step: str) -> None:
    data_dir = tmp_path / "data"
    sha = store_and_die(data_dir, step, 10 + STEPS.index(step))
    server = LiveServer(tiny_catalog_path, data_dir)
    try:
        listing = httpx.get(f"{server.url}/api/comparisons").json()
        assert leftovers(data_dir) == []  # the sweep removed the temp file of a write cut short
        for item in listing["items"]:
            for image in item["images"]:
                assert httpx.get(f"{server.url}/images/{image}").status_code == 200  # was a 404: never written
        assert [item["images"] for item in listing["items"]] == ([[sha]] if step == "rows committed" else [])
    finally:
        server.stop()
    assert "stored images have no file" not in server.log.read_text()


def test_restart_sweeps_leftovers_and_reports_rows_without_a_file(tiny_catalog_path: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    kept_sha = store_and_die(data_dir, "rows committed", 40)
    lost_sha = store_and_die(data_dir, "rows committed", 41)
    files.image_path(data_dir, lost_sha).unlink()  # what an older release's crash left: a row, no file
    orphan_sha = store_and_die(data_dir, "files in place, rows not committed", 42)  # fresh: kept for now
    old_orphan_sha = store_and_die(data_dir, "files in place, rows not committed", 43)
    an_hour_ago = time.time() - 3700
    os.utime(files.image_path(data_dir, old_orphan_sha), (an_hour_ago, an_hour_ago))
    store_and_die(data_dir, "files written, not yet in place", 44)
    assert len(leftovers(data_dir)) == 1

    server = LiveServer(tiny_catalog_path, data_dir)
    try:
        assert leftovers(data_dir) == []
        assert files.image_path(data_dir, orphan_sha).exists()
        with pytest.raises(FileNotFoundError):
            files.image_path(data_dir, old_orphan_sha)
        assert httpx.get(f"{server.url}/images/{kept_sha}").status_code == 200
        missing = httpx.get(f"{server.url}/images/{lost_sha}")
        assert missing.status_code == 404
        assert missing.json()["detail"] == (f"image {lost_sha} is recorded but its file is missing (an upload cut "
                                            "short): uploading the image again restores it")
        assert httpx.get(f"{server.url}/images/{'0' * 64}").json()["detail"] == "no such image"
        assert httpx.get(f"{server.url}/history").status_code == 200
    finally:
        server.stop()
    log = server.log.read_text()
    assert "removed 1 unfinished upload files and 1 images no comparison uses" in log
    assert f"1 stored images have no file (uploads cut short; uploading them again restores them): {lost_sha[:12]}" \
        in log
