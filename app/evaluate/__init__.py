"""Ratings from arena votes: Bradley-Terry on the Elo scale with confidence intervals, and score means."""
