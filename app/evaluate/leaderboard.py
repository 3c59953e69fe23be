"""The leaderboard from stored votes: pairwise outcomes, Bradley–Terry ratings with intervals, win rates,
mean scores and speeds per model; cached until a vote or a rating changes. Also the battles export with
FastChat's columns (one row per pairwise outcome)."""

from __future__ import annotations

import statistics
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Engine

from app.evaluate.ratings import Outcome, expand_vote, fit_bradley_terry, mean_with_interval
from app.storage import battles
from app.storage.battles import StoredVote
from app.storage.outputs import speeds_by_model
from app.storage.ratings import ratings_fingerprint, scores_by_model

PROVISIONAL_VOTES = 20  # fewer votes than this: the rating is marked provisional
MAX_BOOTSTRAP_ROUNDS = 1000


@dataclass(frozen=True)
class Query:
    """What to fit: a date range and rater, flagged votes in or out, the interval method."""

    since: datetime | None = None
    until: datetime | None = None
    rater: str | None = None
    include_flagged: bool = False
    ci: Literal["sandwich", "bootstrap"] = "sandwich"
    rounds: int = 100


def winner_model(vote: StoredVote) -> str:
    """The vote's winner as expand_vote takes it: the winning panel's model, "tie" or "bothbad"."""
    if vote.winner in (battles.TIE, battles.BOTH_BAD):
        return vote.winner
    return next(panel["model"] for panel in vote.panels if panel["label"] == vote.winner)


def vote_outcomes(vote: StoredVote) -> list[Outcome]:
    """A vote's pairwise outcomes among its finished panels (an errored panel is not a loss)."""
    finished = [panel for panel in vote.panels if panel["status"] == "done"]
    if len(finished) < 2:
        return []
    return expand_vote([panel["model"] for panel in finished], winner_model(vote))


def compute(engine: Engine, query: Query, names: dict[str, str]) -> dict[str, Any]:
    """The leaderboard as `GET /api/leaderboard` serves it."""
    votes = battles.list_votes(engine, query.since, query.until, query.rater)
    used = [vote for vote in votes if query.include_flagged or not vote.flagged]
    outcomes = [outcome for vote in used for outcome in vote_outcomes(vote)]
    scores = scores_by_model(engine, query.since, query.until, query.rater)
    speeds = speeds_by_model(engine)
    body: dict[str, Any] = {"models": [], "votes_used": len(used), "votes_flagged": sum(v.flagged for v in votes),
                            "outcomes": len(outcomes), "method": {"model": "bradley-terry", "ci": query.ci},
                            "win_rate": {"models": [], "matrix": []}, "vote_counts": {"models": [], "matrix": []}}
    if not outcomes:
        return body
    board = fit_bradley_terry(outcomes, ci=query.ci, rounds=query.rounds)
    votes_per_model: dict[str, int] = {}
    for vote in used:
        for model in {panel["model"] for panel in vote.panels if panel["status"] == "done"}:
            votes_per_model[model] = votes_per_model.get(model, 0) + 1
    for rated in board.models:
        mean, low, high = mean_with_interval(scores.get(rated.model, []))
        ttfts, rates = speeds.get(rated.model, ([], []))
        body["models"].append({
            **asdict(rated), "name": names.get(rated.model, rated.model), "votes": votes_per_model.get(rated.model, 0),
            "outcomes": rated.votes, "provisional": votes_per_model.get(rated.model, 0) < PROVISIONAL_VOTES,
            "mean_score": mean, "score_ci_low": low, "score_ci_high": high,
            "scores": len(scores.get(rated.model, [])),
            "median_ttft_s": statistics.median(ttfts) if ttfts else None,
            "median_tokens_per_s": statistics.median(rates) if rates else None,
        })
    body["method"] = {**board.method, "provisional_below_votes": PROVISIONAL_VOTES,
                      "include_flagged": query.include_flagged}
    models, matrix = board.win_rate_matrix()
    body["win_rate"] = {"models": models, "matrix": matrix}
    models, counts = board.vote_count_matrix()
    body["vote_counts"] = {"models": models, "matrix": counts}
    return body


class Cache:
    """The last leaderboards, each kept until a vote or a rating changes (the page polls it freely)."""

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self._entries: dict[tuple[Any, ...], dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.fits = 0  # how many times a leaderboard was computed, not served from here

    def get(self, engine: Engine, query: Query, names: dict[str, str]) -> dict[str, Any]:
        key = (query, battles.votes_fingerprint(engine), ratings_fingerprint(engine))
        with self._lock:
            if key in self._entries:
                return self._entries[key]
        body = compute(engine, query, names)
        with self._lock:
            self.fits += 1
            if len(self._entries) >= self.size:
                self._entries.pop(next(iter(self._entries)))
            self._entries[key] = body
        return body


BATTLE_COLUMNS = ("model_a", "model_b", "winner", "judge", "tstamp", "question_id", "anony", "turn", "battle_id",
                  "panels", "prompt", "images", "params", "flagged", "flag_reason")


def battle_rows(engine: Engine, include_flagged: bool = True) -> Iterator[dict[str, Any]]:
    """One row per pairwise outcome, with FastChat's battle columns (so its scripts run on our data) and ours."""
    for vote in battles.list_votes(engine):
        if vote.flagged and not include_flagged:
            continue
        for outcome in vote_outcomes(vote):
            yield {"model_a": outcome.model_a, "model_b": outcome.model_b, "winner": outcome.winner,
                   "judge": vote.rater, "tstamp": vote.updated_at.timestamp(), "question_id": f"c{vote.comparison_id}",
                   "anony": True, "turn": 1, "battle_id": vote.battle_id,
                   "panels": [{"label": p["label"], "model": p["model"], "status": p["status"]} for p in vote.panels],
                   "prompt": vote.prompt, "images": vote.images, "params": vote.params, "flagged": vote.flagged,
                   "flag_reason": vote.flag_reason}
