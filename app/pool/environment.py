"""The environment a worker starts with: the server's, less the playground's secrets.

Workers run model code, some of it downloaded (remote code); they get their own token (`TOKEN_ENV`) and
what loading a model needs (Hugging Face, CUDA, paths), never the playground's access token, users file
or database URL (which can hold a password)."""

from __future__ import annotations

from collections.abc import Mapping

from app.core.families import MODULES_ENV

SECRET_NAMES = frozenset({"DATABASE_URL"})
PLAYGROUND_PREFIX = "VLM_"  # every setting (VLM_AUTH_TOKEN, VLM_AUTH_TOKEN_FILE, VLM_USERS_FILE…)
WORKER_NEEDS = frozenset({MODULES_ENV})  # read by the worker itself: which module holds a family's adapter


def worker_environment(base: Mapping[str, str]) -> dict[str, str]:
    """`base` without DATABASE_URL and without any VLM_* variable except those a worker reads."""
    return {name: value for name, value in base.items()
            if name not in SECRET_NAMES and (not name.startswith(PLAYGROUND_PREFIX) or name in WORKER_NEEDS)}
