"""Adapter registry: `family` name → adapter class.

Built-in adapters register through the same `register` call a plugin would use; plugins
installed as packages are found through the `vlm_playground.adapters` entry-point group.
"""

from __future__ import annotations

import importlib
import os
from importlib.metadata import entry_points

from app.adapters.base import Adapter, Finish, GenerationParams, ModelLoadError, Piece

__all__ = ["Adapter", "Finish", "GenerationParams", "ModelLoadError", "Piece", "adapter_for", "families",
           "register"]

_REGISTRY: dict[str, str | type[Adapter]] = {}

# Built-in families → module path. Modules are imported on first use, so a pinned runtime only
# imports the adapter it needs (and never a transformers-5-only module).
_BUILTIN: dict[str, str] = {
    "llava": "app.adapters.generic",
    "idefics3": "app.adapters.generic",
    "mllama": "app.adapters.generic",
    "qwen2_vl": "app.adapters.generic",
    "qwen2_5_vl": "app.adapters.generic",
    "internvl": "app.adapters.generic",
    "gemma3": "app.adapters.generic",
    "paligemma": "app.adapters.paligemma",
    "minicpm_v": "app.adapters.minicpm_v",
    "molmo": "app.adapters.molmo",
    "moondream": "app.adapters.moondream",
    "internvl2": "app.adapters.internvl2",
}


def register(*names: str):
    """Class decorator: make an adapter serve the given families."""

    def decorate(cls: type[Adapter]) -> type[Adapter]:
        cls.families = tuple(names)
        for name in names:
            _REGISTRY[name] = cls
        return cls

    return decorate


def _plugin_modules() -> dict[str, str]:
    """Families from installed plugins (entry points) and from `VLM_ADAPTER_MODULES` (family=module,…)."""
    found: dict[str, str] = {}
    for entry in entry_points(group="vlm_playground.adapters"):
        found[entry.name] = entry.value
    for item in os.environ.get("VLM_ADAPTER_MODULES", "").split(","):
        family, _, module = item.partition("=")
        if family.strip() and module.strip():
            found[family.strip()] = module.strip()
    return found


def families() -> set[str]:
    """Every family name an adapter is known for."""
    return set(_BUILTIN) | set(_REGISTRY) | set(_plugin_modules())


def adapter_for(family: str) -> type[Adapter]:
    """The adapter class for `family`, importing its module on first use."""
    if family not in _REGISTRY:
        module = _BUILTIN.get(family) or _plugin_modules().get(family)
        if module is None:
            raise KeyError(f"no adapter for family '{family}' (known: {', '.join(sorted(families()))})")
        importlib.import_module(module.split(":")[0])
    found = _REGISTRY.get(family)
    if not isinstance(found, type):
        raise KeyError(f"module for family '{family}' did not register an adapter")
    return found
