"""Comparisons with their images and outputs: create, read, list."""

from __future__ import annotations

import contextlib
import hashlib
import string
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, and_, bindparam, false, func, or_, true
from sqlalchemy import select as sa_select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from app.storage.checks import check_text
from app.storage.db import reading, session
from app.storage.files import DiskFull, discard, image_extension, image_path, publish, touch, write_temp
from app.storage.tables import (
    BACKENDS,
    Battle,
    BattlePanel,
    Comparison,
    ComparisonImage,
    Image,
    Output,
    Rating,
    Vote,
    saved_id,
)


@dataclass(frozen=True)
class StoredImageInput:
    """An uploaded image: its original name, raw bytes and what decoding it found."""

    name: str
    data: bytes
    format: str
    width: int
    height: int


@dataclass(frozen=True)
class OutputInput:
    """One model to run in a comparison, and what it will run with."""

    model: str
    repo: str = ""
    revision: str = ""
    backend: str = "local"
    runtime: str = "default"
    transformers_version: str | None = None
    dtype: str | None = None
    seed: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    image_note: str | None = None


@dataclass(frozen=True)
class CreatedComparison:
    """Ids of a new comparison and of its outputs (in model order), and its images' hashes."""

    id: int
    output_ids: list[int]
    image_sha256s: list[str]
    battle_id: int | None = None


def panel_label(position: int) -> str:
    """A battle panel's label: A, B, … Z, then AA, AB, …"""
    letters = string.ascii_uppercase
    return letters[position] if position < 26 else letters[position // 26 - 1] + letters[position % 26]


def check_image(index: int, image: StoredImageInput) -> None:
    """An image input with a name, bytes, a format and positive dimensions."""
    check_text(f"images[{index}].name", image.name)
    if not isinstance(image.data, bytes | bytearray | memoryview):
        raise ValueError(f"images[{index}].data: expected bytes")
    for name in ("width", "height"):
        value = getattr(image, name)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"images[{index}].{name}: expected a positive integer, got {value!r}")
    image_extension(image.format)


def check_output(index: int, output: OutputInput) -> None:
    """An output input naming a model and a known backend."""
    if not isinstance(output.model, str) or not output.model:
        raise ValueError(f"outputs[{index}].model: expected a non-empty model id")
    if output.backend not in BACKENDS:
        raise ValueError(
            f"outputs[{index}].backend: expected one of {', '.join(BACKENDS)}, got {output.backend!r}"
        )
    if not isinstance(output.params, dict):
        raise ValueError(f"outputs[{index}].params: expected a JSON object")


def create_comparison(
    engine: Engine,
    data_dir: Path,
    prompt: str,
    params: dict[str, Any],
    rater: str,
    blind: bool,
    images: list[StoredImageInput],
    outputs: list[OutputInput],
    battle: bool = False,
    drawn: bool = False,
) -> CreatedComparison:
    """Store a comparison, its images and its queued outputs, all or nothing.

    `battle`: the comparison is a battle, its outputs shown in the given order as panels A, B, …
    (`drawn`: the server chose its models).

    New image files are written to temp files and renamed onto their hash names before the rows are
    committed, so a committed row always has its file. A crash before the commit leaves at most a
    `.tmp` file or a file no row names, which the start-up sweep removes (`app.storage.sweep`); a
    request refused by the database removes the files it published, unless a row names them by then.
    Raises DiskFull when the disk is full (nothing is kept).
    """
    check_text("prompt", prompt)
    check_text("rater", rater)
    if not isinstance(params, dict):
        raise ValueError("params: expected a JSON object")
    for index, image in enumerate(images):
        check_image(index, image)
    for index, output in enumerate(outputs):
        check_output(index, output)
    hashes = [hashlib.sha256(image.data).hexdigest() for image in images]
    finals = {image_path(data_dir, sha, image.format): image for sha, image in zip(hashes, images, strict=True)}
    published = _publish_new(finals)
    try:
        created = _insert_comparison(engine, prompt, params, rater, blind or battle, images, hashes, outputs,
                                     drawn if battle else None)
    except BaseException:
        _withdraw(engine, published)
        raise
    # A file another request withdrew meanwhile is written again; should that fail, the rows stay stored,
    # the start-up sweep reports the missing file and uploading the image again writes it.
    with contextlib.suppress(OSError, DiskFull):
        _publish_new(finals)
    return created


