"""The start-up sweep of shared-image folders: what servers that stopped abruptly left, and nothing else."""

from __future__ import annotations

import os
import time

from app.storage.sweep import SHARED_STALE_S, sweep_shared


def test_stale_folders_go_and_fresh_ones_and_our_own_stay(tmp_path):
    shared = tmp_path / "shared"
    stale, fresh, ours = shared / "dead0001", shared / "live0002", shared / "mine0003"
    for folder in (stale, fresh, ours):
        folder.mkdir(parents=True)
        (folder / f"{'ab' * 32}.ppm").write_bytes(b"P6\n1 1\n255\n\x00\x00\x00")
    old = time.time() - SHARED_STALE_S - 60
    for folder in (stale, ours):
        os.utime(folder, (old, old))
    (shared / "not-a-folder").write_text("kept")
    assert sweep_shared(shared, keep=ours) == 1
    assert not stale.exists() and fresh.exists() and ours.exists() and (shared / "not-a-folder").exists()
    assert sweep_shared(tmp_path / "missing") == 0
