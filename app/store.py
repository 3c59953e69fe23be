"""Content-addressed image files and every write to the database, each in its own transaction."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from app.db import session
from app.tables import (
    BACKENDS,
    FINISHED_STATUSES,
    OUTPUT_STATUSES,
    SCORE_MAX,
    SCORE_MIN,
    UNFINISHED_STATUSES,
    Comparison,
    ComparisonImage,
    Image,
    MeasuredSize,
    Output,
    Rating,
    utcnow,
)

NOTE_MAX_CHARS = 10_000
INTERRUPTED_ERROR = "the server stopped before this output finished"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_EXTENSIONS = {"jpeg": "jpg", "mpo": "jpg", "tiff": "tif"}
_FIXED_OUTPUT_FIELDS = {"id", "comparison_id", "position", "created_at"}


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


# ---------------------------------------------------------------- image files


def image_extension(fmt: str) -> str:
    """File extension for a Pillow format name ("JPEG" → "jpg", "PNG" → "png")."""
    ext = re.sub(r"[^a-z0-9]", "", fmt.lower())
    if not ext:
        raise ValueError(f"format: not a usable image format name: {fmt!r}")
    return _EXTENSIONS.get(ext, ext)


def image_path(data_dir: Path, sha256: str, fmt: str | None = None) -> Path:
    """Where the image with this hash lives; without `fmt`, the existing file's path is looked up.

    Raises ValueError for anything that is not a lowercase hex SHA-256 (so URLs cannot escape the
    data directory) and FileNotFoundError when `fmt` is not given and no file is stored.
    """
    if not _SHA256.fullmatch(sha256):
        raise ValueError(f"sha256: expected 64 lowercase hex characters, got {sha256!r}")
    folder = Path(data_dir) / "images" / sha256[:2]
    if fmt is not None:
        return folder / f"{sha256}.{image_extension(fmt)}"
    for candidate in sorted(folder.glob(f"{sha256}.*")):
        return candidate
    raise FileNotFoundError(f"no stored image {sha256}")


def _write_temp(final: Path, data: bytes) -> Path:
    """Write `data` durably to a hidden temp file beside `final`; return its path."""
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return Path(temp)


def _fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (best effort where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(temps: dict[Path, Path]) -> None:
    """Rename each temp file onto its final name (atomic; same content if it already exists)."""
    for final, temp in list(temps.items()):
        os.replace(temp, final)
        del temps[final]
        _fsync_dir(final.parent)


def _discard(temps: dict[Path, Path]) -> None:
    """Remove temp files that were not published."""
    for temp in temps.values():
        temp.unlink(missing_ok=True)


# ---------------------------------------------------------------- validation


def _check_text(name: str, value: object, *, max_chars: int | None = None) -> None:
    """A string field without NUL (PostgreSQL text cannot hold one), within its length limit."""
    if not isinstance(value, str):
        raise ValueError(f"{name}: expected text, got {type(value).__name__}")
    if "\x00" in value:
        raise ValueError(f"{name}: must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{name}: must be valid Unicode text (it holds a lone surrogate code point)") from None
    if max_chars is not None and len(value) > max_chars:
        raise ValueError(f"{name}: at most {max_chars} characters, got {len(value)}")


def _check_image(index: int, image: StoredImageInput) -> None:
    """An image input with a name, bytes, a format and positive dimensions."""
    _check_text(f"images[{index}].name", image.name)
    if not isinstance(image.data, bytes | bytearray | memoryview):
        raise ValueError(f"images[{index}].data: expected bytes")
    for name in ("width", "height"):
        value = getattr(image, name)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"images[{index}].{name}: expected a positive integer, got {value!r}")
    image_extension(image.format)


def _check_output(index: int, output: OutputInput) -> None:
    """An output input naming a model and a known backend."""
    if not isinstance(output.model, str) or not output.model:
        raise ValueError(f"outputs[{index}].model: expected a non-empty model id")
    if output.backend not in BACKENDS:
        raise ValueError(
            f"outputs[{index}].backend: expected one of {', '.join(BACKENDS)}, got {output.backend!r}"
        )
    if not isinstance(output.params, dict):
        raise ValueError(f"outputs[{index}].params: expected a JSON object")


def _check_score(score: object) -> int:
    """A whole score from 1 to 5."""
    if not isinstance(score, int) or isinstance(score, bool) or not SCORE_MIN <= score <= SCORE_MAX:
        raise ValueError(f"score: must be a whole number from {SCORE_MIN} to {SCORE_MAX} (got {score!r})")
    return score


def _check_status(status: object, allowed: Iterable[str]) -> None:
    """A status among `allowed`."""
    allowed = tuple(allowed)
    if status not in allowed:
        raise ValueError(f"status: expected one of {', '.join(allowed)}, got {status!r}")


# ---------------------------------------------------------------- comparisons


def create_comparison(
    engine: Engine,
    data_dir: Path,
    prompt: str,
    params: dict[str, Any],
    rater: str,
    blind: bool,
    images: list[StoredImageInput],
    outputs: list[OutputInput],
) -> CreatedComparison:
    """Store a comparison, its images and its queued outputs, all or nothing.

    New image files are written to temp files first, the rows are committed, and only then are
    the files renamed onto their hash names: a rejected request leaves no row and no file. (Only a
    crash between commit and rename can leave a row whose file is missing; uploading that image
    again writes it.)
    """
    _check_text("prompt", prompt)
    _check_text("rater", rater)
    if not isinstance(params, dict):
        raise ValueError("params: expected a JSON object")
    for index, image in enumerate(images):
        _check_image(index, image)
    for index, output in enumerate(outputs):
        _check_output(index, output)
    hashes = [hashlib.sha256(image.data).hexdigest() for image in images]
    temps: dict[Path, Path] = {}
    try:
        for sha, image in zip(hashes, images, strict=True):
            final = image_path(data_dir, sha, image.format)
            if final not in temps and not final.exists():
                temps[final] = _write_temp(final, bytes(image.data))
        created = _insert_comparison(engine, prompt, params, rater, blind, images, hashes, outputs)
        _publish(temps)
    finally:
        _discard(temps)
    return created


def _insert_comparison(
    engine: Engine,
    prompt: str,
    params: dict[str, Any],
    rater: str,
    blind: bool,
    images: list[StoredImageInput],
    hashes: list[str],
    outputs: list[OutputInput],
) -> CreatedComparison:
    """The rows of `create_comparison`, in one transaction."""
    with session(engine) as db:
        comparison = Comparison(prompt=prompt, params=params, rater=rater, blind=bool(blind))
        db.add(comparison)
        db.flush()
        for position, (sha, image) in enumerate(zip(hashes, images, strict=True)):
            _ensure_image_row(db, sha, image)
            db.add(
                ComparisonImage(comparison_id=comparison.id, position=position, sha256=sha, name=image.name)
            )
        rows = [
            Output(comparison_id=comparison.id, position=position, status="queued", **asdict(output))
            for position, output in enumerate(outputs)
        ]
        db.add_all(rows)
        db.flush()
        return CreatedComparison(comparison.id, [row.id for row in rows], hashes)


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


def get_comparison(engine: Engine, comparison_id: int) -> dict[str, Any]:
    """A comparison as a plain dict with its images, outputs and each output's ratings.

    Raises LookupError when there is no such comparison.
    """
    with session(engine, read_only=True) as db:
        comparison = db.get(Comparison, comparison_id)
        if comparison is None:
            raise LookupError(f"comparison {comparison_id} not found")
        links = db.exec(
            select(ComparisonImage, Image)
            .join(Image, col(Image.sha256) == col(ComparisonImage.sha256))
            .where(ComparisonImage.comparison_id == comparison_id)
            .order_by(col(ComparisonImage.position))
        ).all()
        outputs = db.exec(
            select(Output).where(Output.comparison_id == comparison_id).order_by(col(Output.position))
        ).all()
        ratings = _ratings_by_output(db, [output.id for output in outputs])
    return {
        **comparison.model_dump(),
        "images": [_image_dict(link, image) for link, image in links],
        "outputs": [
            {**output.model_dump(), "ratings": [rating.model_dump() for rating in ratings.get(output.id, [])]}
            for output in outputs
        ],
    }


def _image_dict(link: ComparisonImage, image: Image) -> dict[str, Any]:
    """One image of a comparison, with the name it was uploaded under there."""
    return {
        "position": link.position,
        "sha256": image.sha256,
        "name": link.name,
        "format": image.format,
        "width": image.width,
        "height": image.height,
        "size_bytes": image.size_bytes,
    }


def _ratings_by_output(db: Session, output_ids: list[int]) -> dict[int, list[Rating]]:
    """The ratings of these outputs, oldest first, grouped by output id."""
    grouped: dict[int, list[Rating]] = {}
    if not output_ids:
        return grouped
    rows = db.exec(select(Rating).where(col(Rating.output_id).in_(output_ids)).order_by(col(Rating.id))).all()
    for rating in rows:
        grouped.setdefault(rating.output_id, []).append(rating)
    return grouped


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
        summaries = _rating_summaries(db, [output.id for output in outputs])
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
        .group_by(Rating.output_id)
    ).all()
    return {output_id: (count, int(total)) for output_id, count, total in rows}


def _summary(
    comparison: Comparison,
    links: list[ComparisonImage],
    outputs: list[Output],
    summaries: dict[int, tuple[int, int]],
) -> dict[str, Any]:
    """One row of the history list."""
    mine = [output for output in outputs if output.comparison_id == comparison.id]
    entries = []
    for output in mine:
        count, total = summaries.get(output.id, (0, 0))
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
    total = sum(summaries.get(output.id, (0, 0))[1] for output in mine)
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


# ---------------------------------------------------------------- outputs


def update_output(engine: Engine, output_id: int, **fields: Any) -> None:
    """Set some columns of an output (status, text, timings, image_note, ...).

    Raises ValueError for an unknown or fixed column or an unknown status, LookupError for an
    unknown output.
    """
    unknown = sorted(set(fields) - set(Output.model_fields) | (set(fields) & _FIXED_OUTPUT_FIELDS))
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: not a column of outputs that can be updated")
    if "status" in fields:
        _check_status(fields["status"], OUTPUT_STATUSES)
    if not fields:
        return
    fields = {key: _strip_nul(value) for key, value in fields.items()}
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
    _check_status(status, FINISHED_STATUSES)
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


def _strip_nul(value: Any) -> Any:
    """Model text may hold NUL, which PostgreSQL text cannot: it becomes U+FFFD."""
    return value.replace("\x00", "\ufffd") if isinstance(value, str) else value


def mark_unfinished_interrupted(engine: Engine, created_before: datetime | None = None) -> int:
    """On start-up: outputs still queued, loading or generating become "interrupted"; returns how many.

    With `created_before`, only older outputs: on a database several replicas share, younger ones
    may belong to a replica that is still answering them.
    """
    unfinished = col(Output.status).in_(UNFINISHED_STATUSES)
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


# ---------------------------------------------------------------- ratings


def rate(engine: Engine, output_id: int, score: int, note: str = "", rater: str = "") -> tuple[Rating, bool]:
    """Save a rater's score (1–5) and note for an output, replacing that rater's earlier one.

    Returns the rating and whether it is new. Raises ValueError naming the field and its limit,
    LookupError for an unknown output.
    """
    _check_score(score)
    _check_text("note", note, max_chars=NOTE_MAX_CHARS)
    _check_text("rater", rater)
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


# ---------------------------------------------------------------- measured sizes


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