def _publish_new(finals: dict[Path, StoredImageInput]) -> list[Path]:
    """Write the files not stored yet (all or none of them); returns those it wrote."""
    temps: dict[Path, Path] = {}
    try:
        for final, image in finals.items():
            if not touch(final):
                temps[final] = write_temp(final, bytes(image.data))
        written = list(temps)
        publish(temps)
    except BaseException:
        discard(temps)
        raise
    return written


def _withdraw(engine: Engine, published: list[Path]) -> None:
    """Remove files this request published for rows it could not commit, unless some row names them."""
    try:
        with session(engine, read_only=True) as db:
            named = {sha for sha in db.exec(select(Image.sha256).where(
                col(Image.sha256).in_([path.stem for path in published])))} if published else set()
    except Exception:  # the store that refused the rows may not answer either: the sweep removes them later
        return
    for path in published:
        if path.stem not in named:
            path.unlink(missing_ok=True)


def _insert_comparison(
    engine: Engine,
    prompt: str,
    params: dict[str, Any],
    rater: str,
    blind: bool,
    images: list[StoredImageInput],
    hashes: list[str],
    outputs: list[OutputInput],
    drawn: bool | None = None,
) -> CreatedComparison:
    """The rows of `create_comparison`, in one transaction (a battle's too, unless `drawn` is None)."""
    with session(engine) as db:
        comparison = Comparison(prompt=prompt, params=params, rater=rater, blind=bool(blind))
        db.add(comparison)
        db.flush()
        for position, (sha, image) in enumerate(zip(hashes, images, strict=True)):
            _ensure_image_row(db, sha, image)
            db.add(
                ComparisonImage(comparison_id=saved_id(comparison), position=position, sha256=sha, name=image.name)
            )
        rows = [
            Output(comparison_id=saved_id(comparison), position=position, status="queued", **asdict(output))
            for position, output in enumerate(outputs)
        ]
        db.add_all(rows)
        db.flush()
        battle_id = None
        if drawn is not None:
            battle = Battle(comparison_id=saved_id(comparison), drawn=drawn)
            db.add(battle)
            db.flush()
            battle_id = saved_id(battle)
            db.add_all(BattlePanel(battle_id=battle_id, label=panel_label(position), output_id=saved_id(row),
                                   position=position) for position, row in enumerate(rows))
        return CreatedComparison(saved_id(comparison), [saved_id(row) for row in rows], hashes, battle_id)


def _ensure_image_row(db: Session, sha: str, image: StoredImageInput) -> None:
    """Insert the image's row unless it exists (a concurrent insert of the same hash is fine)."""
    if db.get(Image, sha) is not None:
        return
    row = Image(
        sha256=sha,
        original_name=image.name,
        size_bytes=len(image.data),
        format=image.format.upper(),
        width=image.width,
        height=image.height,
    )
    try:
        with db.begin_nested():
            db.add(row)
    except IntegrityError:
        if db.get(Image, sha) is None:
            raise


def image_recorded(engine: Engine, sha256: str) -> bool:
    """Whether an image with this hash is stored (its row; the file may be missing)."""
    with session(engine, read_only=True) as db:
        return db.get(Image, sha256) is not None


