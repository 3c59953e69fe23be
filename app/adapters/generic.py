"""The one route transformers gives most families: AutoProcessor + chat template + generate.

Before generating, `fit` runs the processor (cheap next to the model) and so knows exactly how
many tokens the prompt and its images take. When they would not leave room for the answer in the
model's context, dynamic-resolution families (Qwen2-VL, Qwen2.5-VL) get a smaller pixel budget
per image, the others get their images combined into one grid, and what cannot fit even then is
refused with a message naming the model, the tokens and the limit.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from app.adapters import register
from app.adapters.base import Adapter, StreamedCall, cancel_criteria, load_pretrained, sampling_kwargs, seed_everything
from app.core.budget import QWEN_PIXEL, answer_room, fit_answer, too_large
from app.core.generation import Call, Finish, Piece
from app.core.images import combined_into_grid, grid

if TYPE_CHECKING:
    from PIL import Image

    from app.core.catalog import ModelSpec

PIXEL_BUDGET_FAMILIES = ("qwen2_vl", "qwen2_5_vl")


@register("llava", "idefics3", "mllama", "qwen2_vl", "qwen2_5_vl", "internvl", "gemma3")
class GenericAdapter(Adapter):
    """`AutoModelForImageTextToText` with the processor's own chat template."""

    answers_text_alone = True

    def __init__(self, spec: ModelSpec, device: str, model: Any, processor: Any) -> None:
        super().__init__(spec, device)
        self.model = model
        self.processor = processor

    @classmethod
    def load(cls, spec: ModelSpec, device: str) -> GenericAdapter:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        model, processor = load_pretrained(spec, device, AutoModelForImageTextToText, AutoProcessor)
        return cls(spec, device, model, processor)

    def build_prompt(self, images: list[Image.Image], prompt: str) -> str:
        """The chat-template text with one image placeholder per image, then the question."""
        content = [{"type": "image"} for _ in images] + [{"type": "text", "text": prompt}]
        return self.processor.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )

    def image_kwargs(self, max_pixels: int | None = None) -> dict[str, Any]:
        """Per-call image-processor settings: the entry's pixel budget for dynamic-resolution families
        (never the checkpoint's own ceiling, which lets one photo take ~15,000 tokens)."""
        budget = self.spec.input_budget
        if self.spec.family not in PIXEL_BUDGET_FAMILIES or budget.max_pixels is None:
            return {}
        low = budget.min_pixels or 4 * QWEN_PIXEL
        high = min(max_pixels or budget.max_pixels, budget.max_pixels)
        return {"size": {"shortest_edge": min(low, high), "longest_edge": high}}

    def encode(self, images: list[Image.Image], prompt: str, image_kwargs: dict[str, Any] | None = None) -> Any:
        """Processor inputs on the model's device, pixels in the model's dtype."""
        text = self.build_prompt(images, prompt)
        kwargs = self.image_kwargs() if image_kwargs is None else image_kwargs
        inputs = self.processor(text=[text], images=[images] if images else None, return_tensors="pt", **kwargs)
        return inputs.to(self.model.device, dtype=self.model.dtype)

    @staticmethod
    def _tokens(inputs: Any) -> int:
        return int(inputs["input_ids"].shape[1])

    def fit(self, call: Call) -> Call:
        budget = self.spec.input_budget
        inputs = self.encode(call.images, call.prompt)
        context = budget.context_tokens
        if context is not None:
            limit = context - answer_room(context, call.applied.max_new_tokens)
            if self._tokens(inputs) > limit:
                inputs = self._shrink(call, inputs, limit)
            call.applied = fit_answer(call.applied, self._tokens(inputs), context, self.spec.id)
        call.options["inputs"] = inputs
        return call

    def _shrink(self, call: Call, inputs: Any, limit: int) -> Any:
        """Make the prompt fit `limit` tokens: fewer pixels an image, else one grid; else refuse."""
        tokens = self._tokens(inputs)
        if self.image_kwargs() and "image_grid_thw" in inputs:
            merge = int(getattr(self.processor.image_processor, "merge_size", 2)) ** 2
            image_tokens = int(inputs["image_grid_thw"].prod(dim=-1).sum()) // merge
            per_image = (limit - (tokens - image_tokens)) // len(call.images)
            if per_image >= 4:
                smaller = self.encode(call.images, call.prompt, self.image_kwargs(per_image * QWEN_PIXEL))
                if self._tokens(smaller) <= limit:
                    call.image_notes.append(
                        f"images downsized to at most {per_image:,} tokens each ({per_image * QWEN_PIXEL / 1e6:.2f} "
                        f"MP; they needed {image_tokens:,} in all) to leave room for the answer in the "
                        f"{self.spec.input_budget.context_tokens:,}-token context")
                    return smaller
        if len(call.images) > 1:
            combined = [grid(call.images)]
            gridded = self.encode(combined, call.prompt)
            if self._tokens(gridded) <= limit:
                call.image_notes.append(
                    f"{combined_into_grid(len(call.images))}: separately they needed {tokens:,} prompt tokens, "
                    f"more than the {limit:,} the {self.spec.input_budget.context_tokens:,}-token context "
                    f"leaves after room for the answer")
                call.images = combined
                return gridded
        raise too_large(self.spec.id, tokens, limit)

    def _generate(self, call: Call, cancel: threading.Event) -> Iterator[Piece]:
        import torch

        params = call.params
        inputs = call.options.get("inputs") or self.encode(call.images, call.prompt)
        prompt_tokens = self._tokens(inputs)
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        seed_everything(params)

        def run(streamer: Any) -> Any:
            with torch.inference_mode():
                return self.model.generate(
                    **inputs, **sampling_kwargs(params), streamer=streamer,
                    stopping_criteria=cancel_criteria(cancel),
                )

        streamed = StreamedCall(run, tokenizer, cancel)
        yield from streamed
        completion = int(streamed.result.shape[1]) - prompt_tokens
        reason = "length" if completion >= params.max_new_tokens else "stop"
        yield Finish(prompt_tokens=prompt_tokens, completion_tokens=completion, finish_reason=reason)
