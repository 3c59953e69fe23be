"""Adapter registry: `family` name → adapter class.

Built-in adapters register through the same `register` call a plugin would use; plugins
installed as packages are found through the `vlm_playground.adapters` entry-point group.
"""

from __future__ import annotations

import importlib

from app.adapters.base import Adapter, ModelLoadError
from app.core.families import known_families, module_for

__all__ = ["Adapter", "ModelLoadError", "adapter_for", "families", "register"]

_REGISTRY: dict[str, type[Adapter]] = {}


def register(*names: str):
    """Class decorator: make an adapter serve the given families."""

    def decorate(cls: type[Adapter]) -> type[Adapter]:
        cls.families = tuple(names)
        for name in names:
            _REGISTRY[name] = cls
        return cls

    return decorate


def families() -> set[str]:
    """Every family name an adapter is known for (also those registered at run time)."""
    return known_families() | set(_REGISTRY)


def adapter_for(family: str) -> type[Adapter]:
    """The adapter class for `family`, importing its module on first use."""
    if family not in _REGISTRY:
        module = module_for(family)
        if module is None:
            raise KeyError(f"no adapter for family '{family}' (known: {', '.join(sorted(families()))})")
        importlib.import_module(module.split(":")[0])
    found = _REGISTRY.get(family)
    if found is None:
        raise KeyError(f"module for family '{family}' did not register an adapter")
    return found
