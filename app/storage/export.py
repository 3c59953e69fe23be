"""Ratings as CSV (RFC 4180, UTF-8), streamed line by line, with spreadsheet formulas neutralised."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any, TextIO

from sqlalchemy import Engine
from sqlmodel import col, select

from app.storage.db import session
from app.storage.tables import Comparison, ComparisonImage, Output, Rating, as_utc, saved_id

COLUMNS = (
    "rating_id", "rated_at", "rater", "comparison_id", "prompt", "images", "model", "repo",
    "revision", "output", "score", "note", "ttft_s", "total_s", "tokens", "params",
)  # fmt: skip
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")  # ＝＋－＠
FORMULA_SIGNS = ("=", "+", "-", "@", "\uff1d", "\uff0b", "\uff0d", "\uff20")
BATCH_SIZE = 500


class _Line:
    """A file-like sink that hands back what the csv writer writes."""

    def write(self, text: str) -> str:
        return text


def is_formula(value: str) -> bool:
    """Text a spreadsheet may run as a formula: it starts with = + - @ (or their full-width forms), a tab,
    CR or LF, or with any whitespace before one of those signs."""
    return value.startswith(FORMULA_STARTS) or value.lstrip().startswith(FORMULA_SIGNS)


def neutralise(value: str) -> str:
    """Prefix a quote to text that a spreadsheet would run as a formula."""
    return "'" + value if is_formula(value) else value


def _cell(value: Any) -> Any:
    """Numbers stay numbers, None is empty, text is neutralised."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return value
    return neutralise(str(value))


def format_row(values: list[Any]) -> str:
    """One CSV record ending in CRLF, quoted only where needed."""
    writer = csv.writer(_Line(), quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n")
    return writer.writerow([_cell(value) for value in values])


def _timestamp(value: datetime) -> str:
    """ISO 8601 in UTC with a Z, to the second."""
    return as_utc(value).isoformat(timespec="seconds").replace("+00:00", "Z")


def _compact_json(value: dict[str, Any]) -> str:
    """JSON with sorted keys and no spaces."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _record(rating: Rating, output: Output, comparison: Comparison, images: str) -> list[Any]:
    """The cells of one rating, in COLUMNS order."""
    return [
        rating.id, _timestamp(rating.updated_at), rating.rater, comparison.id, comparison.prompt, images,
        output.model, output.repo, output.revision, output.text, rating.score, rating.note,
        output.ttft_s, output.total_s, output.tokens, _compact_json({**comparison.params, **output.params}),
    ]  # fmt: skip


def ratings_csv_rows(
    engine: Engine,
    model: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Iterator[str]:
    """The header, then one CSV record per rating (oldest rating id first).

    Filters: the output's model id, and `since <= rated_at < until` (naive datetimes are UTC).
    Rows are read in batches by rating id, each batch in its own short read transaction.
    """
    yield format_row(list(COLUMNS))
    last_id = 0
    while True:
        batch = _read_batch(engine, last_id, model, since, until)
        yield from (format_row(record) for record in batch)
        if len(batch) < BATCH_SIZE:
            return
        last_id = batch[-1][0]


def _read_batch(
    engine: Engine, after_id: int, model: str | None, since: datetime | None, until: datetime | None
) -> list[list[Any]]:
    """Up to BATCH_SIZE records with rating id above `after_id`."""
    query = (
        select(Rating, Output, Comparison)
        .join(Output, col(Output.id) == col(Rating.output_id))
        .join(Comparison, col(Comparison.id) == col(Output.comparison_id))
        .where(col(Rating.id) > after_id)
        .order_by(col(Rating.id))
        .limit(BATCH_SIZE)
    )
    if model is not None:
        query = query.where(col(Output.model) == model)
    if since is not None:
        query = query.where(col(Rating.updated_at) >= as_utc(since))
    if until is not None:
        query = query.where(col(Rating.updated_at) < as_utc(until))
    with session(engine, read_only=True) as db:
        rows = db.exec(query).all()
        images = _images_cells(db, {saved_id(comparison) for _, _, comparison in rows})
    return [
        _record(rating, output, comparison, images.get(saved_id(comparison), ""))
        for rating, output, comparison in rows
    ]


def _images_cells(db: Any, comparison_ids: set[int]) -> dict[int, str]:
    """Per comparison: "name:sha256;name:sha256" in image order."""
    if not comparison_ids:
        return {}
    links = db.exec(
        select(ComparisonImage)
        .where(col(ComparisonImage.comparison_id).in_(sorted(comparison_ids)))
        .order_by(col(ComparisonImage.comparison_id), col(ComparisonImage.position))
    ).all()
    parts: dict[int, list[str]] = {}
    for link in links:
        parts.setdefault(link.comparison_id, []).append(f"{link.name}:{link.sha256}")
    return {comparison_id: ";".join(items) for comparison_id, items in parts.items()}


def write_ratings_csv(
    engine: Engine,
    out_file: TextIO,
    model: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> int:
    """Write the ratings CSV to a text file opened with newline=""; returns the number of ratings."""
    count = -1
    for count, line in enumerate(ratings_csv_rows(engine, model, since, until)):  # noqa: B007
        out_file.write(line)
    return count
