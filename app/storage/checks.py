"""Checks every storage write makes on its values before anything is written."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from app.storage.tables import (
    SCORE_MAX,
    SCORE_MIN,
)

NOTE_MAX_CHARS = 10_000


def check_text(name: str, value: object, *, max_chars: int | None = None) -> None:
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






def check_score(score: object) -> int:
    """A whole score from 1 to 5."""
    if not isinstance(score, int) or isinstance(score, bool) or not SCORE_MIN <= score <= SCORE_MAX:
        raise ValueError(f"score: must be a whole number from {SCORE_MIN} to {SCORE_MAX} (got {score!r})")
    return score


def check_status(status: object, allowed: Iterable[str]) -> None:
    """A status among `allowed`."""
    allowed = tuple(allowed)
    if status not in allowed:
        raise ValueError(f"status: expected one of {', '.join(allowed)}, got {status!r}")


def strip_nul(value: Any) -> Any:
    """Model text may hold NUL, which PostgreSQL text cannot: it becomes U+FFFD."""
    return value.replace("\x00", "\ufffd") if isinstance(value, str) else value
