"""Whether each catalogue model can be loaded here, decided without touching the network."""

from __future__ import annotations

import os
from pathlib import Path

from app.core.catalog import Catalog, ModelSpec


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def has_token() -> bool:
    if os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN"):
        return True
    try:
        from huggingface_hub import get_token

        return bool(get_token())
    except Exception:
        return False


def cached(spec: ModelSpec) -> bool:
    """True when the checkpoint's config is in the local Hugging Face cache."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(spec.repo or "", "config.json",
                                       revision=None if spec.revision == "main" else spec.revision)
        return isinstance(found, str)
    except Exception:
        return False


def reason_unreachable(spec: ModelSpec) -> str | None:
    """None when the model can be loaded; otherwise why not, in words a person can act on."""
    if not spec.available:
        return spec.unavailable_reason or "unavailable"
    if spec.is_remote:
        return None
    repo = spec.repo or ""
    if repo.startswith("/") or spec.tiny:
        return None if Path(repo).is_dir() else f"no checkpoint at {repo}"
    if cached(spec):
        return None
    if hub_offline():
        return "not in the local Hugging Face cache, and the Hub is offline (HF_HUB_OFFLINE=1)"
    if spec.gated and not has_token():
        return "gated on the Hub: accept its licence and set HF_TOKEN"
    return None


def reachability(catalog: Catalog) -> dict[str, str | None]:
    return {spec.id: reason_unreachable(spec) for spec in catalog.models}
