"""Measured model sizes, kept between runs so the pool's next plan is better."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from app.catalog import ModelSpec

DEFAULT_OVERHEAD_GB = 0.0


class SizeBook:
    """The last measured size of each model, in GB, persisted as a small JSON file."""

    FILE_NAME = "measured_sizes.json"

    def __init__(self, path: Path | None, sizes: dict[str, float] | None = None,
                 overhead_gb: float = DEFAULT_OVERHEAD_GB) -> None:
        self.path = path
        self.overhead_gb = overhead_gb
        self._sizes = dict(sizes or {})
        self._lock = threading.Lock()

    @classmethod
    def open(cls, data_dir: str | Path | None, overhead_gb: float = DEFAULT_OVERHEAD_GB) -> SizeBook:
        if data_dir is None:
            return cls(None, overhead_gb=overhead_gb)
        path = Path(data_dir) / cls.FILE_NAME
        try:
            sizes = {str(k): float(v) for k, v in json.loads(path.read_text()).items()}
        except (FileNotFoundError, ValueError, AttributeError):
            sizes = {}
        return cls(path, sizes, overhead_gb)

    def get(self, model_id: str) -> float | None:
        return self._sizes.get(model_id)

    def merge(self, sizes: dict[str, float]) -> None:
        """Take measurements kept elsewhere (the database), without writing them here."""
        self._sizes.update(sizes)

    def record(self, model_id: str, measured_gb: float) -> None:
        """Remember a measurement; written atomically so a crash never leaves a torn file."""
        with self._lock:
            self._sizes[model_id] = round(measured_gb, 3)
            if self.path is None:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temp = self.path.with_suffix(".tmp")
            temp.write_text(json.dumps(self._sizes, indent=1, sort_keys=True))
            os.replace(temp, self.path)

    def planned_gb(self, spec: ModelSpec) -> float | None:
        """What the pool plans for: max(catalogue figure, last measurement) + per-process overhead."""
        if spec.is_remote or spec.min_gpu_gb is None:
            return None
        return round(max(spec.min_gpu_gb, self._sizes.get(spec.id, 0.0)) + self.overhead_gb, 3)


class DbSizeBook(SizeBook):
    """Measured sizes kept in the database (`measured_sizes` table)."""

    def __init__(self, engine: object, overhead_gb: float = DEFAULT_OVERHEAD_GB) -> None:
        from app.store import load_measured_sizes

        super().__init__(None, load_measured_sizes(engine), overhead_gb)
        self.engine = engine

    def record(self, model_id: str, measured_gb: float) -> None:
        from app.store import save_measured_size

        super().record(model_id, measured_gb)
        save_measured_size(self.engine, model_id, round(measured_gb, 3))
