"""Tiny random-weight checkpoints of the real architectures, built offline."""
