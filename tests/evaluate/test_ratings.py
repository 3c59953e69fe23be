"""Bradley-Terry arena ratings: hand-computed fits, an independent numeric solve, recovery of known strengths,
interval coverage and shrinkage, ties as half wins, vote expansion, bootstrap, ranks and speed."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from scipy import optimize, stats

from app.evaluate.ratings import (
    Leaderboard,
    Outcome,
    expand_vote,
    fit_bradley_terry,
    interval_ranks,
    mean_with_interval,
)

ELO = 400 / math.log(10)  # Elo points per natural-log unit of strength


def ratings_of(board: Leaderboard) -> dict[str, float]:
    return {row.model: row.rating for row in board.models}


def row(board: Leaderboard, model: str):
    return next(r for r in board.models if r.model == model)


def outcomes_from_counts(counts: dict[tuple[str, str], tuple[int, int, int]]) -> list[Outcome]:
    """(a, b) -> (a wins, b wins, ties) as a list of outcomes, the first model shown first, mixed orders."""
    out: list[Outcome] = []
    for (a, b), (wins, losses, ties) in counts.items():
        out += [Outcome(a, b, "model_a")] * wins
        out += [Outcome(b, a, "model_a")] * losses  # shown the other way round
        out += [Outcome(a, b, "tie")] * ties
    return out


def simulate(true: np.ndarray, count: int, rng: np.random.Generator) -> list[Outcome]:
    """Random pairs; P(a beats b) + P(tie)/2 = the Elo expectation, ties likelier between close models."""
    n = len(true)
    a = rng.integers(0, n, count)
    b = (a + rng.integers(1, n, count)) % n
    p = 1 / (1 + 10 ** (-(true[a] - true[b]) / 400))
    tie_p = 0.5 * np.minimum(p, 1 - p)
    win_given_no_tie = (p - tie_p / 2) / (1 - tie_p)
    tie = rng.random(count) < tie_p
    a_wins = rng.random(count) < win_given_no_tie
    winners = np.where(tie, "tie", np.where(a_wins, "model_a", "model_b"))
    names = [f"m{k}" for k in range(n)]
    return [Outcome(names[x], names[y], w) for x, y, w in zip(a, b, winners, strict=True)]


# --- hand-computed fits ---------------------------------------------------------------------------------


def test_two_models_three_to_one_gives_log3_gap_centred_on_1000() -> None:
    board = fit_bradley_terry(outcomes_from_counts({("A", "B"): (3, 1, 0)}))
    gap = 400 * math.log(3) / math.log(10)
    assert gap == pytest.approx(190.8485, abs=1e-4)
    r = ratings_of(board)
    assert r["A"] == pytest.approx(1000 + gap / 2, abs=1e-3)
    assert r["B"] == pytest.approx(1000 - gap / 2, abs=1e-3)
    assert r["A"] == pytest.approx(1095.4243, abs=1e-3)
    assert [m.model for m in board.models] == ["A", "B"]
    a = row(board, "A")
    assert (a.votes, a.wins, a.ties, a.losses) == (4, 3, 0, 1)
    assert board.method["outcomes"] == 4 and board.method["mle_exists"] is True


def test_scale_base_and_init_change_only_the_units() -> None:
    board = fit_bradley_terry(outcomes_from_counts({("A", "B"): (3, 1, 0)}), scale=1.0, base=math.e, init=0.0)
    r = ratings_of(board)
    assert r["A"] - r["B"] == pytest.approx(math.log(3), abs=1e-6)
    assert r["A"] + r["B"] == pytest.approx(0.0, abs=1e-6)


def test_only_ties_give_equal_ratings() -> None:
    board = fit_bradley_terry(outcomes_from_counts({("A", "B"): (0, 0, 5), ("B", "C"): (0, 0, 3)}))
    for rating in ratings_of(board).values():
        assert rating == pytest.approx(1000.0, abs=1e-6)


def test_ties_count_as_half_a_win() -> None:
    """A wins 1 and ties 2 scores 2 of 3, as A wins 2 and loses 1: the same ratings."""
    with_ties = fit_bradley_terry(outcomes_from_counts({("A", "B"): (1, 0, 2)}))
    without = fit_bradley_terry(outcomes_from_counts({("A", "B"): (2, 1, 0)}))
    for model, rating in ratings_of(without).items():
        assert ratings_of(with_ties)[model] == pytest.approx(rating, abs=1e-6)
    assert ratings_of(without)["A"] - ratings_of(without)["B"] == pytest.approx(ELO * math.log(2), abs=1e-3)
    # and "tie (bothbad)" is a tie like any other
    bothbad = [Outcome("A", "B", "model_a"), Outcome("A", "B", "tie (bothbad)"), Outcome("B", "A", "tie (bothbad)")]
    assert ratings_of(fit_bradley_terry(bothbad))["A"] == pytest.approx(ratings_of(without)["A"], abs=1e-6)
    assert row(with_ties, "A").ties == 2


def test_weight_counts_like_repeated_outcomes() -> None:
    weighted = [Outcome("A", "B", "model_a", weight=3.0), Outcome("A", "B", "model_b")]
    repeated = outcomes_from_counts({("A", "B"): (3, 1, 0)})
    assert ratings_of(fit_bradley_terry(weighted))["A"] == pytest.approx(
        ratings_of(fit_bradley_terry(repeated))["A"], abs=1e-6
    )


CYCLE = {
    ("A", "B"): (5, 2, 1),
    ("B", "C"): (4, 3, 2),
    ("C", "A"): (3, 1, 0),
}


def cycle_scores() -> tuple[list[str], np.ndarray, np.ndarray]:
    """Score matrix s[i, j] (wins of i over j plus half the ties) and counts n[i, j] of the cycle."""
    names = ["A", "B", "C"]
    s, n = np.zeros((3, 3)), np.zeros((3, 3))
    for (a, b), (wins, losses, ties) in CYCLE.items():
        i, j = names.index(a), names.index(b)
        s[i, j] += wins + ties / 2
        s[j, i] += losses + ties / 2
        n[i, j] = n[j, i] = wins + losses + ties
    return names, s, n


def test_three_model_cycle_matches_a_direct_solve_of_the_score_equations() -> None:
    names, s, n = cycle_scores()

    def equations(free: np.ndarray) -> np.ndarray:
        theta = np.append(free, 0.0)  # C fixed at 0
        p = 1 / (1 + np.exp(-(theta[:, None] - theta[None, :])))
        return (s - n * p).sum(axis=1)[:2]  # observed minus expected score of A and B

    solved = optimize.root(equations, np.zeros(2), method="hybr")
    assert solved.success and np.abs(equations(solved.x)).max() < 1e-10
    theta = np.append(solved.x, 0.0)
    expected = 1000 + ELO * (theta - theta.mean())
    board = fit_bradley_terry(outcomes_from_counts(CYCLE))
    got = ratings_of(board)
    for k, model in enumerate(names):
        assert got[model] == pytest.approx(expected[k], abs=1e-3)
    assert sum(got.values()) / 3 == pytest.approx(1000.0, abs=1e-6)


def test_sandwich_matches_a_per_outcome_computation_in_a_reduced_parametrisation() -> None:
    """Unaggregated: per-outcome scores for J, a numeric Hessian for H, with C fixed at 0, then centred."""
    names, _, _ = cycle_scores()
    outcomes = outcomes_from_counts(CYCLE)
    board = fit_bradley_terry(outcomes)
    theta = np.array([(ratings_of(board)[m] - 1000) / ELO for m in names])
    theta -= theta[2]  # the same fit with C at 0

    def loglik_grad(free: np.ndarray) -> np.ndarray:
        full = np.append(free, 0.0)
        grad = np.zeros(3)
        for o in outcomes:
            i, j = names.index(o.model_a), names.index(o.model_b)
            y = {"model_a": 1.0, "model_b": 0.0}.get(o.winner, 0.5)
            p = 1 / (1 + math.exp(-(full[i] - full[j])))
            grad[i] += y - p
            grad[j] -= y - p
        return grad[:2]

    meat = np.zeros((2, 2))
    for o in outcomes:
        i, j = names.index(o.model_a), names.index(o.model_b)
        y = {"model_a": 1.0, "model_b": 0.0}.get(o.winner, 0.5)
        p = 1 / (1 + math.exp(-(theta[i] - theta[j])))
        g = np.zeros(3)
        g[i], g[j] = y - p, p - y
        meat += np.outer(g[:2], g[:2])
    h = 1e-6
    hessian = -np.array(
        [(loglik_grad(theta[:2] + h * e) - loglik_grad(theta[:2] - h * e)) / (2 * h) for e in np.eye(2)]
    )
    bread = np.linalg.inv(hessian)
    embed = np.vstack([np.eye(2), np.zeros((1, 2))])
    centre = np.eye(3) - 1 / 3
    cov = centre @ embed @ bread @ meat @ bread @ embed.T @ centre.T
    half = stats.norm.ppf(0.975) * ELO * np.sqrt(np.diag(cov))
    for k, model in enumerate(names):
        r = row(board, model)
        assert r.ci_high is not None and r.ci_low is not None
        assert (r.ci_high - r.ci_low) / 2 == pytest.approx(half[k], rel=1e-4)
        assert (r.ci_high + r.ci_low) / 2 == pytest.approx(r.rating, abs=1e-9)


def test_a_common_weight_changes_neither_ratings_nor_intervals() -> None:
    """Weights are relative: the sandwich H^-1 J H^-1 (J from squared weights) is unchanged by scaling them all."""
    plain = outcomes_from_counts(CYCLE)
    halved = [Outcome(o.model_a, o.model_b, o.winner, weight=0.5) for o in plain]
    one, other = fit_bradley_terry(plain), fit_bradley_terry(halved)
    for a, b in zip(one.models, other.models, strict=True):
        assert a.model == b.model and a.rating == pytest.approx(b.rating, abs=1e-6)
        assert a.ci_low == pytest.approx(b.ci_low, abs=1e-6) and a.ci_high == pytest.approx(b.ci_high, abs=1e-6)


# --- recovery of known strengths ------------------------------------------------------------------------

TRUE = np.linspace(800.0, 1200.0, 8)  # mean 1000, 57 points apart


def fitted_vector(board: Leaderboard, field: str) -> np.ndarray:
    by_name = {r.model: getattr(r, field) for r in board.models}
    return np.array([by_name[f"m{k}"] for k in range(len(TRUE))], dtype=float)


def test_known_strengths_are_recovered_and_the_sandwich_intervals_cover_them() -> None:
    """20 simulations of 20,000 outcomes: 95 % intervals should cover about 95 %; we require >= 85 % overall."""
    covered, total, max_error = 0, 0, 0.0
    for seed in range(20):
        board = fit_bradley_terry(simulate(TRUE, 20_000, np.random.default_rng(seed)))
        rating, low, high = (fitted_vector(board, f) for f in ("rating", "ci_low", "ci_high"))
        covered += int(np.count_nonzero((low <= TRUE) & (high >= TRUE)))
        total += len(TRUE)
        max_error = max(max_error, float(np.abs(rating - TRUE).max()))
        # 57 points apart against a standard error of about 8: the order is the true one
        assert [r.model for r in board.models] == [f"m{k}" for k in reversed(range(len(TRUE)))]
        assert board.models[0].rank == 1
    assert covered / total >= 0.85
    assert max_error < 40


def test_intervals_halve_with_four_times_the_votes() -> None:
    widths = {}
    for count in (20_000, 80_000):
        board = fit_bradley_terry(simulate(TRUE, count, np.random.default_rng(7)))
        widths[count] = float(np.mean(fitted_vector(board, "ci_high") - fitted_vector(board, "ci_low")))
    ratio = widths[80_000] / widths[20_000]
    assert 0.35 < ratio < 0.65


def test_robust_intervals_are_narrower_than_binomial_ones_when_ties_are_common() -> None:
    """Half-win ties vary less than wins or losses: the sandwich sees it (model-based variance would not)."""
    rng = np.random.default_rng(3)
    outcomes = [Outcome("A", "B", w) for w in rng.choice(["model_a", "model_b", "tie"], 4000, p=[0.1, 0.1, 0.8])]
    a = row(fit_bradley_terry(outcomes), "A")
    assert a.ci_low is not None and a.ci_high is not None
    # Var of the per-outcome score is 0.2 * 0.25 = 0.05 instead of 0.25: the interval is sqrt(5) narrower.
    binomial_half = stats.norm.ppf(0.975) * ELO / 2 / math.sqrt(4000 * 0.25)  # A's rating is 1000 + ELO * d / 2
    assert (a.ci_high - a.ci_low) / 2 < 0.6 * binomial_half


# --- bootstrap ------------------------------------------------------------------------------------------


def test_bootstrap_contains_the_point_estimate_and_repeats_with_its_seed() -> None:
    outcomes = simulate(TRUE, 5_000, np.random.default_rng(11))
    first = fit_bradley_terry(outcomes, ci="bootstrap", rounds=50, seed=5)
    again = fit_bradley_terry(outcomes, ci="bootstrap", rounds=50, seed=5)
    other = fit_bradley_terry(outcomes, ci="bootstrap", rounds=50, seed=6)
    sandwich = fit_bradley_terry(outcomes)
    assert first.models == again.models
    assert [r.ci_low for r in first.models] != [r.ci_low for r in other.models]
    for r in first.models:
        assert r.ci_low is not None and r.ci_high is not None
        assert r.ci_low <= r.rating <= r.ci_high
        assert r.rating == pytest.approx(row(sandwich, r.model).rating, abs=1e-9)  # the fit on all data
        s = row(sandwich, r.model)
        assert s.ci_low is not None and s.ci_high is not None
        assert (r.ci_high - r.ci_low) == pytest.approx(s.ci_high - s.ci_low, rel=0.35)
    assert first.method["ci"] == "bootstrap" and first.method["rounds"] == 50


def test_no_intervals_with_ci_none_and_ranks_follow_the_ratings() -> None:
    board = fit_bradley_terry(outcomes_from_counts(CYCLE), ci="none")
    assert all(r.ci_low is None and r.ci_high is None for r in board.models)
    assert [r.rank for r in board.models] == [1, 2, 3]


# --- ranks ----------------------------------------------------------------------------------------------


def test_rank_counts_the_models_whose_interval_lies_wholly_above() -> None:
    ratings = [1300.0, 1250.0, 1240.0, 1100.0, 1000.0]
    lows = [1280.0, 1200.0, 1230.0, 1050.0, 990.0]
    highs = [1320.0, 1290.0, 1250.0, 1150.0, 1010.0]
    # 1250 [1200, 1290] overlaps the top; 1240 [1230, 1250] lies under 1280; 1100 under the first three
    assert interval_ranks(ratings, lows, highs) == [1, 1, 2, 4, 5]
    # a missing interval stands as its rating
    assert interval_ranks(ratings, [None] * 5, [None] * 5) == [1, 2, 3, 4, 5]


def test_ranks_on_a_fitted_board_with_a_clear_leader_and_two_close_models() -> None:
    counts = {("A", "B"): (90, 10, 0), ("A", "C"): (90, 10, 0), ("B", "C"): (51, 49, 0)}
    board = fit_bradley_terry(outcomes_from_counts(counts))
    assert [(r.model, r.rank) for r in board.models] == [("A", 1), ("B", 2), ("C", 2)]


def test_a_model_that_never_loses_has_no_interval_and_leaves_the_others_fitted_on_their_own() -> None:
    base = {("B", "C"): (6, 4, 0)}
    outcomes = outcomes_from_counts(base) + [Outcome("A", "B", "model_a"), Outcome("C", "A", "model_b")]
    board = fit_bradley_terry(outcomes)
    assert board.method["mle_exists"] is False
    a = row(board, "A")
    assert a.ci_low is None and a.ci_high is None and a.rank == 1
    alone = fit_bradley_terry(outcomes_from_counts(base))
    for model in ("B", "C"):
        assert row(board, model).rating == pytest.approx(row(alone, model).rating, abs=1e-6)
        assert row(board, model).ci_low == pytest.approx(row(alone, model).ci_low, abs=1e-6)
    assert a.rating > row(board, "B").rating + 300


# --- matrices, expansion, scores ------------------------------------------------------------------------


def test_win_rate_and_vote_count_matrices_follow_the_board_order() -> None:
    board = fit_bradley_terry(outcomes_from_counts({("A", "B"): (3, 1, 0), ("B", "C"): (2, 1, 1)}))
    names, rates = board.win_rate_matrix()
    assert names == [r.model for r in board.models] == ["A", "B", "C"]
    assert rates == [[None, 0.75, None], [0.25, None, 0.625], [None, 0.375, None]]
    _, counts = board.vote_count_matrix()
    assert counts == [[None, 4.0, 0.0], [4.0, None, 4.0], [0.0, 4.0, None]]


def test_expand_vote_winner_beats_every_other_panel_in_display_order() -> None:
    outcomes = expand_vote(["x", "y", "z"], "y")
    assert outcomes == [Outcome("x", "y", "model_b"), Outcome("y", "z", "model_a")]


def test_expand_vote_ties_and_bothbad_tie_every_pair() -> None:
    assert expand_vote(["x", "y", "z"], "tie") == [
        Outcome("x", "y", "tie"),
        Outcome("x", "z", "tie"),
        Outcome("y", "z", "tie"),
    ]
    bad = expand_vote(["x", "y", "z"], "bothbad")
    assert len(bad) == 3 and all(o.winner == "tie (bothbad)" for o in bad)
    assert expand_vote(["x", "y"], "x") == [Outcome("x", "y", "model_a")]


@pytest.mark.parametrize(("panels", "winner"), [(["x"], "x"), ([], "tie"), (["x", "y"], "w"), (["x", "x"], "x")])
def test_expand_vote_refuses_bad_votes(panels: list[str], winner: str) -> None:
    with pytest.raises(ValueError):
        expand_vote(panels, winner)


def test_bad_outcomes_and_options_are_refused() -> None:
    with pytest.raises(ValueError):
        Outcome("a", "b", "draw")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Outcome("a", "a", "tie")
    with pytest.raises(ValueError):
        Outcome("a", "b", "tie", weight=0.0)
    with pytest.raises(ValueError):
        fit_bradley_terry([Outcome("a", "b", "tie")], ci="wald")  # type: ignore[arg-type]
    assert fit_bradley_terry([]).models == []


def test_mean_with_interval_is_a_student_t_interval() -> None:
    mean, low, high = mean_with_interval([1, 2, 3, 4, 5])
    half = 2.7764451051977987 * math.sqrt(2.5) / math.sqrt(5)  # t(0.975, 4) * s / sqrt(n)
    assert mean == pytest.approx(3.0)
    assert low == pytest.approx(3.0 - half, abs=1e-9) and high == pytest.approx(3.0 + half, abs=1e-9)
    assert mean_with_interval([4.0]) == (4.0, None, None)
    assert mean_with_interval([]) == (None, None, None)
    assert mean_with_interval([3, 3, 3]) == (3.0, 3.0, 3.0)


# --- speed ----------------------------------------------------------------------------------------------


def test_100k_outcomes_over_30_models_fit_with_sandwich_intervals_in_under_2_s() -> None:
    rng = np.random.default_rng(0)
    true = 1000 + rng.normal(0, 150, 30)
    outcomes = simulate(true - true.mean() + 1000, 100_000, rng)
    fit_bradley_terry(outcomes[:1000])  # warm the imports
    start = time.perf_counter()
    board = fit_bradley_terry(outcomes)
    elapsed = time.perf_counter() - start
    assert len(board.models) == 30 and board.method["outcomes"] == 100_000
    assert elapsed < 2.0, f"{elapsed:.2f} s"
