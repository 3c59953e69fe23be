"""Measured model sizes kept in the database, for the pool's next plan."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine
from sqlmodel import select

from app.storage.db import session
from app.storage.tables import (
    MeasuredSize,
    utcnow,
)


def save_measured_size(
    engine: Engine, model: str, measured_gb: float, measured_at: datetime | None = None
) -> None:
    """Remember the device memory a model was measured to hold (replaces the previous figure)."""
    if not isinstance(measured_gb, int | float) or isinstance(measured_gb, bool) or measured_gb < 0:
        raise ValueError(f"measured_gb: expected a number of GB ≥ 0, got {measured_gb!r}")
    with session(engine) as db:
        row = db.get(MeasuredSize, model) or MeasuredSize(model=model, measured_gb=0.0)
        row.measured_gb = float(measured_gb)
        row.measured_at = measured_at or utcnow()
        db.add(row)


def load_measured_sizes(engine: Engine) -> dict[str, float]:
    """Every model's last measured size in GB."""
    with session(engine, read_only=True) as db:
        return {row.model: row.measured_gb for row in db.exec(select(MeasuredSize)).all()}
