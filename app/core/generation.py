"""The generation vocabulary every part shares: what is asked, what comes back, and one prepared call."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from app.core.budget import Applied

if TYPE_CHECKING:
    from PIL import Image


@dataclass(frozen=True)
class GenerationParams:
    """Sampling settings; temperature 0 means greedy decoding."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = 0

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0


@dataclass(frozen=True)
class Finish:
    """The last item a generation yields: token counts, why it stopped, and what was really used.

    `image_note` says what was done to the images to fit the model (grid, downsizing); `applied`
    holds the settings the model actually used (see `app.budget.Applied.as_dict`), None when the
    answering server does not say.
    """

    prompt_tokens: int
    completion_tokens: int
    finish_reason: str = "stop"  # stop | length | cancelled
    image_note: str | None = None
    applied: dict[str, Any] | None = None


Piece = str | Finish


@dataclass
class Call:
    """One request as an adapter will run it, after the model's budget and capabilities were applied.

    `fit` may replace the images (downsized, combined), add notes, lower `applied.max_new_tokens`
    and leave family-specific settings (a pixel budget, a tile count, ready processor inputs) in
    `options` for `_generate`.
    """

    images: list[Image.Image]
    prompt: str
    applied: Applied
    image_notes: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def params(self) -> GenerationParams:
        """The settings to generate with: the applied ones, never the raw request."""
        a = self.applied
        return GenerationParams(max_new_tokens=a.max_new_tokens, temperature=a.temperature, top_p=a.top_p,
                                seed=a.seed)

    @property
    def image_note(self) -> str | None:
        return "; ".join(self.image_notes) or None


class StreamClock:
    """Times one streamed answer from the moment it is made: time to the first text, and time so far."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.first: float | None = None

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def mark(self, piece: Piece) -> tuple[float | None, float]:
        """(time to first text, elapsed) after `piece`; the first text piece sets the former."""
        now = self.elapsed()
        if self.first is None and isinstance(piece, str) and piece:
            self.first = now
        return self.first, now


Timed = tuple[Piece, float | None, float]  # a piece, the time to first text, the time so far


async def timed(pieces: AsyncIterator[Piece]) -> AsyncGenerator[Timed, None]:
    """Each piece of a streamed answer with the time to its first text and the time so far."""
    clock = StreamClock()
    async for piece in pieces:
        yield (piece, *clock.mark(piece))
