"""What a model can take and do: its input budget (context, images, pixels) and its capabilities.

Each catalogue entry may set these; what it leaves out comes from its family's defaults below,
which are the published figures of the family's catalogued checkpoints. Adapters use the budget
before generating (downsize, combine into a grid, or refuse) and the capabilities to decide which
sampling settings really apply; the page and `vlm-playground models --json` show both.

Importable everywhere (no torch, no transformers).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# The room kept for the answer when images are fitted: the requested max_new_tokens, at most half the context.
ANSWER_SHARE = 0.5


class InputBudget(BaseModel):
    """How much input a model takes. `None` means: no limit of our own (the model's code decides)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    context_tokens: int | None = Field(default=None, ge=64)
    max_images: int | None = Field(default=None, ge=1)
    min_pixels: int | None = Field(default=None, ge=1)  # dynamic-resolution families: per image
    max_pixels: int | None = Field(default=None, ge=1)


class Capabilities(BaseModel):
    """What a model's generation honours. A setting it does not honour is recorded as ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    sampling: bool = True  # temperature and top_p; False = greedy decoding whatever is asked
    seed: bool = True  # a seed makes a sampled answer repeat
    streaming: bool = True  # text arrives piece by piece (False: all at once at the end)


class BudgetOverride(BaseModel):
    """An entry's `budget:` — any field overrides the family default."""

    model_config = ConfigDict(extra="forbid")
    context_tokens: int | None = Field(default=None, ge=64)
    max_images: int | None = Field(default=None, ge=1)
    min_pixels: int | None = Field(default=None, ge=1)
    max_pixels: int | None = Field(default=None, ge=1)


class SupportsOverride(BaseModel):
    """An entry's `supports:` — any field overrides the family default."""

    model_config = ConfigDict(extra="forbid")
    sampling: bool | None = None
    seed: bool | None = None
    streaming: bool | None = None


@dataclass(frozen=True)
class ImageUse:
    """The most of an image a family's processor uses; past it, its own resize throws pixels away.

    Each figure is a floor the server keeps when it downsizes an upload before sending it to a model:
    the shortest side (resize-then-crop families), the longest side (fit-within families), or the
    pixel count (tiling and dynamic-resolution families)."""

    short_side: int | None = None
    long_side: int | None = None
    pixels: int | None = None

    def scale(self, width: int, height: int) -> float:
        """The factor (at most 1) that keeps every figure this family uses."""
        needs = []
        if self.short_side:
            needs.append(self.short_side / min(width, height))
        if self.long_side:
            needs.append(self.long_side / max(width, height))
        if self.pixels:
            needs.append((self.pixels / (width * height)) ** 0.5)
        return min(1.0, max(needs)) if needs else 1.0


# A family we know nothing of (a plugin, a remote endpoint's model) gets images of up to 16.8 MP.
GENERIC_IMAGE_USE = ImageUse(pixels=4096 * 4096)


def tiles(count: int, side: int) -> int:
    """Twice the pixels of `count` square tiles: a tiling processor's grid choice depends on the image's
    area and aspect, so the floor keeps room for any grid it may pick."""
    return 2 * count * side * side


@dataclass(frozen=True)
class FamilyDefaults:
    budget: InputBudget
    capabilities: Capabilities = field(default_factory=Capabilities)
    image_use: ImageUse = GENERIC_IMAGE_USE


QWEN_PIXEL = 28 * 28  # one image token of Qwen2-VL / Qwen2.5-VL covers 28×28 pixels after merging

# Published figures of each family's catalogued checkpoints (config.json, preprocessor_config.json,
# model cards); see the README's verification table for where each was read.
FAMILY_DEFAULTS: dict[str, FamilyDefaults] = {
    # LLaVA-1.5: 576 tokens an image (336 px / 14 px patches), Llama-2 context of 4,096.
    "llava": FamilyDefaults(InputBudget(context_tokens=4096), image_use=ImageUse(short_side=336)),
    # PaliGemma pt: 256 (224 px) or 1,024 (448 px) image tokens, one image, 8,192 positions.
    "paligemma": FamilyDefaults(InputBudget(context_tokens=8192, max_images=1), image_use=ImageUse(short_side=448)),
    # SmolVLM (Idefics3): 81 tokens a 384-px tile, up to 4×4 tiles + 1; 16,384 positions.
    "idefics3": FamilyDefaults(InputBudget(context_tokens=16384), image_use=ImageUse(long_side=2048)),
    # Llama 3.2 Vision: one image by cross-attention (the card: single image), 128k positions.
    "mllama": FamilyDefaults(InputBudget(context_tokens=131072, max_images=1), image_use=ImageUse(long_side=2240)),
    # Qwen2-VL: dynamic resolution; the checkpoint allows 12.8 MP (16,384 tokens) an image. The model
    # card's suggested ceiling is 1,280 tokens an image (1280·28·28 px): that is the default here.
    "qwen2_vl": FamilyDefaults(InputBudget(context_tokens=32768, min_pixels=4 * QWEN_PIXEL,
                                           max_pixels=1280 * QWEN_PIXEL)),
    "qwen2_5_vl": FamilyDefaults(InputBudget(context_tokens=32768, min_pixels=4 * QWEN_PIXEL,
                                             max_pixels=1280 * QWEN_PIXEL)),
    # InternVL (transformers-native): 256 tokens a 448-px tile, up to 12 tiles + thumbnail.
    "internvl": FamilyDefaults(InputBudget(context_tokens=32768), image_use=ImageUse(pixels=tiles(12, 448))),
    # Gemma 3: 256 tokens an image, 128k context (4B and up).
    "gemma3": FamilyDefaults(InputBudget(context_tokens=131072), image_use=ImageUse(short_side=896)),
    # MiniCPM-V 2.6: 64 tokens a slice, up to 9 slices + the whole image; chat's max_inp_length 8,192.
    "minicpm_v": FamilyDefaults(InputBudget(context_tokens=8192), image_use=ImageUse(pixels=tiles(9, 448))),
    # Molmo-7B-0924: one image, up to 12 crops + a global view; 4,096 positions.
    "molmo": FamilyDefaults(InputBudget(context_tokens=4096, max_images=1), image_use=ImageUse(pixels=tiles(12, 336))),
    # moondream: one image of 729 tokens, 2,048 positions.
    "moondream": FamilyDefaults(InputBudget(context_tokens=2048, max_images=1),
                                 image_use=ImageUse(pixels=tiles(12, 378))),
    # InternVL2-2B (remote code): 256 tokens a 448-px tile, up to 12 tiles + thumbnail; its
    # InternLM2-1.8B has 32k positions, but the card says it was trained with an 8k context window.
    "internvl2": FamilyDefaults(InputBudget(context_tokens=8192), image_use=ImageUse(pixels=tiles(12, 448))),
}


def family_defaults(family: str | None) -> FamilyDefaults:
    """A family's defaults; an unknown family (a plugin, a remote endpoint) has no limits of ours."""
    return FAMILY_DEFAULTS.get(family or "", FamilyDefaults(InputBudget()))


def resolve_budget(family: str | None, override: BudgetOverride | None) -> InputBudget:
    base = family_defaults(family).budget
    if override is None:
        return base
    return base.model_copy(update=override.model_dump(exclude_none=True))


def resolve_capabilities(family: str | None, override: SupportsOverride | None) -> Capabilities:
    base = family_defaults(family).capabilities
    if override is None:
        return base
    return base.model_copy(update=override.model_dump(exclude_none=True))


class InputTooLarge(ValueError):
    """A request a model cannot take even after downsizing: the message names model, cost and limit."""


@dataclass(frozen=True)
class Applied:
    """The generation settings a model actually used, and what was changed from the request, in words."""

    max_new_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    decoding: str  # greedy | sampling
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"max_new_tokens": self.max_new_tokens, "temperature": self.temperature, "top_p": self.top_p,
                "seed": self.seed, "decoding": self.decoding, "notes": list(self.notes)}

    def with_note(self, note: str, **changes: Any) -> Applied:
        return replace(self, notes=(*self.notes, note), **changes)


