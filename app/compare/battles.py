"""Battles: which models to pit against each other, and votes that reveal them.

A battle is a blind comparison whose panels are labelled A, B, … in a random order that is stored;
nothing names a panel's model until the battle has a vote. A vote names the best panel, a tie, or
"all bad"; panels that errored are left out, and a battle needs two finished answers to be voted on.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from app.compare.flags import PanelAnswer, vote_flag
from app.compare.validation import InputError
from app.core.catalog import Catalog
from app.pool.pool import ModelPool, ModelState
from app.storage import battles
from app.storage.tables import FINISHED_STATUSES, OutputStatus, saved_id

DEFAULT_K = 2
MAX_K = 8
TIE, BOTH_BAD = battles.TIE, battles.BOTH_BAD


class VoteRefused(InputError):
    """A vote the battle cannot take now (still answering, too few finished answers): 409."""

    def __init__(self, detail: str) -> None:
        super().__init__("winner", detail, 409)


def candidates(catalog: Catalog, pool: ModelPool, unreachable: dict[str, str | None]) -> list[str]:
    """Models a battle may draw: available, reachable here, and not larger than the pool's budget."""
    found = []
    for spec in catalog.models:
        if not spec.available or unreachable.get(spec.id) is not None:
            continue
        if not spec.is_remote and pool.state_of(spec.id) == ModelState.TOO_LARGE:
            continue
        found.append(spec.id)
    return found


def draw(models: list[str], k: int, pair_counts: dict[frozenset[str], int], rng: random.Random) -> list[str]:
    """`k` of `models`, preferring the pair with the fewest votes so far, then the model that adds the
    fewest shared votes to those chosen; ties broken at random."""
    if k < 2 or k > MAX_K:
        raise InputError("k", f"a battle takes from 2 to {MAX_K} models, not {k}")
    if len(models) < k:
        raise InputError("models", f"a battle of {k} needs {k} available models; {len(models)} are available here")
    shuffled = list(models)
    rng.shuffle(shuffled)
    pairs = [(a, b) for i, a in enumerate(shuffled) for b in shuffled[i + 1:]]
    first = min(pairs, key=lambda pair: pair_counts.get(frozenset(pair), 0))
    chosen = list(first)
    while len(chosen) < k:
        rest = [m for m in shuffled if m not in chosen]
        chosen.append(min(rest, key=lambda m: sum(pair_counts.get(frozenset((m, c)), 0) for c in chosen)))
    rng.shuffle(chosen)
    return chosen


@dataclass(frozen=True)
class VoteResult:
    vote_id: int
    created: bool
    flagged: bool
    flag_reason: str | None
    panels: list[dict[str, Any]]  # label, model, name: the reveal


def cast_vote(engine: Engine, catalog: Catalog, battle_id: int, rater: str, winner: str) -> VoteResult:
    """Record `rater`'s vote on a battle and reveal its panels. Raises LookupError for an unknown battle,
    InputError (422) for a winner that is not a finished panel, tie or bothbad, VoteRefused (409) when
    the battle cannot be voted on yet."""
    battle = battles.get_battle(engine, battle_id)
    panels = battle["panels"]
    if any(panel["status"] not in FINISHED_STATUSES for panel in panels):
        raise VoteRefused(f"battle {battle_id} is still answering: vote once every panel has finished")
    finished = [panel for panel in panels if panel["status"] == OutputStatus.DONE]
    if len(finished) < 2:
        raise VoteRefused(f"battle {battle_id} has {len(finished)} finished answer(s); a vote needs two")
    choices = [panel["label"] for panel in finished] + [TIE, BOTH_BAD]
    if winner not in choices:
        raise InputError("winner", f"must be one of {', '.join(choices)} (got {winner[:20]!r})")
    reason = vote_flag(_answers(catalog, finished))
    saved, created = battles.vote(engine, battle_id, rater, winner, reason is not None, reason)
    return VoteResult(saved_id(saved), created, reason is not None, reason, reveal(catalog, panels))


def reveal(catalog: Catalog, panels: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    names = {spec.id: spec.name for spec in catalog.models}
    return [{"label": panel["label"], "model": panel["model"], "name": names.get(panel["model"], panel["model"])}
            for panel in panels]


def _answers(catalog: Catalog, panels: list[dict[str, Any]]) -> list[PanelAnswer]:
    known = {spec.id: spec for spec in catalog.models}
    return [PanelAnswer(panel["label"], known[panel["model"]], panel["status"], panel["text"] or "")
            for panel in panels if panel["model"] in known]
