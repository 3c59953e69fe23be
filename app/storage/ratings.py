"""Ratings: one per rater and output, replaced when the rater rates again."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Table, Text, bindparam, func, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from app.storage import battles
from app.storage.checks import NOTE_MAX_CHARS, check_score, check_text
from app.storage.db import reading, session, transaction, write_lock
from app.storage.tables import (
    Output,
    Rating,
    UTCDateTime,
    by_rater_within,
    utcnow,
)

RATINGS: Table = Rating.__table__  # type: ignore[attr-defined]
NOW = bindparam("now", type_=UTCDateTime())  # one time for created_at and updated_at
NOTE = bindparam("text", type_=Text())  # None: keep the note the rating has (a new one gets "")
_SAVED = (RATINGS.c.id, RATINGS.c.created_at, RATINGS.c.updated_at, RATINGS.c.note)
_REPLACE = (update(RATINGS)
            .where(RATINGS.c.output_id == bindparam("output"), RATINGS.c.rater == bindparam("by"))
            .values(score=bindparam("stars"), note=func.coalesce(NOTE, RATINGS.c.note), updated_at=NOW)
            .returning(*_SAVED))


def _insert(dialect: Any) -> Any:
    """INSERT ... ON CONFLICT (output_id, rater) DO UPDATE, in the dialect's own construct."""
    statement = dialect.insert(RATINGS).values(
        output_id=bindparam("output"), rater=bindparam("by"), score=bindparam("stars"),
        note=func.coalesce(NOTE, ""), created_at=NOW, updated_at=NOW)
    return statement.on_conflict_do_update(
        index_elements=[RATINGS.c.output_id, RATINGS.c.rater],
        set_={"score": statement.excluded.score, "note": func.coalesce(NOTE, RATINGS.c.note),
              "updated_at": statement.excluded.updated_at}).returning(*_SAVED)


_INSERTS = {"sqlite": _insert(sqlite), "postgresql": _insert(postgresql)}


def rate(engine: Engine, output_id: int, score: int, note: str | None = None, rater: str = "") -> tuple[Rating, bool]:
    """Save a rater's score (1–5) and note for an output, replacing that rater's earlier one. A note of
    None keeps the note the rater gave before (none: ""); only a given note, "" included, replaces it.

    Returns the rating and whether it is new, once it is committed. Raises ValueError naming the field and
    its limit, LookupError for an unknown output.

    A replacement is one UPDATE; a new rating an UPDATE that finds nothing, then an INSERT that becomes an
    update if another replica of a server database inserted the same rater's rating in between. On a
    SQLite file, ratings that arrive while another is being written are committed together in the next
    transaction (see `_commit_together`): each caller still returns only after its rating is committed
    with the file's full durability, but one fsync serves them all.
    """
    check_score(score)
    if note is not None:
        check_text("note", note, max_chars=NOTE_MAX_CHARS)
    check_text("rater", rater)
    now = utcnow()
    pending = _Pending({"output": output_id, "by": rater, "stars": score, "text": note, "now": now})
    lock = write_lock(engine)
    if lock is None:  # a server database: concurrent transactions, its own group commit
        _commit(engine, [pending])
    else:
        _commit_together(engine, lock, pending)
    if isinstance(pending.error, IntegrityError) and not _output_exists(engine, output_id):
        raise LookupError(f"output {output_id} not found") from None
    if pending.error is not None:
        raise pending.error
    saved = pending.saved
    rating = Rating(id=saved.id, output_id=output_id, score=score, note=saved.note, rater=rater,
                    created_at=saved.created_at, updated_at=saved.updated_at)
    return rating, pending.created


@dataclass(eq=False)
class _Pending:
    """One rating on its way to the database, and what became of it."""

    values: dict[str, Any]
    done: threading.Event = field(default_factory=threading.Event)  # set when written, or when it is to lead
    finished: bool = False
    saved: Any = None  # (id, created_at, updated_at)
    created: bool = False
    error: BaseException | None = None


@dataclass(eq=False)
class _Queue:
    """The ratings waiting for one SQLite file while one of them (the leader) writes a batch."""

    mutex: threading.Lock = field(default_factory=threading.Lock)
    waiting: list[_Pending] = field(default_factory=list)
    writing: bool = False


_queues: dict[object, _Queue] = {}  # by the file's write lock
_queues_guard = threading.Lock()


def _commit_together(engine: Engine, lock: object, pending: _Pending) -> None:
    """Group commit: the first caller to find no batch being written leads, takes every rating waiting
    (its own among them), writes them in one transaction and hands the lead to the first that arrived
    meanwhile; the others wait for their rating's outcome. With FULL synchronous each commit is an
    fsync of the WAL, so 16 raters at once pay for a few fsyncs instead of 16."""
    with _queues_guard:
        queue = _queues.setdefault(lock, _Queue())
    with queue.mutex:
        queue.waiting.append(pending)
        lead = not queue.writing
        queue.writing = True
    if not lead:
        pending.done.wait()
        if pending.finished:
            return
    try:
        with queue.mutex:
            batch, queue.waiting = queue.waiting, []
        _commit(engine, batch)
    finally:
        with queue.mutex:
            if queue.waiting:
                queue.waiting[0].done.set()  # not finished: it leads the next batch
            else:
                queue.writing = False


def _commit(engine: Engine, batch: list[_Pending]) -> None:
    """Write `batch` in one transaction; every rating in it ends finished, with its row or its error.

    A rating the database refuses (the foreign key: an unknown output) fails alone on SQLite, where a
    refused statement undoes only itself and the transaction goes on; a server database gets batches of
    one. Anything else (I/O, a full disk, a locked file) fails the whole batch: none of it was committed."""
    outcomes: list[Any] = []
    try:
        with transaction(engine) as connection:
            for item in batch:
                try:
                    outcomes.append(_save(connection, item.values))
                except IntegrityError as exc:
                    if connection.dialect.name != "sqlite":
                        raise
                    outcomes.append(exc)
    except BaseException as exc:  # noqa: BLE001 - every caller of the batch gets it
        outcomes = [exc] * len(batch)
    for item, outcome in zip(batch, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            item.error = outcome
        else:
            item.saved, item.created = outcome
        item.finished = True
        item.done.set()


def _save(connection: Connection, values: dict[str, Any]) -> tuple[Any, bool]:
    """One rating: (its row's id and times, whether it is new)."""
    saved = connection.execute(_REPLACE, values).first()
    if saved is not None:
        return saved, False
    saved = connection.execute(_INSERTS[connection.dialect.name], values).one()
    return saved, saved.created_at == values["now"]  # else another writer's row, which this replaced


def rate_unless_hidden(engine: Engine, output_id: int, score: int, note: str | None = None,
                       rater: str = "") -> tuple[Rating, bool] | None:
    """`rate`, unless the output is a panel of a battle without a vote (`battles.output_hidden`): then None.
    One call for a request to make in its worker thread."""
    if battles.output_hidden(engine, output_id):
        return None
    return rate(engine, output_id, score, note, rater)


def _output_exists(engine: Engine, output_id: int) -> bool:
    with reading(engine) as connection:
        return connection.execute(select(Output.id).where(col(Output.id) == output_id)).first() is not None


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
