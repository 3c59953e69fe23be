"""A spare worker's preparation: everything a load needs that does not depend on the model.

Starting an interpreter and importing torch and transformers takes seconds, against milliseconds
to read a tiny model's weights. A spare does all of it before it is told which model to serve:
imports torch, transformers and the adapters of the families it may be given, sets the CPU
thread count, and creates the CUDA context on a GPU. Then it measures what the process itself
holds (its overhead), which the pool adds to every model's plan.
"""

from __future__ import annotations

import contextlib
import gc
import os
import time
from pathlib import Path
from typing import Any


def process_bytes() -> int:
    """Memory this process holds alone and that another worker would hold again: its anonymous pages
    and their swap (heap, tensors, Python objects). Not the library code it maps (torch's and
    transformers' shared objects, ~0.5 GB here): those are page-cache pages, counted in the unique set
    of the first worker only and shared by every later one, so a unique-set figure swung from 0.88 to
    0.43 GB between the first worker and the next. Where /proc says nothing: the unique set size."""
    with contextlib.suppress(OSError, ValueError):
        fields = dict(line.split(":", 1) for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:])
        return sum(int(fields[name].split()[0]) for name in ("Anonymous", "Swap")) * 1024
    import psutil

    process = psutil.Process()
    with contextlib.suppress(psutil.Error, AttributeError):
        return int(process.memory_full_info().uss)
    return int(process.memory_info().rss)


def cuda_context_bytes() -> int | None:
    """Device memory this process holds outside torch's allocator (the CUDA context and its kernels),
    from NVML's per-process figure; None where NVML cannot say."""
    try:
        import pynvml  # type: ignore[import-not-found]
        import torch

        pynvml.nvmlInit()
        index = torch.cuda.current_device()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
            if proc.pid == os.getpid() and proc.usedGpuMemory:
                return max(0, int(proc.usedGpuMemory) - int(torch.cuda.memory_reserved()))
    except Exception:  # no NVML, no permission, a container without PID visibility
        return None
    return None


def warm_up(device: str, families: list[str]) -> dict[str, Any]:
    """Import what loading needs and create the device's context; returns the overhead measured after.

    `device` is already resolved ("cpu", "cuda", "cuda:1"). The families' adapter modules are imported
    (and through them the transformers classes they load with); an unknown family is skipped here
    and reported at load time as usual."""
    started = time.perf_counter()
    import torch
    import transformers

    for name in ("AutoModelForImageTextToText", "AutoModelForCausalLM", "AutoProcessor", "TextIteratorStreamer"):
        with contextlib.suppress(Exception):  # lazy modules import on first access; pinned runtimes lack some
            getattr(transformers, name)
    from app.adapters import adapter_for

    for family in families:
        with contextlib.suppress(Exception):
            adapter_for(family)
    overhead: dict[str, Any] = {"host_bytes": None, "device_bytes": 0, "device": device}
    if device.startswith("cuda"):
        torch.empty(1, device=device)  # creates the context now, not during the first load
        torch.cuda.synchronize()
        overhead["device_bytes"] = cuda_context_bytes()
    overhead["host_bytes"] = process_bytes()
    overhead["warm_s"] = round(time.perf_counter() - started, 3)
    gc.freeze()  # the imports live as long as the process: collections need not walk them (250 ms each)
    return overhead
