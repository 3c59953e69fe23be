"""Ratings: one per rater and output, replaced when the rater rates again."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from app.storage.checks import NOTE_MAX_CHARS, check_score, check_text
from app.storage.db import session
from app.storage.tables import (
    Output,
    Rating,
    by_rater_within,
    utcnow,
)


def rate(engine: Engine, output_id: int, score: int, note: str = "", rater: str = "") -> tuple[Rating, bool]:
    """Save a rater's score (1–5) and note for an output, replacing that rater's earlier one.

    Returns the rating and whether it is new. Raises ValueError naming the field and its limit,
    LookupError for an unknown output.
    """
    check_score(score)
    check_text("note", note, max_chars=NOTE_MAX_CHARS)
    check_text("rater", rater)
    with session(engine) as db:
        if db.get(Output, output_id) is None:
            raise LookupError(f"output {output_id} not found")
        existing = _find_rating(db, output_id, rater)
        if existing is None:
            rating = Rating(output_id=output_id, score=score, note=note, rater=rater)
            try:
                with db.begin_nested():
                    db.add(rating)
                return rating, True
            except IntegrityError:  # another writer (on a server database) got there first
                existing = _find_rating(db, output_id, rater)
                if existing is None:
                    raise
        existing.score, existing.note, existing.updated_at = score, note, utcnow()
        db.add(existing)
        db.flush()
        return existing, False


def _find_rating(db: Session, output_id: int, rater: str) -> Rating | None:
    """The rating this rater gave this output, if any."""
    return db.exec(select(Rating).where(Rating.output_id == output_id, Rating.rater == rater)).first()


def scores_by_model(engine: Engine, since: datetime | None = None, until: datetime | None = None,
                    rater: str | None = None) -> dict[str, list[int]]:
    """Every 1–5 score given, grouped by the model of the rated output."""
    query = by_rater_within(select(Output.model, Rating.score).join(Output, col(Output.id) == col(Rating.output_id)),
                            Rating, since, until, rater)
    found: dict[str, list[int]] = {}
    with session(engine, read_only=True) as db:
        for model, score in db.exec(query).all():
            found.setdefault(model, []).append(int(score))
    return found


def ratings_fingerprint(engine: Engine) -> tuple[int, datetime | None]:
    """(number of ratings, time of the newest change)."""
    with session(engine, read_only=True) as db:
        count, newest = db.exec(select(func.count(col(Rating.id)), func.max(Rating.updated_at))).one()
    return int(count), newest
