"""Which model families exist and which module serves each: built-ins, installed plugins, and modules
named in `VLM_ADAPTER_MODULES` (family=module,…). Names only: nothing here imports an adapter, so the
catalogue can be checked without torch."""

from __future__ import annotations

import os
from importlib.metadata import entry_points

# Built-in families → module path. Modules are imported on first use, so a pinned runtime only
# imports the adapter it needs (and never a transformers-5-only module).
BUILTIN: dict[str, str] = {
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
PLUGIN_GROUP = "vlm_playground.adapters"
MODULES_ENV = "VLM_ADAPTER_MODULES"


def plugin_modules() -> dict[str, str]:
    """Families from installed plugins (entry points) and from `VLM_ADAPTER_MODULES`."""
    found: dict[str, str] = {}
    for entry in entry_points(group=PLUGIN_GROUP):
        found[entry.name] = entry.value
    for item in os.environ.get(MODULES_ENV, "").split(","):
        family, _, module = item.partition("=")
        if family.strip() and module.strip():
            found[family.strip()] = module.strip()
    return found


def module_for(family: str) -> str | None:
    """The module that registers `family`'s adapter, or None for an unknown family."""
    return BUILTIN.get(family) or plugin_modules().get(family)


def known_families() -> set[str]:
    """Every family name a module is known for."""
    return set(BUILTIN) | set(plugin_modules())
