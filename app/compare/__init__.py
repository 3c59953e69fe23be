"""Comparisons: check, store, fan out to models, stream, record."""
