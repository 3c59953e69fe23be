"""PaliGemma: pretrained checkpoints answer task-prefixed prompts ("caption en", "answer en …")."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.adapters import register
from app.adapters.generic import GenericAdapter

if TYPE_CHECKING:
    from PIL import Image

TASK_PREFIXES = ("caption", "describe", "ocr", "answer", "question", "detect", "segment")


def task_prompt(prompt: str) -> str:
    """Keep a prompt that already names a PaliGemma task; otherwise ask it as a question."""
    stripped = prompt.strip()
    if stripped.split(" ", 1)[0].lower() in TASK_PREFIXES:
        return stripped
    return f"answer en {stripped}"


@register("paligemma")
class PaliGemmaAdapter(GenericAdapter):
    """The generic route with the task prefix PaliGemma's pretrained checkpoints expect."""

    def build_prompt(self, images: list[Image.Image], prompt: str) -> str:
        return super().build_prompt(images, task_prompt(prompt))
