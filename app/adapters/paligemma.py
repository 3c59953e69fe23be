"""PaliGemma: pretrained checkpoints answer task-prefixed prompts ("caption en", "answer en …").

The pt repositories ship no chat template, and in transformers 5 a processor takes a template only
from `chat_template.json`/`.jinja`, so `apply_chat_template` would raise. The prompt is built the way
`PaliGemmaProcessor` expects instead: the task-prefixed text alone, to which the processor adds the
image tokens in front, then `<bos>`, and the newline that ends the prefix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.adapters import register
from app.adapters.generic import GenericAdapter

if TYPE_CHECKING:
    from PIL import Image

TASK_PREFIXES = ("caption", "describe", "ocr", "answer", "question", "detect", "segment")


def task_prompt(prompt: str) -> str:
    """Keep a prompt that already names a PaliGemma task; otherwise ask it as a question."""
    stripped = " ".join(prompt.split())  # the prefix is one line: the processor's newline ends it
    if stripped.split(" ", 1)[0].lower() in TASK_PREFIXES:
        return stripped
    return f"answer en {stripped}"


@register("paligemma")
class PaliGemmaAdapter(GenericAdapter):
    """The generic route with the pt prompt format instead of a chat template."""

    answers_text_alone = False  # its processor takes no prompt without an image

    def build_prompt(self, images: list[Image.Image], prompt: str) -> str:
        image_token = getattr(self.processor, "image_token", "<image>")
        # One <image> per image (the processor expands each to image_seq_length tokens, then <bos>).
        return image_token * len(images) + task_prompt(prompt)
