"""Arena ratings: the Bradley-Terry model on the Elo scale, with intervals, as LMArena computes them.

A vote between the finished panels of a comparison becomes pairwise outcomes (`expand_vote`); the outcomes
are fitted by maximum likelihood (`fit_bradley_terry`), ties counting as half a win for each side, with no
penalty. The strengths are only identified up to a constant, so they are centred: the ratings' mean is `init`.
Intervals are robust (sandwich, Huber-White) or bootstrap percentiles. Identical outcomes are aggregated
first, so the cost grows with the number of model pairs, not of votes.

When one model (or a group) never loses, or never wins, against the rest, no finite maximum exists (the win
graph is not strongly connected, `method["mle_exists"]` is False; typical of a few votes, or a model just
added). Then the largest strongly connected group of models is fitted on its own (and centred on `init`); the
others keep the ratings of the fit bounded at `MAX_STRENGTH` and get no interval.

Imports numpy, scipy and the standard library only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np
from numpy.typing import NDArray
from scipy import optimize, sparse, special, stats  # type: ignore[import-untyped]
from scipy.sparse import csgraph  # type: ignore[import-untyped]

Winner = Literal["model_a", "model_b", "tie", "tie (bothbad)"]
CiMethod = Literal["sandwich", "bootstrap", "none"]

WINNERS: tuple[str, ...] = get_args(Winner)
CI_METHODS: tuple[str, ...] = get_args(CiMethod)

# The bound on each strength (natural-log odds) in the fit: about +-1737 Elo points at the defaults, far
# beyond real spreads; only data with no finite maximum (a model that never loses or never wins) gets there.
MAX_STRENGTH = 10.0

# Result codes of an outcome seen from its pair (i, j), i < j, and the score of i for each.
_I_WINS, _J_WINS, _TIE = 0, 1, 2
_CODE = {"model_a": _I_WINS, "model_b": _J_WINS, "tie": _TIE, "tie (bothbad)": _TIE}
_SCORE_I = np.array([1.0, 0.0, 0.5])

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]


def _sums(index: IntArray, weights: FloatArray, size: int) -> FloatArray:
    """Sum of `weights` per value of `index` (0 .. size - 1)."""
    return np.bincount(index, weights=weights, minlength=size).astype(np.float64, copy=False)


@dataclass(frozen=True)
class Outcome:
    """One pairwise result: `model_a` was shown first; `weight` scales its share in the likelihood."""

    model_a: str
    model_b: str
    winner: Winner
    weight: float = 1.0

    def __post_init__(self) -> None:
        if self.winner not in WINNERS:
            raise ValueError(f"winner must be one of {WINNERS}, not {self.winner!r}")
        if self.model_a == self.model_b:
            raise ValueError(f"a model cannot meet itself: {self.model_a!r}")
        if not (math.isfinite(self.weight) and self.weight > 0):
            raise ValueError(f"weight must be positive and finite, not {self.weight!r}")


@dataclass(frozen=True)
class ModelRating:
    """One row of the leaderboard. The interval is None with ci="none" or when the model has no finite MLE."""

    model: str
    rating: float
    ci_low: float | None
    ci_high: float | None
    rank: int
    votes: int
    wins: int
    ties: int
    losses: int


@dataclass
class Leaderboard:
    """Ratings sorted best first, how they were computed, and the pairwise tallies behind them."""

    models: list[ModelRating]
    method: dict[str, Any]
    # Per ordered pair, in the order of `models`: weighted score of row against column (ties as half),
    # weighted number of outcomes, and plain number of outcomes.
    _score: list[list[float]] = field(default_factory=list, repr=False, compare=False)
    _weight: list[list[float]] = field(default_factory=list, repr=False, compare=False)
    _count: list[list[int]] = field(default_factory=list, repr=False, compare=False)

    def names(self) -> list[str]:
        """The model names, best first."""
        return [row.model for row in self.models]

    def win_rate_matrix(self) -> tuple[list[str], list[list[float | None]]]:
        """Win rate of each row model against each column model (ties as half); None where they never met."""
        n = len(self.models)
        matrix: list[list[float | None]] = [
            [self._score[r][c] / self._weight[r][c] if r != c and self._count[r][c] > 0 else None for c in range(n)]
            for r in range(n)
        ]
        return self.names(), matrix

    def vote_count_matrix(self) -> tuple[list[str], list[list[float | None]]]:
        """Number of outcomes between each pair of models (symmetric); None on the diagonal."""
        n = len(self.models)
        matrix: list[list[float | None]] = [
            [float(self._count[r][c]) if r != c else None for c in range(n)] for r in range(n)
        ]
        return self.names(), matrix


def expand_vote(panels: Sequence[str], winner: str) -> list[Outcome]:
    """Pairwise outcomes of one N-way vote.

    `panels` are the models of the finished panels in display order, `winner` the winning model, "tie" or
    "bothbad". The winner beats each other panel; a tie (or bothbad) ties every pair; losers are not
    compared with each other. In every outcome `model_a` is the panel shown first.
    """
    if len(panels) < 2:
        raise ValueError("a vote needs at least two panels")
    if len(set(panels)) != len(panels):
        raise ValueError(f"a model appears in two panels: {list(panels)}")
    if winner in ("tie", "bothbad"):
        result: Winner = "tie" if winner == "tie" else "tie (bothbad)"
        return [Outcome(a, b, result) for k, a in enumerate(panels) for b in panels[k + 1 :]]
    if winner not in panels:
        raise ValueError(f"the winner {winner!r} is not one of the panels {list(panels)}")
    w = list(panels).index(winner)
    return [
        Outcome(panels[min(k, w)], panels[max(k, w)], "model_a" if w < k else "model_b")
        for k in range(len(panels))
        if k != w
    ]


@dataclass
class _Data:
    """Outcomes as arrays, grouped by (pair, result) and by pair."""

    names: list[str]
    weight: FloatArray  # per outcome
    group: IntArray  # per outcome: its (pair, result) group
    group_result: IntArray  # per group
    group_pair: IntArray  # per group: index into the pairs
    group_weight: FloatArray  # per group: sum of weights
    group_weight2: FloatArray  # per group: sum of squared weights (for the sandwich's J)
    pair_i: IntArray  # per pair, i < j
    pair_j: IntArray
    pair_score: FloatArray  # per pair: weighted score of i (ties as half)
    pair_weight: FloatArray  # per pair: weighted number of outcomes
    pair_count: IntArray  # per pair: number of outcomes
    wins: IntArray  # per model
    ties: IntArray
    losses: IntArray

    @property
    def n(self) -> int:
        return len(self.names)


def _aggregate(outcomes: Sequence[Outcome]) -> _Data:
    """Index the models (in order of appearance) and count the outcomes per pair and result."""
    index: dict[str, int] = {}
    count = len(outcomes)
    a = np.fromiter((index.setdefault(o.model_a, len(index)) for o in outcomes), dtype=np.intp, count=count)
    b = np.fromiter((index.setdefault(o.model_b, len(index)) for o in outcomes), dtype=np.intp, count=count)
    code = np.fromiter((_CODE[o.winner] for o in outcomes), dtype=np.intp, count=count)
    weight = np.fromiter((o.weight for o in outcomes), dtype=np.float64, count=count)
    n = len(index)

    swap = a > b
    i, j = np.where(swap, b, a), np.where(swap, a, b)
    code = np.where(swap & (code != _TIE), 1 - code, code)

    keys, group = np.unique((i * n + j) * 3 + code, return_inverse=True)
    group = group.reshape(-1)
    n_groups = len(keys)
    pair_keys, group_pair = np.unique(keys // 3, return_inverse=True)
    group_pair = group_pair.reshape(-1)
    group_result = keys % 3
    group_weight = _sums(group, weight, n_groups)
    group_weight2 = _sums(group, weight * weight, n_groups)
    group_count = np.bincount(group, minlength=n_groups)
    n_pairs = len(pair_keys)

    def per_model(winner_side: IntArray, result: int) -> IntArray:
        mask = code == result
        return np.bincount(winner_side[mask], minlength=n).astype(np.intp)

    ties = per_model(i, _TIE) + per_model(j, _TIE)
    return _Data(
        names=list(index),
        weight=weight,
        group=group,
        group_result=group_result,
        group_pair=group_pair,
        group_weight=group_weight,
        group_weight2=group_weight2,
        pair_i=(pair_keys // n).astype(np.intp),
        pair_j=(pair_keys % n).astype(np.intp),
        pair_score=_sums(group_pair, group_weight * _SCORE_I[group_result], n_pairs),
        pair_weight=_sums(group_pair, group_weight, n_pairs),
        pair_count=np.bincount(group_pair, weights=group_count, minlength=n_pairs).astype(np.intp),
        wins=per_model(i, _I_WINS) + per_model(j, _J_WINS),
        ties=ties,
        losses=per_model(j, _I_WINS) + per_model(i, _J_WINS),
    )


def _fit_strengths(
    n: int, pi: IntArray, pj: IntArray, score: FloatArray, weight: FloatArray, start: FloatArray
) -> FloatArray:
    """Maximum-likelihood strengths (natural-log odds), centred on 0, by L-BFGS-B with the analytic gradient."""
    total = float(weight.sum())
    if total <= 0:
        return np.zeros(n)
    other = weight - score

    def nll(theta: FloatArray) -> tuple[float, FloatArray]:
        d = theta[pi] - theta[pj]
        # -[s log sigma(d) + (w - s) log sigma(-d)], with log sigma(x) = -logaddexp(0, -x)
        value = score @ np.logaddexp(0.0, -d) + other @ np.logaddexp(0.0, d)
        slope = weight * special.expit(d) - score
        grad = _sums(pi, slope, n) - _sums(pj, slope, n)
        return float(value) / total, grad / total

    result = optimize.minimize(
        nll,
        start - start.mean(),
        jac=True,
        method="L-BFGS-B",
        bounds=[(-MAX_STRENGTH, MAX_STRENGTH)] * n,
        options={"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-11},
    )
    theta: FloatArray = np.asarray(result.x, dtype=np.float64)
    return theta - theta.mean()


def _laplacian(n: int, pi: IntArray, pj: IntArray, edge: FloatArray) -> FloatArray:
    """The matrix sum_p edge_p (e_i - e_j)(e_i - e_j)^T."""
    matrix = np.zeros((n, n))
    np.add.at(matrix, (pi, pj), -edge)
    np.add.at(matrix, (pj, pi), -edge)
    matrix[np.diag_indices(n)] += _sums(pi, edge, n) + _sums(pj, edge, n)
    return matrix


def _sandwich_se(data: _Data, theta: FloatArray) -> FloatArray:
    """Robust standard errors of the centred strengths: P H^+ J H^+ P, on the subspace sum(theta) = 0."""
    n = data.n
    p = special.expit(theta[data.pair_i] - theta[data.pair_j])
    hessian = _laplacian(n, data.pair_i, data.pair_j, data.pair_weight * p * (1.0 - p))
    # Each group of identical outcomes, score of i y, adds sum(w^2) (y - p)^2 (e_i - e_j)(e_i - e_j)^T to J.
    residual = _SCORE_I[data.group_result] - p[data.group_pair]
    meat_edge = _sums(data.group_pair, data.group_weight2 * residual**2, len(p))
    meat = _laplacian(n, data.pair_i, data.pair_j, meat_edge)
    bread = np.linalg.pinv(hessian, hermitian=True)
    centre = np.eye(n) - 1.0 / n
    cov = centre @ bread @ meat @ bread @ centre
    return np.sqrt(np.clip(np.diag(cov), 0.0, None))


def _bootstrap_strengths(data: _Data, theta: FloatArray, rounds: int, rng: np.random.Generator) -> FloatArray:
    """Strengths refitted on `rounds` resamples of the outcomes (rows), NaN for a model absent from one."""
    n, count = data.n, len(data.weight)
    n_groups, n_pairs = len(data.group_weight), len(data.pair_weight)
    score_i = _SCORE_I[data.group_result]
    out = np.full((rounds, n), np.nan)
    for r in range(rounds):
        pick = rng.integers(0, count, size=count)
        group_weight = _sums(data.group[pick], data.weight[pick], n_groups)
        pair_weight = _sums(data.group_pair, group_weight, n_pairs)
        pair_score = _sums(data.group_pair, group_weight * score_i, n_pairs)
        keep = pair_weight > 0
        pi, pj = data.pair_i[keep], data.pair_j[keep]
        present = np.bincount(pi, minlength=n) + np.bincount(pj, minlength=n) > 0
        fitted = _fit_strengths(n, pi, pj, pair_score[keep], pair_weight[keep], theta)
        fitted[~present] = np.nan
        out[r] = fitted - np.nanmean(fitted)
    return out


def _graph_facts(data: _Data) -> tuple[int, NDArray[np.bool_]]:
    """Connected components of the comparison graph, and the models of the main (largest) strongly connected
    component of the win graph (an edge i -> j when i scored against j). A finite MLE exists iff it holds all."""
    n = data.n
    pi, pj = data.pair_i, data.pair_j
    comparisons = sparse.coo_matrix((np.ones(len(pi)), (pi, pj)), shape=(n, n))
    components, _ = csgraph.connected_components(comparisons, directed=False)
    i_scored = data.pair_score > 0
    j_scored = data.pair_weight - data.pair_score > 0
    rows = np.concatenate([pi[i_scored], pj[j_scored]])
    cols = np.concatenate([pj[i_scored], pi[j_scored]])
    wins = sparse.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    _, labels = csgraph.connected_components(wins, directed=True, connection="strong")
    main = labels == np.argmax(np.bincount(labels, minlength=1))
    return int(components), main


def _estimate(
    data: _Data, ci: str, rounds: int, seed: int, alpha: float
) -> tuple[FloatArray, FloatArray | None, FloatArray | None]:
    """Centred strengths and their interval bounds (strength units; None with ci="none")."""
    theta = _fit_strengths(data.n, data.pair_i, data.pair_j, data.pair_score, data.pair_weight, np.zeros(data.n))
    if ci == "sandwich":
        half = stats.norm.ppf(1 - alpha / 2) * _sandwich_se(data, theta)
        return theta, theta - half, theta + half
    if ci == "bootstrap":
        boot = _bootstrap_strengths(data, theta, rounds, np.random.default_rng(seed))
        low, high = np.nanpercentile(boot, [100 * alpha / 2, 100 * (1 - alpha / 2)], axis=0)
        return theta, low, high
    return theta, None, None


def interval_ranks(ratings: Sequence[float], lows: Sequence[float | None], highs: Sequence[float | None]) -> list[int]:
    """Rank = 1 + the number of models whose interval lies wholly above this one's.

    A missing bound stands in as the rating itself, so without intervals the ranks follow the ratings.
    """
    if not len(ratings) == len(lows) == len(highs):
        raise ValueError("ratings, lows and highs differ in length")
    low = np.array([r if x is None else x for r, x in zip(ratings, lows, strict=True)], dtype=np.float64)
    high = np.array([r if x is None else x for r, x in zip(ratings, highs, strict=True)], dtype=np.float64)
    return [1 + int(np.count_nonzero(low > h)) for h in high]


def fit_bradley_terry(
    outcomes: Sequence[Outcome],
    scale: float = 400.0,
    base: float = 10.0,
    init: float = 1000.0,
    ci: CiMethod = "sandwich",
    rounds: int = 100,
    seed: int = 0,
    alpha: float = 0.05,
) -> Leaderboard:
    """Fit Bradley-Terry ratings (Elo scale: rating = init + scale * strength / ln(base)) with intervals.

    ci="sandwich": rating +- z * robust se; "bootstrap": percentile intervals over `rounds` resamples of the
    outcomes (numpy Generator seeded with `seed`); "none": no intervals (rank by rating). Only models that
    appear in some outcome are rated; the ratings' mean is `init`.

    Without a finite MLE (`method["mle_exists"]` False: some models never lose, or never win, against the
    rest), the models of the largest strongly connected part of the win graph are fitted on their own outcomes
    (their mean is then `init`); the others keep the bounded fit's rating and get no interval.
    """
    if ci not in CI_METHODS:
        raise ValueError(f"ci must be one of {CI_METHODS}, not {ci!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), not {alpha!r}")
    if ci == "bootstrap" and rounds < 2:
        raise ValueError("the bootstrap needs at least 2 rounds")
    if scale <= 0 or base <= 1:
        raise ValueError("scale must be positive and base above 1")

    data = _aggregate(outcomes)
    n = data.n
    components, main = _graph_facts(data) if n else (0, np.zeros(0, dtype=bool))
    mle_exists = bool(main.all())
    lows: list[float | None] = [None] * n
    highs: list[float | None] = [None] * n
    if n == 0:
        theta, low, high, inside = np.zeros(0), None, None, np.zeros(0, dtype=np.intp)
    elif mle_exists:
        theta, low, high = _estimate(data, ci, rounds, seed, alpha)
        inside = np.arange(n)
    else:
        theta = _fit_strengths(n, data.pair_i, data.pair_j, data.pair_score, data.pair_weight, np.zeros(n))
        low, high, inside = None, None, np.flatnonzero(main)
        if len(inside) < 2:  # no two models can be compared: centre on all
            theta, inside = theta - theta.mean(), np.zeros(0, dtype=np.intp)
        else:
            members = {data.names[k] for k in inside}
            sub = _aggregate([o for o in outcomes if o.model_a in members and o.model_b in members])
            inside = np.array([data.names.index(name) for name in sub.names], dtype=np.intp)
            theta = theta - theta[inside].mean()
            theta[inside], low, high = _estimate(sub, ci, rounds, seed, alpha)
    to_elo = scale / math.log(base)
    ratings = init + to_elo * theta
    if low is not None and high is not None:
        for k, lo, hi in zip(inside, low, high, strict=True):
            lows[k], highs[k] = float(init + to_elo * lo), float(init + to_elo * hi)
    ranks = interval_ranks(list(ratings), lows, highs)

    order = sorted(range(n), key=lambda k: (-ratings[k], data.names[k]))
    rows = [
        ModelRating(
            model=data.names[k],
            rating=float(ratings[k]),
            ci_low=lows[k],
            ci_high=highs[k],
            rank=ranks[k],
            votes=int(data.wins[k] + data.ties[k] + data.losses[k]),
            wins=int(data.wins[k]),
            ties=int(data.ties[k]),
            losses=int(data.losses[k]),
        )
        for k in order
    ]
    method: dict[str, Any] = {
        "model": "bradley-terry",
        "scale": scale,
        "base": base,
        "init": init,
        "ci": ci,
        "rounds": rounds if ci == "bootstrap" else 0,
        "seed": seed,
        "alpha": alpha,
        "outcomes": len(outcomes),
        "models": n,
        "components": components,
        "mle_exists": mle_exists,
    }
    score, weight, count = _pair_tables(data, order)
    return Leaderboard(models=rows, method=method, _score=score, _weight=weight, _count=count)


def _pair_tables(data: _Data, order: list[int]) -> tuple[list[list[float]], list[list[float]], list[list[int]]]:
    """Row-against-column score, weight and count tables, rows and columns in `order`."""
    n = data.n
    score, weight, count = np.zeros((n, n)), np.zeros((n, n)), np.zeros((n, n), dtype=np.intp)
    pi, pj = data.pair_i, data.pair_j
    score[pi, pj], score[pj, pi] = data.pair_score, data.pair_weight - data.pair_score
    weight[pi, pj] = weight[pj, pi] = data.pair_weight
    count[pi, pj] = count[pj, pi] = data.pair_count
    idx = np.ix_(order, order)
    return score[idx].tolist(), weight[idx].tolist(), count[idx].tolist()


def mean_with_interval(scores: Sequence[float], alpha: float = 0.05) -> tuple[float | None, float | None, float | None]:
    """Mean of the scores with a Student-t interval: (mean, low, high); (mean, None, None) for one score,
    (None, None, None) for none."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), not {alpha!r}")
    values = np.asarray(scores, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError("scores must be finite")
    if len(values) == 0:
        return None, None, None
    mean = float(values.mean())
    if len(values) < 2:
        return mean, None, None
    half = float(stats.t.ppf(1 - alpha / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))
    return mean, mean - half, mean + half
