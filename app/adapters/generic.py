"""The one route transformers gives most families: AutoProcessor + chat template + generate."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from app.adapters import register
from app.adapters.base import (
    Adapter,
    Finish,
    GenerationParams,
    Piece,
    StreamedCall,
    cancel_criteria,
    load_pretrained,
    sampling_kwargs,
    seed_everything,
)

if TYPE_CHECKING:
    from PIL import Image

    from app.catalog import ModelSpec


@register("llava", "idefics3", "mllama", "qwen2_vl", "qwen2_5_vl", "internvl", "gemma3")
class GenericAdapter(Adapter):
    """`AutoModelForImageTextToText` with the processor's own chat template."""

    def __init__(self, spec: ModelSpec, device: str, model: Any, processor: Any) -> None:
        super().__init__(spec, device)
        self.model = model
        self.processor = processor

    @classmethod
    def load(cls, spec: ModelSpec, device: str, dtype: Any = None) -> GenericAdapter:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        model, processor = load_pretrained(spec, device, dtype, AutoModelForImageTextToText, AutoProcessor)
        return cls(spec, device, model, processor)

    def build_prompt(self, images: list[Image.Image], prompt: str) -> str:
        """The chat-template text with one image placeholder per image, then the question."""
        content = [{"type": "image"} for _ in images] + [{"type": "text", "text": prompt}]
        return self.processor.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )

    def encode(self, images: list[Image.Image], prompt: str) -> Any:
        """Processor inputs on the model's device, pixels in the model's dtype."""
        text = self.build_prompt(images, prompt)
        inputs = self.processor(text=[text], images=[images], return_tensors="pt")
        return inputs.to(self.model.device, dtype=self.model.dtype)

    def _generate(
        self, images: list[Image.Image], prompt: str, params: GenerationParams, cancel: threading.Event
    ) -> Iterator[Piece]:
        import torch

        inputs = self.encode(images, prompt)
        prompt_tokens = int(inputs["input_ids"].shape[1])
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        seed_everything(params)

        def run(streamer: Any) -> Any:
            with torch.inference_mode():
                return self.model.generate(
                    **inputs, **sampling_kwargs(params), streamer=streamer,
                    stopping_criteria=cancel_criteria(cancel),
                )

        call = StreamedCall(run, tokenizer, cancel)
        yield from call
        completion = int(call.result.shape[1]) - prompt_tokens
        reason = "length" if completion >= params.max_new_tokens else "stop"
        yield Finish(prompt_tokens=prompt_tokens, completion_tokens=completion, finish_reason=reason)