_COMPARISONS: Any = Comparison.__table__  # type: ignore[attr-defined]
_LINKS: Any = ComparisonImage.__table__  # type: ignore[attr-defined]
_IMAGES: Any = Image.__table__  # type: ignore[attr-defined]
_OUTPUTS: Any = Output.__table__  # type: ignore[attr-defined]
_RATINGS: Any = Rating.__table__  # type: ignore[attr-defined]
_COMPARISON = sa_select(_COMPARISONS).where(_COMPARISONS.c.id == bindparam("comparison"))
_COMPARISON_IMAGES = (
    sa_select(_LINKS.c.position, _IMAGES.c.sha256, _LINKS.c.name, _IMAGES.c.format, _IMAGES.c.width,
              _IMAGES.c.height, _IMAGES.c.size_bytes)
    .join(_IMAGES, _IMAGES.c.sha256 == _LINKS.c.sha256)
    .where(_LINKS.c.comparison_id == bindparam("comparison"))
    .order_by(_LINKS.c.position)
)
_COMPARISON_OUTPUTS = (sa_select(_OUTPUTS).where(_OUTPUTS.c.comparison_id == bindparam("comparison"))
                       .order_by(_OUTPUTS.c.position))
_COMPARISON_RATINGS = (
    sa_select(_RATINGS).join(_OUTPUTS, _OUTPUTS.c.id == _RATINGS.c.output_id)
    .where(_OUTPUTS.c.comparison_id == bindparam("comparison")).order_by(_RATINGS.c.id)
)
_RATERS_RATINGS = _COMPARISON_RATINGS.where(_RATINGS.c.rater == bindparam("rater"))


def get_comparison(engine: Engine, comparison_id: int, rater: str | None = None) -> dict[str, Any]:
    """A comparison as a plain dict with its images, outputs and each output's ratings, oldest first (with
    `rater`, only that rater's: what a rating form needs, however many others rated). Every row is a dict
    of its columns, read in one transaction by Core queries (no ORM object per row).

    Raises LookupError when there is no such comparison.
    """
    key = {"comparison": comparison_id, "rater": rater}
    with reading(engine) as connection:
        comparison = connection.execute(_COMPARISON, key).mappings().first()
        if comparison is None:
            raise LookupError(f"comparison {comparison_id} not found")
        images = [dict(row) for row in connection.execute(_COMPARISON_IMAGES, key).mappings()]
        outputs = [dict(row) for row in connection.execute(_COMPARISON_OUTPUTS, key).mappings()]
        ratings: dict[int, list[dict[str, Any]]] = {}
        for row in connection.execute(_COMPARISON_RATINGS if rater is None else _RATERS_RATINGS, key).mappings():
            ratings.setdefault(row["output_id"], []).append(dict(row))
    return {**comparison, "images": images,
            "outputs": [{**output, "ratings": ratings.get(output["id"], [])} for output in outputs]}


