"""Ratings as CSV (RFC 4180, UTF-8) with spreadsheet formulas neutralised: one read transaction, rows
fetched in batches by a Core select, one csv writer."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import lru_cache
from typing import Any, Protocol

from sqlalchemy import Connection, DateTime, Engine, Select, Text, cast, select, type_coerce
from sqlmodel import col

from app.storage.db import READ_ONLY_OPTION
from app.storage.tables import Battle, Comparison, ComparisonImage, Output, Rating, as_utc

COLUMNS = (
    "rating_id", "rated_at", "rater", "comparison_id", "prompt", "images", "model", "repo",
    "revision", "output", "score", "note", "ttft_s", "total_s", "tokens", "params", "blind",
)  # fmt: skip
# `blind`: 1 when the rating was given on a blind comparison, whose model names the page hides from each rater
# until they rate; 0 otherwise, battles included (a battle's answers can be rated only after its vote named them).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")  # ＝＋－＠
FORMULA_SIGNS = ("=", "+", "-", "@", "\uff1d", "\uff0b", "\uff0d", "\uff20")
_FIRST_SIGNS = frozenset(FORMULA_STARTS)  # every formula start is one character
BATCH_SIZE = 2000  # rows fetched at a time
IN_LIST_SIZE = 500  # comparison ids per images query (under any SQLite's bound-parameter limit)


class Writable(Protocol):
    """A text file, or anything with its `write`."""

    def write(self, text: str, /) -> Any: ...


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
    if not value or (value[0] not in _FIRST_SIGNS and not value[0].isspace()):
        return value  # the common case, decided on the first character alone
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


def _compact_json(value: dict[str, Any]) -> str:
    """JSON with sorted keys and no spaces."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _naive_utc_timestamp(value: datetime) -> str:
    """ISO 8601 in UTC with a Z, to the second, from a naive UTC datetime as stored."""
    return value.isoformat(timespec="seconds") + "Z"


@lru_cache(maxsize=4096)
def _params_cell(comparison_params: str, output_params: str) -> str:
    """The params cell from the two JSON texts as stored: the comparison's, overridden by the output's."""
    return _compact_json({**json.loads(comparison_params), **json.loads(output_params)})


def _text(value: Any) -> str:
    """A text cell: empty for None, neutralised otherwise."""
    return "" if value is None else neutralise(str(value))


def _query(model: str | None, since: datetime | None, until: datetime | None) -> Select:
    """Ratings joined to their output and comparison, filtered, oldest rating id first (a Core select).

    The timestamp comes as stored (naive UTC) and the params as their JSON text, decoded once per distinct pair.
    """
    query = (
        select(
            col(Rating.id), type_coerce(col(Rating.updated_at), DateTime), col(Rating.rater), col(Comparison.id),
            col(Comparison.prompt), col(Output.model), col(Output.repo), col(Output.revision), col(Output.text),
            col(Rating.score), col(Rating.note), col(Output.ttft_s), col(Output.total_s), col(Output.tokens),
            cast(col(Comparison.params), Text), cast(col(Output.params), Text), col(Comparison.blind),
            col(Battle.id),
        )
        .select_from(Rating)
        .join(Output, col(Output.id) == col(Rating.output_id))
        .join(Comparison, col(Comparison.id) == col(Output.comparison_id))
        .outerjoin(Battle, col(Battle.comparison_id) == col(Comparison.id))
        .order_by(col(Rating.id))
    )  # fmt: skip
    if model is not None:
        query = query.where(col(Output.model) == model)
    if since is not None:
        query = query.where(col(Rating.updated_at) >= as_utc(since))
    if until is not None:
        query = query.where(col(Rating.updated_at) < as_utc(until))
    return query


@contextmanager
def _read_transaction(engine: Engine) -> Iterator[Connection]:
    """One read transaction: deferred on SQLite (a snapshot once read), REPEATABLE READ on PostgreSQL."""
    options: dict[str, Any] = {READ_ONLY_OPTION: True}
    if engine.dialect.name == "postgresql":
        options["isolation_level"] = "REPEATABLE READ"
    with engine.connect() as connection:
        connection.execution_options(**options)
        with connection.begin():
            yield connection


def _records(engine: Engine, model: str | None, since: datetime | None, until: datetime | None) -> Iterator[list[Any]]:
    """The cells of each rating, in COLUMNS order, read in batches of BATCH_SIZE from one transaction."""
    with _read_transaction(engine) as connection:
        result = connection.execution_options(yield_per=BATCH_SIZE).execute(_query(model, since, until))
        images: dict[int, str] = {}
        for batch in result.partitions():
            images = _images_cells(connection, {row[3] for row in batch}, images)
            for (rating_id, rated_at, rater, comparison_id, prompt, model_id, repo, revision, text, score, note,
                 ttft_s, total_s, tokens, comparison_params, output_params, blind, battle) in batch:  # fmt: skip
                yield [
                    rating_id, _naive_utc_timestamp(rated_at), _text(rater), comparison_id, _text(prompt),
                    images[comparison_id], _text(model_id), _text(repo), _text(revision), _text(text), score,
                    _text(note), _cell(ttft_s), _cell(total_s), _cell(tokens),
                    _params_cell(comparison_params, output_params), 1 if blind and battle is None else 0,
                ]  # fmt: skip


def _images_cells(connection: Connection, comparison_ids: set[int], known: dict[int, str]) -> dict[int, str]:
    """Per comparison: the neutralised "name:sha256;name:sha256" cell in image order (those in `known` kept)."""
    cells = {comparison_id: known[comparison_id] for comparison_id in comparison_ids & known.keys()}
    missing = sorted(comparison_ids - cells.keys())
    parts: dict[int, list[str]] = {comparison_id: [] for comparison_id in missing}
    for start in range(0, len(missing), IN_LIST_SIZE):
        links = connection.execute(
            select(col(ComparisonImage.comparison_id), col(ComparisonImage.name), col(ComparisonImage.sha256))
            .where(col(ComparisonImage.comparison_id).in_(missing[start : start + IN_LIST_SIZE]))
            .order_by(col(ComparisonImage.comparison_id), col(ComparisonImage.position))
        )
        for comparison_id, name, sha256 in links:
            parts[comparison_id].append(f"{name}:{sha256}")
    cells.update((comparison_id, _text(";".join(items))) for comparison_id, items in parts.items())
    return cells


def ratings_csv_rows(
    engine: Engine,
    model: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Iterator[str]:
    """The header, then one CSV record per rating (oldest rating id first), all from one read transaction.

    Filters: the output's model id, and `since <= rated_at < until` (naive datetimes are UTC).
    """
    writer = csv.writer(_Line(), quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n")
    yield writer.writerow(COLUMNS)
    for record in _records(engine, model, since, until):
        yield writer.writerow(record)


def write_ratings_csv(
    engine: Engine,
    out_file: Writable,
    model: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> int:
    """Write the ratings CSV (see `ratings_csv_rows`) with one writer into a text file opened with
    newline=""; returns the number of ratings."""
    writer = csv.writer(out_file, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    count = 0
    for record in _records(engine, model, since, until):
        writer.writerow(record)
        count += 1
    return count
