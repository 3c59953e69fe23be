"""Test doubles for things that cannot be reached here (remote code and weights on the Hub)."""
