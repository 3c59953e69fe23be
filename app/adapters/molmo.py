"""Molmo-7B-O/D-0924 through its remote code: `processor.process` + `model.generate_from_batch`.

`process` builds the whole prompt ("User: ... Assistant:") and the image crops for one image and
returns unbatched tensors; `generate_from_batch` returns token ids that include the prompt and
forwards extra keyword arguments (streamer, stopping criteria) to `generate`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from app.adapters import register
from app.adapters.base import (
    Adapter,
    Call,
    Finish,
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

STOP_STRING = "<|endoftext|>"


@register("molmo")
class MolmoAdapter(Adapter):
    """`AutoProcessor` + `AutoModelForCausalLM` (trust_remote_code); one image per prompt."""

    def __init__(self, spec: ModelSpec, device: str, model: Any, processor: Any) -> None:
        super().__init__(spec, device)
        self.model = model
        self.processor = processor

    @classmethod
    def load(cls, spec: ModelSpec, device: str, dtype: Any = None) -> MolmoAdapter:
        from transformers import AutoModelForCausalLM, AutoProcessor

        model, processor = load_pretrained(spec, device, dtype, AutoModelForCausalLM, AutoProcessor)
        return cls(spec, device, model, processor)

    def encode(self, image: Image.Image, prompt: str) -> dict[str, Any]:
        """`process` output with a batch dimension, on the model's device; pixels in the model's dtype."""
        inputs = self.processor.process(images=[image], text=prompt)
        batch = {key: value.to(self.device).unsqueeze(0) for key, value in inputs.items()}
        dtype = getattr(self.model, "dtype", None)
        if dtype is not None and "images" in batch:
            batch["images"] = batch["images"].to(dtype)
        return batch

    def _generate(self, call: Call, cancel: threading.Event) -> Iterator[Piece]:
        import torch
        from transformers import GenerationConfig

        images, prompt, params = call.images, call.prompt, call.params

        batch = self.encode(images[0], prompt)
        prompt_tokens = int(batch["input_ids"].shape[1])
        # use_cache: the remote code asserts it, and transformers 5 no longer defaults it to True.
        config = GenerationConfig(stop_strings=STOP_STRING, use_cache=True, **sampling_kwargs(params))
        tokenizer = self.processor.tokenizer
        seed_everything(params)

        def run(streamer: Any) -> Any:
            with torch.inference_mode():
                return self.model.generate_from_batch(
                    batch, config, tokenizer=tokenizer, streamer=streamer,
                    stopping_criteria=cancel_criteria(cancel),
                )

        call = StreamedCall(run, tokenizer, cancel)
        yield from call
        completion = int(call.result.shape[1]) - prompt_tokens
        reason = "length" if completion >= params.max_new_tokens else "stop"
        yield Finish(prompt_tokens=prompt_tokens, completion_tokens=completion, finish_reason=reason)
