"""Why a vote should not count: an answer that names its own model or maker (the identity-leak check
arenas use), or an answer that is empty. Flagged votes are kept, with the reason, and left out of the
leaderboard unless asked for."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from app.core.catalog import ModelSpec

# Who makes each family (and the names its models go by), as an answer might say it.
MAKERS: dict[str, tuple[str, ...]] = {
    "qwen2_vl": ("Qwen", "Alibaba", "Tongyi"),
    "qwen2_5_vl": ("Qwen", "Alibaba", "Tongyi"),
    "llava": ("LLaVA", "Vicuna"),
    "paligemma": ("PaliGemma", "Gemma", "Google", "DeepMind"),
    "gemma3": ("Gemma", "Google", "DeepMind"),
    "mllama": ("Llama", "Meta"),
    "idefics3": ("SmolVLM", "Idefics", "Hugging Face", "HuggingFace"),
    "internvl": ("InternVL", "InternLM", "Shanghai AI Lab", "OpenGVLab"),
    "internvl2": ("InternVL", "InternLM", "Shanghai AI Lab", "OpenGVLab"),
    "minicpm_v": ("MiniCPM", "OpenBMB", "ModelBest"),
    "molmo": ("Molmo", "Allen Institute", "AI2", "Ai2", "OLMo"),
    "moondream": ("moondream", "vikhyat"),
}
GENERIC = {"vision", "instruct", "base", "chat", "model", "tiny", "demo", "hf", "pt", "it", "vl"}


def identity_terms(spec: ModelSpec) -> set[str]:
    """Words that would give a model away: its name, id and repository parts, and its maker's names."""
    terms = set(MAKERS.get(spec.family or "", ()))
    for text in (spec.name, spec.id, spec.repo or "", spec.original_repo or ""):
        for part in re.split(r"[\s/_.:-]+", text):
            if len(part) >= 4 and part.lower() not in GENERIC and not part.isdigit():
                terms.add(part)
    return terms


def names_itself(text: str, spec: ModelSpec) -> str | None:
    """The first word in `text` that names `spec`'s model or maker (whole words, any case), or None."""
    for term in sorted(identity_terms(spec), key=len, reverse=True):
        if re.search(rf"(?<![\w]){re.escape(term)}(?![\w])", text, flags=re.IGNORECASE):
            return term
    return None


@dataclass(frozen=True)
class PanelAnswer:
    label: str
    spec: ModelSpec
    status: str
    text: str


def vote_flag(panels: Iterable[PanelAnswer]) -> str | None:
    """Why a vote on these panels should not count, in words, or None. Only finished answers are judged."""
    reasons = []
    for panel in panels:
        if panel.status != "done":
            continue
        if not panel.text.strip():
            reasons.append(f"panel {panel.label}'s answer is empty")
            continue
        leaked = names_itself(panel.text, panel.spec)
        if leaked:
            reasons.append(f"panel {panel.label}'s answer names its model or maker ({leaked!r})")
    return "; ".join(reasons) or None
