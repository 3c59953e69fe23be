"""Molmo-7B-O/D-0924 through its remote code: `processor.process` + `model.generate_from_batch`.

`process` builds the whole prompt ("User: ... Assistant:") and the image crops for one image and
returns unbatched tensors; `generate_from_batch` returns token ids that include the prompt and
forwards extra keyword arguments (streamer, stopping criteria) to `generate`.

Checked against the real `preprocessing_molmo.py` / `modeling_molmo.py` (Molmo-7B-D-0924, public
copy reubzdubz/Molmo7B_D_NF4Quant): several images are accepted but their patch indices overlap
(the second overwrites the first), so one image (a grid) is sent; an image costs 160 +
(8·rows+4)(8·cols+5) tokens for up to 12 crops (at most 1,460); its RoPE table has 4,096 rows and a
longer sequence fails with an IndexError, so `fit` counts the processed prompt and keeps the answer
inside, with fewer crops (`max_crops=4`) when the prompt is long. `generate_from_batch` asserts
`use_cache` and `max_new_tokens`; no config sets an end-of-text id, so the stop string is needed.
Building the model turns off PyTorch's memory-efficient SDPA for the whole process (one reason each
model has its own worker).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from app.adapters import register
from app.adapters.base import Adapter, StreamedCall, cancel_criteria, load_pretrained, sampling_kwargs, seed_everything
from app.core.budget import answer_room, fit_answer, too_large
from app.core.generation import Call, Finish, Piece

if TYPE_CHECKING:
    from PIL import Image

    from app.core.catalog import ModelSpec

STOP_STRING = "<|endoftext|>"
FEWER_CROPS = 4  # crops when the default 12 would crowd out the answer


@register("molmo")
class MolmoAdapter(Adapter):
    """`AutoProcessor` + `AutoModelForCausalLM` (trust_remote_code); one image per prompt."""

    def __init__(self, spec: ModelSpec, device: str, model: Any, processor: Any) -> None:
        super().__init__(spec, device)
        self.model = model
        self.processor = processor

    @classmethod
    def load(cls, spec: ModelSpec, device: str) -> MolmoAdapter:
        from transformers import AutoModelForCausalLM, AutoProcessor

        model, processor = load_pretrained(spec, device, AutoModelForCausalLM, AutoProcessor)
        return cls(spec, device, model, processor)

    def encode(self, image: Image.Image, prompt: str, **options: Any) -> dict[str, Any]:
        """`process` output with a batch dimension, on the model's device; pixels in the model's dtype."""
        inputs = self.processor.process(images=[image], text=prompt, **options)
        batch = {key: value.to(self.device).unsqueeze(0) for key, value in inputs.items()}
        dtype = getattr(self.model, "dtype", None)
        if dtype is not None and "images" in batch:
            batch["images"] = batch["images"].to(dtype)
        return batch

    def fit(self, call: Call) -> Call:
        """The processed prompt's exact length against the 4,096 positions; fewer crops if it is long."""
        batch = self.encode(call.images[0], call.prompt)
        context = self.spec.input_budget.context_tokens
        if context is not None:
            limit = context - answer_room(context, call.applied.max_new_tokens)
            tokens = int(batch["input_ids"].shape[1])
            if tokens > limit:
                fewer = self.encode(call.images[0], call.prompt, max_crops=FEWER_CROPS)
                if int(fewer["input_ids"].shape[1]) > limit:
                    raise too_large(self.spec.id, tokens, limit)
                call.image_notes.append(
                    f"image cut into at most {FEWER_CROPS} crops instead of 12 (the prompt needed {tokens:,} "
                    f"tokens) to leave room for the answer in the {context:,}-token context")
                batch = fewer
            call.applied = fit_answer(call.applied, int(batch["input_ids"].shape[1]), context, self.spec.id)
        call.options["batch"] = batch
        return call

    def _generate(self, call: Call, cancel: threading.Event) -> Iterator[Piece]:
        import torch
        from transformers import GenerationConfig

        images, prompt, params = call.images, call.prompt, call.params

        batch = call.options.get("batch") or self.encode(images[0], prompt)
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

        streamed = StreamedCall(run, tokenizer, cancel)
        yield from streamed
        completion = int(streamed.result.shape[1]) - prompt_tokens
        reason = "length" if completion >= params.max_new_tokens else "stop"
        yield Finish(prompt_tokens=prompt_tokens, completion_tokens=completion, finish_reason=reason)
