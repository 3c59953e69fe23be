"""SQLModel tables: comparisons, their images, model outputs, ratings and measured model sizes."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, CheckConstraint, DateTime, Index, Text, TypeDecorator, UniqueConstraint
from sqlmodel import Field, SQLModel


class OutputStatus(StrEnum):
    """Where one model's answer is: waiting, its model loading, generating, or finished one way or another."""

    QUEUED = "queued"
    LOADING = "loading"
    GENERATING = "generating"
    DONE = "done"
    ERROR = "error"
    INTERRUPTED = "interrupted"


OUTPUT_STATUSES = tuple(OutputStatus)
UNFINISHED_STATUSES = (OutputStatus.QUEUED, OutputStatus.LOADING, OutputStatus.GENERATING)
FINISHED_STATUSES = (OutputStatus.DONE, OutputStatus.ERROR, OutputStatus.INTERRUPTED)
BACKENDS = ("local", "remote")
SCORE_MIN, SCORE_MAX = 1, 5


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """An aware UTC datetime; a naive value is taken to be UTC already."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class UTCDateTime(TypeDecorator):
    """Stores naive UTC on every database and gives back aware UTC datetimes."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else as_utc(value).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def by_rater_within(query: Any, table: Any, since: datetime | None, until: datetime | None,
                    rater: str | None) -> Any:
    """`query` narrowed to rows of `table` changed in [since, until) and by `rater`, where given."""
    if since is not None:
        query = query.where(table.updated_at >= as_utc(since))
    if until is not None:
        query = query.where(table.updated_at < as_utc(until))
    if rater is not None:
        query = query.where(table.rater == rater)
    return query


def saved_id(row: Any) -> int:
    """The primary key of a row that has been flushed (SQLModel types it `int | None` until then)."""
    if row.id is None:
        raise RuntimeError(f"{type(row).__name__} has no id yet: flush the session first")
    return int(row.id)


def _in(column: str, values: tuple[str, ...]) -> str:
    """A portable `column IN (...)` check expression."""
    return f"{column} IN ({', '.join(repr(str(value)) for value in values)})"


class Comparison(SQLModel, table=True):
    """One prompt with its images sent to several models."""

    __tablename__ = "comparisons"

    id: int | None = Field(default=None, primary_key=True)
    prompt: str = Field(sa_type=Text)
    params: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
    rater: str = Field(default="", index=True)
    blind: bool = Field(default=False)


class Image(SQLModel, table=True):
    """An image file stored once under the data directory, named by its SHA-256."""

    __tablename__ = "images"
    __table_args__ = (
        CheckConstraint("size_bytes >= 0", name="ck_images_size"),
        CheckConstraint("width > 0 AND height > 0", name="ck_images_dims"),
    )

    sha256: str = Field(primary_key=True, max_length=64)
    original_name: str = Field(default="")
    size_bytes: int
    format: str
    width: int
    height: int
    first_seen: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ComparisonImage(SQLModel, table=True):
    """Which images a comparison used, in order, under the name they were uploaded with."""

    __tablename__ = "comparison_images"
    __table_args__ = (CheckConstraint("position >= 0", name="ck_comparison_images_position"),)

    comparison_id: int = Field(foreign_key="comparisons.id", primary_key=True, ondelete="CASCADE")
    position: int = Field(primary_key=True)
    sha256: str = Field(foreign_key="images.sha256", index=True, max_length=64)
    name: str = Field(default="")


class Output(SQLModel, table=True):
    """One model's answer to a comparison, with what produced it and how long it took."""

    __tablename__ = "outputs"
    __table_args__ = (
        UniqueConstraint("comparison_id", "position", name="uq_outputs_position"),
        CheckConstraint(_in("status", OUTPUT_STATUSES), name="ck_outputs_status"),
        CheckConstraint(_in("backend", BACKENDS), name="ck_outputs_backend"),
        # the history's "has an answer of this model" check: both columns, or SQLite walks every answer of the model
        Index("ix_outputs_comparison_model", "comparison_id", "model"),
    )

    id: int | None = Field(default=None, primary_key=True)
    comparison_id: int = Field(foreign_key="comparisons.id", ondelete="CASCADE")
    position: int
    model: str = Field(index=True)
    repo: str = Field(default="")
    revision: str = Field(default="")
    backend: str = Field(default="local")
    runtime: str = Field(default="default")
    transformers_version: str | None = None
    dtype: str | None = None
    seed: int | None = None
    params: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    image_note: str | None = Field(default=None, sa_type=Text)
    status: str = Field(default=OutputStatus.QUEUED)
    text: str = Field(default="", sa_type=Text)
    error: str | None = Field(default=None, sa_type=Text)
    ttft_s: float | None = None
    total_s: float | None = None
    prompt_tokens: int | None = None
    tokens: int | None = None
    tokens_per_s: float | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class Rating(SQLModel, table=True):
    """A person's score (1–5) and note for one output; one per rater and output."""

    __tablename__ = "ratings"
    __table_args__ = (
        UniqueConstraint("output_id", "rater", name="uq_ratings_output_rater"),
        CheckConstraint(f"score BETWEEN {SCORE_MIN} AND {SCORE_MAX}", name="ck_ratings_score"),
        Index("ix_ratings_updated_at", "updated_at"),
        Index("ix_ratings_rater", "rater"),
    )

    id: int | None = Field(default=None, primary_key=True)
    output_id: int = Field(foreign_key="outputs.id", ondelete="CASCADE")
    score: int
    note: str = Field(default="", sa_type=Text)
    rater: str = Field(default="")
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class MeasuredSize(SQLModel, table=True):
    """The last measured device memory of a model, which the pool plans with next time."""

    __tablename__ = "measured_sizes"

    model: str = Field(primary_key=True)
    measured_gb: float
    measured_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Battle(SQLModel, table=True):
    """A blind comparison whose panels are anonymous until a vote: labels A, B, … in a stored random order."""

    __tablename__ = "battles"

    id: int | None = Field(default=None, primary_key=True)
    comparison_id: int = Field(foreign_key="comparisons.id", unique=True, ondelete="CASCADE")
    drawn: bool = Field(default=False)  # the server chose the models
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class BattlePanel(SQLModel, table=True):
    """Which output a battle shows under which label, in display order."""

    __tablename__ = "battle_panels"
    __table_args__ = (UniqueConstraint("output_id", name="uq_battle_panels_output"),
                      CheckConstraint("position >= 0", name="ck_battle_panels_position"))

    battle_id: int = Field(foreign_key="battles.id", primary_key=True, ondelete="CASCADE")
    label: str = Field(primary_key=True, max_length=2)
    output_id: int = Field(foreign_key="outputs.id", ondelete="CASCADE")
    position: int


class Vote(SQLModel, table=True):
    """A rater's verdict on a battle: the best panel's label, "tie" or "bothbad"; flagged votes keep why."""

    __tablename__ = "votes"
    __table_args__ = (UniqueConstraint("battle_id", "rater", name="uq_votes_battle_rater"),
                      Index("ix_votes_updated_at", "updated_at"))

    id: int | None = Field(default=None, primary_key=True)
    battle_id: int = Field(foreign_key="battles.id", ondelete="CASCADE", index=True)
    rater: str = Field(default="")
    winner: str = Field(max_length=16)
    flagged: bool = Field(default=False)
    flag_reason: str | None = Field(default=None, sa_type=Text)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
