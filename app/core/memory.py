"""Giving memory back: after a large request the C heap keeps its free pages unless asked to return them."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import sys
from typing import Any


def give_back(collect: bool = False, generation: int = 2) -> None:
    """Return the C heap's free pages to the system (glibc's malloc_trim; a no-op elsewhere), so that a
    process does not stay at the size of its largest request. `collect`: collect garbage cycles first
    (a worker's tensors; decoded images are freed as soon as they are dropped), up to `generation`
    (2, a full collection: 250 ms in a process holding transformers unless its imports are frozen)."""
    if collect:
        gc.collect(generation)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)


def overhead_bytes(overhead: dict[str, Any] | None) -> int | None:
    """What a worker process holds before any weights, in the memory the pool budgets: the CUDA context
    on a GPU, the process itself (interpreter, torch, transformers) on a CPU. `overhead` is what the
    worker measured (`app.worker.warmup.warm_up`)."""
    if not overhead:
        return None
    key = "device_bytes" if str(overhead.get("device", "")).startswith("cuda") else "host_bytes"
    value = overhead.get(key)
    return None if value is None else int(value)
