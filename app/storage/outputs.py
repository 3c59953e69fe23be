"""Outputs as they progress: status, text, timings; the start-up sweep."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, update
from sqlmodel import col, select

from app.storage.checks import check_status, strip_nul
from app.storage.db import session
from app.storage.tables import (
    FINISHED_STATUSES,
    OUTPUT_STATUSES,
    UNFINISHED_STATUSES,
    Output,
    OutputStatus,
    utcnow,
)

INTERRUPTED_ERROR = "the server stopped before this output finished"


_FIXED_OUTPUT_FIELDS = {"id", "comparison_id", "position", "created_at"}


def update_output(engine: Engine, output_id: int, **fields: Any) -> None:
    """Set some columns of an output (status, text, timings, image_note, ...).

    Raises ValueError for an unknown or fixed column or an unknown status, LookupError for an
    unknown output.
    """
    unknown = sorted(set(fields) - set(Output.model_fields) | (set(fields) & _FIXED_OUTPUT_FIELDS))
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: not a column of outputs that can be updated")
    if "status" in fields:
        check_status(fields["status"], OUTPUT_STATUSES)
    if not fields:
        return
    fields = {key: strip_nul(value) for key, value in fields.items()}
    with session(engine) as db:
        result = db.exec(update(Output).where(col(Output.id) == output_id).values(**fields))
        if result.rowcount == 0:
            raise LookupError(f"output {output_id} not found")


def finish_output(
    engine: Engine,
    output_id: int,
    *,
    status: str = "done",
    text: str | None = None,
    error: str | None = None,
    ttft_s: float | None = None,
    total_s: float | None = None,
    prompt_tokens: int | None = None,
    tokens: int | None = None,
    tokens_per_s: float | None = None,
) -> None:
    """Record an output's end: final status (done/error/interrupted), text, error, timings, finish time.

    Without `tokens_per_s`, it is computed as completion tokens over total seconds.
    """
    check_status(status, FINISHED_STATUSES)
    if tokens_per_s is None and tokens is not None and total_s:
        tokens_per_s = tokens / total_s
    fields: dict[str, Any] = {
        "status": status,
        "error": error,
        "ttft_s": ttft_s,
        "total_s": total_s,
        "prompt_tokens": prompt_tokens,
        "tokens": tokens,
        "tokens_per_s": tokens_per_s,
        "finished_at": utcnow(),
    }
    if text is not None:
        fields["text"] = text
    update_output(engine, output_id, **fields)


def mark_unfinished_interrupted(engine: Engine, created_before: datetime | None = None) -> int:
    """On start-up: outputs still queued, loading or generating become "interrupted"; returns how many.

    With `created_before`, only older outputs: on a database several replicas share, younger ones
    may belong to a replica that is still answering them.
    """
    unfinished: Any = col(Output.status).in_(UNFINISHED_STATUSES)
    if created_before is not None:
        unfinished = unfinished & (col(Output.created_at) < created_before)
    with session(engine) as db:
        result = db.exec(
            update(Output)
            .where(unfinished)
            .values(
                status="interrupted",
                finished_at=utcnow(),
                error=func.coalesce(Output.error, INTERRUPTED_ERROR),
            )
        )
        return result.rowcount


def speeds_by_model(engine: Engine) -> dict[str, tuple[list[float], list[float]]]:
    """Per model, the time to first token and the tokens/s of every finished answer."""
    found: dict[str, tuple[list[float], list[float]]] = {}
    with session(engine, read_only=True) as db:
        rows = db.exec(select(Output.model, Output.ttft_s, Output.tokens_per_s)
                       .where(Output.status == OutputStatus.DONE)).all()
    for model, ttft, rate in rows:
        ttfts, rates = found.setdefault(model, ([], []))
        if ttft is not None:
            ttfts.append(float(ttft))
        if rate is not None:
            rates.append(float(rate))
    return found
