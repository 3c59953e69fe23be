"""InternVL2 (OpenGVLab/InternVL2-2B and kin) through its remote code's `model.chat`.

The remote code takes ready pixel values, so the model card's preprocessing is written here:
each image is cut into 448-pixel tiles on the grid (columns × rows ≤ max_num) whose aspect ratio is
closest to the image's, plus a 448-pixel thumbnail of the whole image when there is more than one
tile, each normalised with the ImageNet mean and standard deviation. Several images are
concatenated with `num_patches_list` saying how many tiles belong to each, and the prompt names
them "Image-1: <image>\\nImage-2: <image>\\n...". `chat` passes its generation config (streamer and
stopping criteria included) on to `generate`, so it streams when run in a thread.

Checked against the real `modeling_internvl_chat.py` (public copy zylluan/ft-uav_internvl2-2B): `chat`
asserts `len(pixel_values) == sum(num_patches_list)`, sets `eos_token_id` to `<|im_end|>` itself,
and rejects `use_cache` in the config (a duplicate keyword). Each tile costs 256 tokens; the card
trained the model with an 8k context, so `fit` gives images fewer tiles when they would not leave
room for the answer, and refuses when one tile each is still too much.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from app.adapters import register
from app.adapters.base import (
    Adapter,
    StreamedCall,
    cancel_criteria,
    count_tokens,
    load_pretrained,
    sampling_kwargs,
    seed_everything,
)
from app.core.budget import answer_room, fit_answer, too_large
from app.core.generation import Call, Finish, Piece

if TYPE_CHECKING:
    from PIL import Image

    from app.core.catalog import ModelSpec

IMAGE_SIZE = 448
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MAX_TILES = 12  # per image, as in the model card
TILE_BUDGET = 24  # tiles for all images together once there are more than two
NUM_IMAGE_TOKEN = 256  # tokens per tile for InternVL2 (model.num_image_token when the model says)
TEMPLATE_TOKENS = 45  # internlm2-chat: system message, turn markers, BOS (measured on the real tokenizer)


def closest_grid(width: int, height: int, max_num: int = MAX_TILES, min_num: int = 1,
                 image_size: int = IMAGE_SIZE) -> tuple[int, int]:
    """(columns, rows) with min_num ≤ columns·rows ≤ max_num whose aspect ratio is closest to the image's.

    On a tie the larger grid wins when the image has more than half its pixels (the card's rule).
    """
    aspect = width / height
    grids = sorted(
        {(i, j) for n in range(min_num, max_num + 1) for i in range(1, n + 1) for j in range(1, n + 1)
         if min_num <= i * j <= max_num},
        key=lambda grid: grid[0] * grid[1],
    )
    best, best_diff = (1, 1), float("inf")
    for columns, rows in grids:
        diff = abs(aspect - columns / rows)
        if diff < best_diff:
            best, best_diff = (columns, rows), diff
        elif diff == best_diff and width * height > 0.5 * image_size * image_size * columns * rows:
            best = (columns, rows)
    return best


def tile_image(image: Image.Image, max_num: int = MAX_TILES, image_size: int = IMAGE_SIZE,
               use_thumbnail: bool = True) -> list[Image.Image]:
    """The image resized to the closest grid and cut into square tiles, then the thumbnail if several."""
    from PIL import Image as PILImage

    columns, rows = closest_grid(image.width, image.height, max_num=max_num, image_size=image_size)
    resized = image.resize((columns * image_size, rows * image_size), PILImage.Resampling.BICUBIC)
    tiles = [
        resized.crop((c * image_size, r * image_size, (c + 1) * image_size, (r + 1) * image_size))
        for r in range(rows)
        for c in range(columns)
    ]
    if use_thumbnail and len(tiles) != 1:
        tiles.append(image.resize((image_size, image_size), PILImage.Resampling.BICUBIC))
    return tiles


def pixel_values(image: Image.Image, max_num: int = MAX_TILES, image_size: int = IMAGE_SIZE) -> Any:
    """Tensor (tiles, 3, image_size, image_size), ImageNet-normalised, float32."""
    import numpy as np
    import torch

    tiles = tile_image(image.convert("RGB"), max_num=max_num, image_size=image_size)
    array = np.stack([np.asarray(tile, dtype=np.float32) for tile in tiles]) / 255.0
    values = torch.from_numpy(array).permute(0, 3, 1, 2)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((values - mean) / std).contiguous()


def tiles_per_image(count: int) -> int:
    """The card's 12 tiles per image for one or two images, fewer each beyond that."""
    return max(1, min(MAX_TILES, TILE_BUDGET // count))


def tile_count(image: Image.Image, max_num: int) -> int:
    """How many tiles `tile_image` makes of `image`: the grid, plus a thumbnail when it has several cells."""
    columns, rows = closest_grid(image.width, image.height, max_num=max_num)
    return columns * rows + (1 if columns * rows > 1 else 0)


def build_question(prompt: str, count: int) -> str:
    """One `<image>` placeholder per image before the question; numbered when there are several."""
    if count == 1:
        return f"<image>\n{prompt}"
    return "".join(f"Image-{i}: <image>\n" for i in range(1, count + 1)) + prompt


@register("internvl2")
class InternVL2Adapter(Adapter):
    """`AutoModel` (trust_remote_code) + slow `AutoTokenizer`, and `model.chat`."""

    def __init__(self, spec: ModelSpec, device: str, model: Any, tokenizer: Any) -> None:
        super().__init__(spec, device)
        self.model = model
        self.tokenizer = tokenizer

    @classmethod
    def load(cls, spec: ModelSpec, device: str) -> InternVL2Adapter:
        from transformers import AutoModel, AutoTokenizer

        model, tokenizer = load_pretrained(spec, device, AutoModel, AutoTokenizer, use_fast=False)
        return cls(spec, device, model, tokenizer)

    def tokens_per_tile(self) -> int:
        return int(getattr(self.model, "num_image_token", NUM_IMAGE_TOKEN))

    def prompt_tokens(self, question: str, tiles: int, images: int) -> int:
        """Context the prompt takes: text, template, 256 a tile, <img></img> an image."""
        return (count_tokens(self.tokenizer, question.replace("<image>", "")) + TEMPLATE_TOKENS
                + self.tokens_per_tile() * tiles + 2 * images)

    def fit(self, call: Call) -> Call:
        """Fewer tiles an image when they would crowd out the answer; refuse when one each is too many."""
        context = self.spec.input_budget.context_tokens
        max_num = tiles_per_image(len(call.images))
        call.options["max_num"] = max_num
        if context is None:
            return call
        limit = context - answer_room(context, call.applied.max_new_tokens)
        question = build_question(call.prompt, len(call.images))
        wanted = self.prompt_tokens(question, sum(tile_count(i, max_num) for i in call.images), len(call.images))
        needed = wanted
        for fewer in range(max_num, 0, -1):
            needed = self.prompt_tokens(question, sum(tile_count(i, fewer) for i in call.images), len(call.images))
            if needed <= limit:
                if fewer < max_num:
                    call.options["max_num"] = fewer
                    call.image_notes.append(
                        f"images cut into at most {fewer} tile{'s' if fewer > 1 else ''} each instead of "
                        f"{max_num} (they needed {wanted:,} tokens) to leave room for the answer in the "
                        f"{context:,}-token context")
                break
        else:
            raise too_large(self.spec.id, needed, limit)
        call.applied = fit_answer(call.applied, needed, context, self.spec.id)
        return call

    def encode(self, images: list[Image.Image], max_num: int | None = None) -> tuple[Any, list[int]]:
        """All images' tiles in one tensor on the model's device and dtype, and the tiles per image."""
        import torch

        max_num = max_num or tiles_per_image(len(images))
        per_image = [pixel_values(image, max_num=max_num) for image in images]
        values = torch.cat(per_image).to(self.device, dtype=getattr(self.model, "dtype", torch.float32))
        return values, [int(part.shape[0]) for part in per_image]

    def _generate(self, call: Call, cancel: threading.Event) -> Iterator[Piece]:
        import torch

        images, prompt, params = call.images, call.prompt, call.params

        values, num_patches_list = self.encode(images, call.options.get("max_num"))
        question = build_question(prompt, len(images))
        separator = getattr(getattr(self.model, "conv_template", None), "sep", "") or ""
        seed_everything(params)

        def run(streamer: Any) -> Any:
            config = {**sampling_kwargs(params), "streamer": streamer,
                      "stopping_criteria": cancel_criteria(cancel)}
            with torch.inference_mode():
                return self.model.chat(self.tokenizer, values, question, config,
                                       num_patches_list=num_patches_list)

        pieces: list[str] = []
        for text in StreamedCall(run, self.tokenizer, cancel):
            if separator.strip():  # the card's loop stops at the template's separator
                text = text.replace(separator, "")
            if text:
                pieces.append(text)
                yield text
        # chat returns text only: counted with the tokenizer, plus the template's and the tiles' tokens.
        prompt_tokens = self.prompt_tokens(question, sum(num_patches_list), len(images))
        completion = count_tokens(self.tokenizer, "".join(pieces))
        reason = "length" if completion >= params.max_new_tokens else "stop"
        yield Finish(prompt_tokens=prompt_tokens, completion_tokens=completion, finish_reason=reason)
