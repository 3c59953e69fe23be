"""What a leaderboard fit costs: 100,000 synthetic pairwise votes over 30 models (seeded).

    python bench/leaderboard.py [--votes N] [--models K] [--rounds R] [--repeats M]

Times the Bradley-Terry fit with sandwich intervals (median of M runs) and one fit with bootstrap intervals
(R rounds), and prints both and their ratio. Absolute times vary with the machine; the ratio is what to compare.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.evaluate.ratings import Outcome, fit_bradley_terry  # noqa: E402


def synthetic_votes(votes: int, models: int, seed: int = 0) -> list[Outcome]:
    """Random pairs of models with ratings spread about 150 points around 1000; ties likelier when close."""
    rng = np.random.default_rng(seed)
    true = rng.normal(0.0, 150.0, models)
    a = rng.integers(0, models, votes)
    b = (a + rng.integers(1, models, votes)) % models
    p = 1 / (1 + 10 ** (-(true[a] - true[b]) / 400))
    tie_p = 0.5 * np.minimum(p, 1 - p)
    tie = rng.random(votes) < tie_p
    a_wins = rng.random(votes) < (p - tie_p / 2) / (1 - tie_p)
    winners = np.where(tie, "tie", np.where(a_wins, "model_a", "model_b"))
    names = [f"model-{k:02d}" for k in range(models)]
    return [Outcome(names[x], names[y], w) for x, y, w in zip(a, b, winners, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--votes", type=int, default=100_000)
    parser.add_argument("--models", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    outcomes = synthetic_votes(args.votes, args.models)
    fit_bradley_terry(outcomes[:1000])  # warm up imports and caches

    sandwich_times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        board = fit_bradley_terry(outcomes, ci="sandwich")
        sandwich_times.append(time.perf_counter() - start)
    sandwich = statistics.median(sandwich_times)

    start = time.perf_counter()
    boot_board = fit_bradley_terry(outcomes, ci="bootstrap", rounds=args.rounds, seed=0)
    bootstrap = time.perf_counter() - start

    top = board.models[0]
    boot_top = next(r for r in boot_board.models if r.model == top.model)
    print(f"{args.votes:,} outcomes over {len(board.models)} models")
    print(f"sandwich fit (median of {args.repeats}): {sandwich * 1000:8.1f} ms")
    print(f"bootstrap fit ({args.rounds} rounds):     {bootstrap * 1000:8.1f} ms")
    print(f"ratio bootstrap / sandwich:       {bootstrap / sandwich:8.1f}")
    print(
        f"top: {top.model} {top.rating:.1f}  sandwich [{top.ci_low:.1f}, {top.ci_high:.1f}]"
        f"  bootstrap [{boot_top.ci_low:.1f}, {boot_top.ci_high:.1f}]"
    )


if __name__ == "__main__":
    main()