def list_comparisons(engine: Engine, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
    """Comparisons newest first: id, time, prompt, rater, blind, image hashes, models, ratings summary.

    Each entry's "outputs" lists, in model order, the model, status, rating count and mean score;
    "ratings" sums them up for the whole comparison.
    """
    with session(engine, read_only=True) as db:
        comparisons = db.exec(
            select(Comparison)
            .order_by(col(Comparison.created_at).desc(), col(Comparison.id).desc())
            .limit(limit)
            .offset(offset)
        ).all()
        return _listed(db, comparisons)


def _listed(db: Session, comparisons: Sequence[Comparison]) -> list[dict[str, Any]]:
    """These comparisons, in the order given, as `list_comparisons` entries (three more queries in all)."""
    ids = [comparison.id for comparison in comparisons]
    if not ids:
        return []
    links = db.exec(
        select(ComparisonImage)
        .where(col(ComparisonImage.comparison_id).in_(ids))
        .order_by(col(ComparisonImage.comparison_id), col(ComparisonImage.position))
    ).all()
    outputs = db.exec(
        select(Output).where(col(Output.comparison_id).in_(ids)).order_by(col(Output.position))
    ).all()
    summaries = _rating_summaries(db, [saved_id(output) for output in outputs])
    return [_summary(comparison, links, outputs, summaries) for comparison in comparisons]


def count_comparisons(engine: Engine) -> int:
    """How many comparisons are stored (for paging)."""
    with session(engine, read_only=True) as db:
        return db.exec(select(func.count()).select_from(Comparison)).one()


def _rating_summaries(db: Session, output_ids: list[int]) -> dict[int, tuple[int, int]]:
    """Per output id: (number of ratings, sum of scores)."""
    if not output_ids:
        return {}
    rows = db.exec(
        select(Rating.output_id, func.count(), func.sum(Rating.score))
        .where(col(Rating.output_id).in_(output_ids))
        .group_by(col(Rating.output_id))
    ).all()
    return {output_id: (count, int(total)) for output_id, count, total in rows}


def _summary(
    comparison: Comparison,
    links: Sequence[ComparisonImage],
    outputs: Sequence[Output],
    summaries: dict[int, tuple[int, int]],
) -> dict[str, Any]:
    """One row of the history list."""
    mine = [output for output in outputs if output.comparison_id == comparison.id]
    entries: list[dict[str, Any]] = []
    for output in mine:
        count, total = summaries.get(saved_id(output), (0, 0))
        entries.append(
            {
                "id": output.id,
                "model": output.model,
                "status": output.status,
                "ratings": count,
                "mean_score": total / count if count else None,
            }
        )
    count = sum(entry["ratings"] for entry in entries)
    total = sum(summaries.get(saved_id(output), (0, 0))[1] for output in mine)
    return {
        "id": comparison.id,
        "created_at": comparison.created_at,
        "prompt": comparison.prompt,
        "rater": comparison.rater,
        "blind": comparison.blind,
        "images": [link.sha256 for link in links if link.comparison_id == comparison.id],
        "models": [output.model for output in mine],
        "outputs": entries,
        "ratings": {"count": count, "mean_score": total / count if count else None},
    }


# ---------------------------------------------------------------- the history: filters, keyset pages, summary

_BATTLES: Any = Battle.__table__  # type: ignore[attr-defined]
_VOTES: Any = Vote.__table__  # type: ignore[attr-defined]
HISTORY_SEARCH_MAX_CHARS = 200


@dataclass(frozen=True)
class HistoryFilters:
    """What the history is narrowed to; every field left at its default narrows nothing.

    `search`: text in the prompt or in a rating's note (case-insensitive, taken literally: `%` and `_`
    match themselves). `model`: comparisons with an answer of this model that the history may name (not
    an unrevealed battle's, nor a blind comparison's unrated one). `rater`: comparisons this rater started
    or rated. `rated`: True, with at least one rating (by `rater`, when given); False, without. `blind`:
    blind comparisons (battles among them) or the others.
    """

    search: str = ""
    model: str | None = None
    rater: str | None = None
    rated: bool | None = None
    blind: bool | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.search, str):
            raise ValueError("search: expected text")
        if len(self.search) > HISTORY_SEARCH_MAX_CHARS:
            raise ValueError(f"search: at most {HISTORY_SEARCH_MAX_CHARS} characters")
        for name in ("model", "rater"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{name}: expected text")

    @property
    def active(self) -> bool:
        return bool(self.search.strip()) or any(
            value is not None for value in (self.model, self.rater, self.rated, self.blind))


@dataclass(frozen=True)
class HistoryPage:
    """One page of the history, newest first, and the id to continue below (None: this is the last page)."""

    items: list[dict[str, Any]]
    next_before: int | None


def _answer_shown(outputs: Any, comparisons: Any) -> Any:
    """SQL: whether the history may name the model of this output of this comparison: a battle's once it
    has a vote, a blind comparison's once the output is rated, any other comparison's always (asked
    first: a battle is always blind, so most answers need no look-up)."""
    battle, vote, rating = _BATTLES.alias("shown_battle"), _VOTES.alias("shown_vote"), _RATINGS.alias("shown_rating")
    is_battle = sa_select(battle.c.id).where(battle.c.comparison_id == outputs.c.comparison_id).exists()
    voted = (sa_select(battle.c.id).where(battle.c.comparison_id == outputs.c.comparison_id,
                                          sa_select(vote.c.id).where(vote.c.battle_id == battle.c.id).exists())
             .exists())
    rated = sa_select(rating.c.id).where(rating.c.output_id == outputs.c.id).exists()
    return or_(comparisons.c.blind == false(), voted, and_(~is_battle, rated))


def _rated_by(comparisons: Any, rater: str | None) -> Any:
    """SQL: whether some output of this comparison has a rating (by `rater`, when given)."""
    output, rating = _OUTPUTS.alias("rated_output"), _RATINGS.alias("rated_rating")
    query = (sa_select(rating.c.id).join(output, output.c.id == rating.c.output_id)
             .where(output.c.comparison_id == comparisons.c.id))
    if rater is not None:
        query = query.where(rating.c.rater == rater)
    return query.exists()


def _history_conditions(comparisons: Any, filters: HistoryFilters) -> list[Any]:
    """The WHERE conditions on `comparisons` (the table or an alias of it) that `filters` ask for."""
    conditions: list[Any] = []
    search = filters.search.strip()
    if search:
        output, rating = _OUTPUTS.alias("noted_output"), _RATINGS.alias("noted_rating")
        noted = (sa_select(rating.c.id).join(output, output.c.id == rating.c.output_id)
                 .where(output.c.comparison_id == comparisons.c.id,
                        rating.c.note.icontains(search, autoescape=True)).exists())
        conditions.append(or_(comparisons.c.prompt.icontains(search, autoescape=True), noted))
    if filters.model is not None:
        output = _OUTPUTS.alias("model_output")
        conditions.append(sa_select(output.c.id).where(
            output.c.comparison_id == comparisons.c.id, output.c.model == filters.model,
            _answer_shown(output, comparisons)).exists())
    if filters.rater is not None:
        conditions.append(or_(comparisons.c.rater == filters.rater, _rated_by(comparisons, filters.rater)))
    if filters.rated is not None:
        rated = _rated_by(comparisons, filters.rater)
        conditions.append(rated if filters.rated else ~rated)
    if filters.blind is not None:
        conditions.append(comparisons.c.blind == (true() if filters.blind else false()))
    return conditions


def history_ids_query(filters: HistoryFilters, before: int | None = None, limit: int = 20) -> Any:
    """The keyset query of one history page: the ids of matching comparisons below `before`, newest
    (highest id) first, one more than `limit` so the caller knows whether another page follows."""
    query = sa_select(_COMPARISONS.c.id).where(*_history_conditions(_COMPARISONS, filters))
    if before is not None:
        query = query.where(_COMPARISONS.c.id < before)
    return query.order_by(_COMPARISONS.c.id.desc()).limit(limit + 1)


def history_page(engine: Engine, filters: HistoryFilters | None = None, before: int | None = None,
                 limit: int = 20) -> HistoryPage:
    """A page of the history: up to `limit` comparisons matching `filters` with ids below `before` (keyset
    pagination: a page deep in a long history costs what the first does), each entry as
    `list_comparisons` gives it."""
    if limit < 1:
        raise ValueError("limit: expected at least 1")
    with session(engine, read_only=True) as db:
        ids = [row[0] for row in db.execute(history_ids_query(filters or HistoryFilters(), before, limit))]
        more = len(ids) > limit
        ids = ids[:limit]
        found = db.exec(select(Comparison).where(col(Comparison.id).in_(ids))).all() if ids else []
        rows = sorted(found, key=lambda comparison: -saved_id(comparison))
        items = _listed(db, rows)
    return HistoryPage(items, ids[-1] if more else None)


def history_summary(engine: Engine, filters: HistoryFilters | None = None) -> dict[str, Any]:
    """How many comparisons match `filters`, and per model (only answers the history may name): the matching
    comparisons it answered in, its ratings (by `filters.rater`, when given) and their mean score; the
    models with most comparisons first."""
    filters = filters or HistoryFilters()
    conditions = [*_history_conditions(_COMPARISONS, filters), _answer_shown(_OUTPUTS, _COMPARISONS)]
    answered = (_OUTPUTS.join(_COMPARISONS, _COMPARISONS.c.id == _OUTPUTS.c.comparison_id))
    pairs = (sa_select(_OUTPUTS.c.comparison_id, _OUTPUTS.c.model).distinct().select_from(answered)
             .where(*conditions).subquery())  # in the order of ix_outputs_comparison_model: no sort
    compared = sa_select(pairs.c.model, func.count()).group_by(pairs.c.model)
    rated = (sa_select(_OUTPUTS.c.model, func.count(), func.avg(_RATINGS.c.score))
             .select_from(_RATINGS.join(_OUTPUTS, _OUTPUTS.c.id == _RATINGS.c.output_id)
                          .join(_COMPARISONS, _COMPARISONS.c.id == _OUTPUTS.c.comparison_id))
             .where(*conditions).group_by(_OUTPUTS.c.model))
    if filters.rater is not None:
        rated = rated.where(_RATINGS.c.rater == filters.rater)
    total = sa_select(func.count()).select_from(_COMPARISONS).where(*_history_conditions(_COMPARISONS, filters))
    with reading(engine) as connection:
        count = int(connection.execute(total).scalar_one())
        scores = {model: (int(number), float(mean)) for model, number, mean in connection.execute(rated)}
        models = [{"model": model, "comparisons": int(number), "ratings": scores.get(model, (0, None))[0],
                   "mean_score": scores.get(model, (0, None))[1]}
                  for model, number in connection.execute(compared)]
    models.sort(key=lambda entry: (-entry["comparisons"], entry["model"]))
    return {"comparisons": count, "models": models}


def history_choices(engine: Engine, limit: int = 200) -> dict[str, list[str]]:
    """What the history's filters offer: the models the history may name somewhere, and the raters who
    started or rated a comparison (each list sorted, at most `limit` long)."""
    shown = _OUTPUTS.alias("choice_output")
    with reading(engine) as connection:
        models = [row[0] for row in connection.execute(
            sa_select(_OUTPUTS.c.model).distinct().order_by(_OUTPUTS.c.model))]
        visible = []
        for model in models:
            any_shown = (sa_select(shown.c.id)
                         .select_from(shown.join(_COMPARISONS, _COMPARISONS.c.id == shown.c.comparison_id))
                         .where(shown.c.model == model, _answer_shown(shown, _COMPARISONS)).limit(1))
            if connection.execute(any_shown).first() is not None:
                visible.append(model)
            if len(visible) >= limit:
                break
        raters = sa_select(_COMPARISONS.c.rater.label("rater")).union(sa_select(_RATINGS.c.rater)).subquery()
        names = [row[0] for row in connection.execute(
            sa_select(raters.c.rater).where(raters.c.rater != "").order_by(raters.c.rater).limit(limit))]
    return {"models": visible, "raters": names}


def history_fingerprint(engine: Engine) -> tuple[Any, ...]:
    """What `history_summary` depends on, read cheaply (counts and newest ids and changes, each from an
    index): a summary computed at one fingerprint holds until it changes."""
    parts = [sa_select(func.count(), func.max(_COMPARISONS.c.id)).select_from(_COMPARISONS),
             sa_select(func.max(_OUTPUTS.c.id)),
             sa_select(func.count(), func.max(_RATINGS.c.updated_at)).select_from(_RATINGS),
             sa_select(func.count(), func.max(_VOTES.c.updated_at)).select_from(_VOTES)]
    with reading(engine) as connection:
        return tuple(value for part in parts for value in connection.execute(part).one())