def apply_capabilities(max_new_tokens: int, temperature: float, top_p: float, seed: int | None,
                       capabilities: Capabilities) -> Applied:
    """The settings a model with `capabilities` will really use for a request, each change said."""
    greedy = temperature <= 0
    notes: list[str] = []
    if not greedy and not capabilities.sampling:
        notes.append(f"greedy only: temperature {temperature:g} and top_p {top_p:g} ignored")
        temperature, top_p, greedy = 0.0, 1.0, True
    if greedy:
        # A greedy answer does not depend on a seed: recorded as none, so it is not taken for a sampled one.
        return Applied(max_new_tokens, 0.0, 1.0, None, "greedy", tuple(notes))
    if seed is not None and not capabilities.seed:
        notes.append(f"seed {seed} ignored: this model's sampling cannot be seeded")
        seed = None
    return Applied(max_new_tokens, temperature, top_p, seed, "sampling", tuple(notes))


def answer_room(context_tokens: int, max_new_tokens: int) -> int:
    """Tokens kept free for the answer when fitting images into the context."""
    return min(max_new_tokens, int(context_tokens * ANSWER_SHARE))


def too_large(model: str, needed: int, limit: int, what: str = "the prompt and images") -> InputTooLarge:
    return InputTooLarge(f"{model}: {what} need {needed:,} tokens, more than the {limit:,} its "
                         f"context leaves for them; use fewer or smaller images or a shorter prompt")


def fit_answer(applied: Applied, prompt_tokens: int, context_tokens: int | None, model: str) -> Applied:
    """Lower max_new_tokens (and say so) when the prompt leaves less room than asked for."""
    if context_tokens is None:
        return applied
    room = context_tokens - prompt_tokens
    if room < 1:
        raise too_large(model, prompt_tokens, context_tokens - 1)
    if applied.max_new_tokens <= room:
        return applied
    return applied.with_note(
        f"max_new_tokens lowered from {applied.max_new_tokens:,} to {room:,}: the prompt takes "
        f"{prompt_tokens:,} of the {context_tokens:,}-token context", max_new_tokens=room)
