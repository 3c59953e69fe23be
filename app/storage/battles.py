"""Battles and their votes: the anonymous panels of a blind comparison, and each rater's verdict."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, bindparam, func
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from app.storage.checks import check_text
from app.storage.db import reading, session
from app.storage.tables import (
    Battle,
    BattlePanel,
    Comparison,
    ComparisonImage,
    Output,
    Vote,
    by_rater_within,
    saved_id,
    utcnow,
)

TIE, BOTH_BAD = "tie", "bothbad"
FLAG_REASON_MAX_CHARS = 2000


@dataclass(frozen=True)
class StoredVote:
    """One rater's vote on a battle, with the battle's panels as they stood when it was read."""

    battle_id: int
    comparison_id: int
    rater: str
    winner: str  # a panel label, "tie" or "bothbad"
    flagged: bool
    flag_reason: str | None
    updated_at: datetime
    prompt: str
    params: dict[str, Any]
    images: list[str]  # sha256 of each image, in order
    panels: list[dict[str, Any]]  # label, output_id, model, status


def battle_of_comparison(engine: Engine, comparison_id: int) -> int | None:
    """The battle a comparison is, or None for an ordinary comparison."""
    with session(engine, read_only=True) as db:
        battle = db.exec(select(Battle).where(Battle.comparison_id == comparison_id)).first()
        return None if battle is None else saved_id(battle)


def get_battle(engine: Engine, battle_id: int) -> dict[str, Any]:
    """A battle with its panels in display order and its votes. Raises LookupError when unknown."""
    with session(engine, read_only=True) as db:
        battle = db.get(Battle, battle_id)
        if battle is None:
            raise LookupError(f"battle {battle_id} not found")
        rows = db.exec(
            select(BattlePanel, Output).join(Output, col(Output.id) == col(BattlePanel.output_id))
            .where(BattlePanel.battle_id == battle_id).order_by(col(BattlePanel.position))
        ).all()
        votes = db.exec(select(Vote).where(Vote.battle_id == battle_id).order_by(col(Vote.id))).all()
    return {
        "id": saved_id(battle), "comparison_id": battle.comparison_id, "drawn": battle.drawn,
        "created_at": battle.created_at,
        "panels": [{"label": panel.label, "output_id": panel.output_id, **output.model_dump()}
                   for panel, output in rows],
        "votes": [vote.model_dump() for vote in votes],
    }


def vote(engine: Engine, battle_id: int, rater: str, winner: str, flagged: bool = False,
         flag_reason: str | None = None) -> tuple[Vote, bool]:
    """Record a rater's vote, replacing that rater's earlier one; (vote, created)."""
    check_text("rater", rater)
    check_text("winner", winner)
    if flag_reason is not None:
        check_text("flag_reason", flag_reason, max_chars=FLAG_REASON_MAX_CHARS)
    for _ in range(2):  # a second try when another writer inserted the same rater's vote first
        try:
            with session(engine) as db:
                if db.get(Battle, battle_id) is None:
                    raise LookupError(f"battle {battle_id} not found")
                existing = db.exec(select(Vote).where(Vote.battle_id == battle_id, Vote.rater == rater)).first()
                if existing is None:
                    created = Vote(battle_id=battle_id, rater=rater, winner=winner, flagged=flagged,
                                   flag_reason=flag_reason)
                    db.add(created)
                    db.flush()
                    return created, True
                existing.winner, existing.flagged, existing.flag_reason = winner, flagged, flag_reason
                existing.updated_at = utcnow()
                db.add(existing)
                db.flush()
                return existing, False
        except IntegrityError:
            continue
    raise RuntimeError(f"could not record the vote on battle {battle_id}")


def has_unrevealed_battle(engine: Engine, rater: str) -> bool:
    """Whether this rater started a battle that has no vote yet (the page then names no resident model)."""
    with session(engine, read_only=True) as db:
        voted = select(Vote.battle_id)
        found = db.exec(
            select(Battle.id).join(Comparison, col(Comparison.id) == col(Battle.comparison_id))
            .where(Comparison.rater == rater, col(Battle.id).not_in(voted)).limit(1)
        ).first()
        return found is not None


def revealed_battles(engine: Engine, comparison_ids: list[int]) -> dict[int, bool]:
    """For each of these comparisons that is a battle: whether it has a vote (and so may name its models)."""
    if not comparison_ids:
        return {}
    with session(engine, read_only=True) as db:
        rows = db.exec(
            select(Battle.comparison_id, func.count(col(Vote.id)))
            .join(Vote, col(Vote.battle_id) == col(Battle.id), isouter=True)
            .where(col(Battle.comparison_id).in_(comparison_ids)).group_by(col(Battle.comparison_id))
        ).all()
    return {comparison_id: count > 0 for comparison_id, count in rows}


def votes_fingerprint(engine: Engine) -> tuple[int, datetime | None]:
    """(number of votes, time of the newest change): what a cached leaderboard was computed from."""
    with session(engine, read_only=True) as db:
        count, newest = db.exec(select(func.count(col(Vote.id)), func.max(Vote.updated_at))).one()
    return int(count), newest


def pair_vote_counts(engine: Engine) -> dict[frozenset[str], int]:
    """How many votes each pair of models has shared a battle in (for drawing the next battle's models)."""
    with session(engine, read_only=True) as db:
        rows = db.exec(
            select(Vote.id, Output.model).join(BattlePanel, col(BattlePanel.battle_id) == col(Vote.battle_id))
            .join(Output, col(Output.id) == col(BattlePanel.output_id))
        ).all()
    by_vote: dict[int | None, list[str]] = {}
    for vote_id, model in rows:
        by_vote.setdefault(vote_id, []).append(model)
    counts: dict[frozenset[str], int] = {}
    for models in by_vote.values():
        for i, first in enumerate(models):
            for second in models[i + 1:]:
                key = frozenset((first, second))
                counts[key] = counts.get(key, 0) + 1
    return counts


def list_votes(engine: Engine, since: datetime | None = None, until: datetime | None = None,
               rater: str | None = None) -> list[StoredVote]:
    """Every vote (optionally within [since, until) and by one rater), oldest first, with its battle's panels."""
    query = (select(Vote, Battle, Comparison).join(Battle, col(Battle.id) == col(Vote.battle_id))
             .join(Comparison, col(Comparison.id) == col(Battle.comparison_id)).order_by(col(Vote.id)))
    query = by_rater_within(query, Vote, since, until, rater)
    with session(engine, read_only=True) as db:
        rows = db.exec(query).all()
        battle_ids = sorted({saved_id(battle) for _, battle, _ in rows})
        comparison_ids = sorted({saved_id(comparison) for _, _, comparison in rows})
        panels: dict[int, list[dict[str, Any]]] = {}
        if battle_ids:
            for panel, output in db.exec(
                select(BattlePanel, Output).join(Output, col(Output.id) == col(BattlePanel.output_id))
                .where(col(BattlePanel.battle_id).in_(battle_ids)).order_by(col(BattlePanel.position))
            ).all():
                panels.setdefault(panel.battle_id, []).append({
                    "label": panel.label, "output_id": panel.output_id, "model": output.model,
                    "status": output.status})
        images: dict[int, list[str]] = {}
        if comparison_ids:
            for link in db.exec(select(ComparisonImage).where(col(ComparisonImage.comparison_id).in_(comparison_ids))
                                .order_by(col(ComparisonImage.position))).all():
                images.setdefault(link.comparison_id, []).append(link.sha256)
    return [
        StoredVote(battle_id=saved_id(battle), comparison_id=saved_id(comparison), rater=vote_row.rater,
                   winner=vote_row.winner, flagged=vote_row.flagged, flag_reason=vote_row.flag_reason,
                   updated_at=vote_row.updated_at, prompt=comparison.prompt, params=dict(comparison.params),
                   images=images.get(saved_id(comparison), []), panels=panels.get(saved_id(battle), []))
        for vote_row, battle, comparison in rows
    ]


def _unvoted_panel(output_id: Any) -> Any:
    """EXISTS: the output is a panel of a battle that has no vote yet."""
    return (select(BattlePanel.output_id)
            .where(col(BattlePanel.output_id) == output_id,
                   ~select(Vote.id).where(col(Vote.battle_id) == col(BattlePanel.battle_id)).exists())
            .exists())


_OUTPUT_HIDDEN = select(_unvoted_panel(bindparam("output")))
_OUTPUT_TO_RATE = (select(Output.comparison_id, _unvoted_panel(col(Output.id)))
                   .where(col(Output.id) == bindparam("output")))


def output_hidden(engine: Engine, output_id: int) -> bool:
    """Whether an output is a panel of a battle that has no vote yet (so may not be rated or named)."""
    with reading(engine) as connection:
        return bool(connection.execute(_OUTPUT_HIDDEN, {"output": output_id}).scalar())


def output_to_rate(engine: Engine, output_id: int) -> tuple[int, bool] | None:
    """An output's comparison and whether it is hidden (see `output_hidden`), in one query; None if unknown."""
    with reading(engine) as connection:
        found = connection.execute(_OUTPUT_TO_RATE, {"output": output_id}).first()
    return None if found is None else (int(found[0]), bool(found[1]))


def set_flag(engine: Engine, vote_id: int, flagged: bool, reason: str | None) -> Vote:
    """An admin's override of a vote's flag (set, with why, or cleared); the vote's time moves, so cached
    leaderboards are recomputed. Raises LookupError for an unknown vote."""
    if reason is not None:
        check_text("flag_reason", reason, max_chars=FLAG_REASON_MAX_CHARS)
    with session(engine) as db:
        found = db.get(Vote, vote_id)
        if found is None:
            raise LookupError(f"vote {vote_id} not found")
        found.flagged, found.flag_reason, found.updated_at = flagged, reason if flagged else None, utcnow()
        db.add(found)
        db.flush()
        return found
