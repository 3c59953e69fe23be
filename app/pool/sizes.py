"""Measured model sizes, which the pool plans with; where they are kept is the caller's choice."""

from __future__ import annotations

import threading
from collections.abc import Callable

from app.core.catalog import ModelSpec


class SizeBook:
    """The last measured size of each model, in GB, and each runtime's per-process overhead.

    `overhead_gb`: a fixed figure to add to every plan instead of the measured overhead (None, the
    default: what the runtime's workers measured at start-up, 0 until one has). `persist(model_id,
    gb)` keeps a new measurement somewhere that outlives the process (the app passes the database's)."""

    def __init__(self, sizes: dict[str, float] | None = None, overhead_gb: float | None = None,
                 persist: Callable[[str, float], None] | None = None) -> None:
        self.overhead_gb = overhead_gb
        self.measured_overhead_gb: dict[str, float] = {}  # runtime → what its last worker held before weights
        self._sizes = dict(sizes or {})
        self._persist = persist
        self._lock = threading.Lock()

    def get(self, model_id: str) -> float | None:
        return self._sizes.get(model_id)

    def record(self, model_id: str, measured_gb: float) -> None:
        """Remember a measurement (and persist it, when the book was given somewhere to keep it)."""
        measured = round(measured_gb, 3)
        with self._lock:
            self._sizes[model_id] = measured
        if self._persist is not None:
            self._persist(model_id, measured)

    def record_overhead(self, runtime: str, measured_gb: float) -> None:
        """Remember what a worker of `runtime` held before loading weights (imports, CUDA context)."""
        with self._lock:
            self.measured_overhead_gb[runtime] = round(measured_gb, 3)

    def overhead_for(self, runtime: str) -> float:
        """The per-process overhead planned for a worker of `runtime`."""
        if self.overhead_gb is not None:
            return self.overhead_gb
        return self.measured_overhead_gb.get(runtime, 0.0)

    def planned_gb(self, spec: ModelSpec) -> float | None:
        """What the pool plans for: max(catalogue figure, last measurement) + per-process overhead."""
        if spec.is_remote or spec.min_gpu_gb is None:
            return None
        return round(max(spec.min_gpu_gb, self._sizes.get(spec.id, 0.0)) + self.overhead_for(spec.runtime), 3)
