"""MiniCPM-V through its remote code's `model.chat`.

MiniCPM-V-2_6 takes several images in one message and streams (`stream=True` returns a generator);
MiniCPM-V-2 takes one image and returns `(answer, context, generation_config)`. Which API a loaded
model offers is read from `chat`'s signature (only MiniCPM-V-2 has a `context` parameter).

Neither `chat` forwards a streamer or stopping criteria: it keeps only the keyword arguments that
are already keys of its own generation config. Both call their language model as
`self.llm.generate(...)`, so for one call we wrap that method to add them (see `_llm_extras`):
that is how a cancelled comparison stops the GPU work and how MiniCPM-V-2 streams at all.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from app.adapters import register
from app.adapters.base import (
    Adapter,
    Call,
    Finish,
    GenerationParams,
    Piece,
    StreamedCall,
    cancel_criteria,
    count_tokens,
    load_pretrained,
    seed_everything,
)

if TYPE_CHECKING:
    from PIL import Image

    from app.catalog import ModelSpec


@contextlib.contextmanager
def _llm_extras(model: Any, **extra: Any) -> Iterator[bool]:
    """For the duration of the block, `model.llm.generate` also receives `extra` keyword arguments.

    Yields False (and changes nothing) when the model has no `llm.generate` to wrap.
    """
    llm = getattr(model, "llm", None)
    original = getattr(llm, "generate", None)
    if original is None:
        yield False
        return
    own = vars(llm).get("generate") if hasattr(llm, "__dict__") else None

    def generate(*args: Any, **kwargs: Any) -> Any:
        for key, value in extra.items():
            kwargs.setdefault(key, value)
        return original(*args, **kwargs)

    llm.generate = generate
    try:
        yield True
    finally:
        if own is not None:
            llm.generate = own
        else:
            del llm.generate


@register("minicpm_v")
class MiniCPMVAdapter(Adapter):
    """`AutoModel` + `AutoTokenizer` (trust_remote_code) and `model.chat`."""

    def __init__(self, spec: ModelSpec, device: str, model: Any, tokenizer: Any) -> None:
        super().__init__(spec, device)
        self.model = model
        self.tokenizer = tokenizer
        # MiniCPM-V-2's chat(image, msgs, context, tokenizer, ...) vs 2.6's chat(image, msgs, tokenizer, ...).
        self.single_image_api = "context" in inspect.signature(model.chat).parameters

    @classmethod
    def load(cls, spec: ModelSpec, device: str, dtype: Any = None) -> MiniCPMVAdapter:
        from transformers import AutoModel, AutoTokenizer

        # The card loads 2.6 with attn_implementation="sdpa"; sdpa is the default where supported.
        model, tokenizer = load_pretrained(spec, device, dtype, AutoModel, AutoTokenizer)
        return cls(spec, device, model, tokenizer)

    @staticmethod
    def chat_kwargs(params: GenerationParams) -> dict[str, Any]:
        """Sampling settings in the form `chat` accepts.

        `sampling=False` means beam search (num_beams=3) to the remote code; greedy here is one beam,
        which is also the only setting a streamer works with.
        """
        if params.greedy:
            return {"sampling": False, "num_beams": 1, "max_new_tokens": params.max_new_tokens}
        return {
            "sampling": True,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_new_tokens": params.max_new_tokens,
        }

    def _llm_kwargs(self, params: GenerationParams, cancel: threading.Event) -> dict[str, Any]:
        extra: dict[str, Any] = {"stopping_criteria": cancel_criteria(cancel)}
        if params.greedy:
            extra["do_sample"] = False  # not left to the checkpoint's generation_config
        return extra

    def _generate(self, call: Call, cancel: threading.Event) -> Iterator[Piece]:
        images, prompt, params = call.images, call.prompt, call.params
        seed_everything(params)
        if self.single_image_api:
            yield from self._generate_v2(images[0], prompt, params, cancel)
        else:
            yield from self._generate_v26(images, prompt, params, cancel)

    def _finish(self, prompt: str, answer: str, params: GenerationParams) -> Finish:
        # Counted by encoding the text: the image slices' tokens are not included in prompt_tokens.
        completion = count_tokens(self.tokenizer, answer)
        return Finish(
            prompt_tokens=count_tokens(self.tokenizer, prompt),
            completion_tokens=completion,
            finish_reason="length" if completion >= params.max_new_tokens else "stop",
        )

    def _generate_v26(
        self, images: list[Image.Image], prompt: str, params: GenerationParams, cancel: threading.Event
    ) -> Iterator[Piece]:
        msgs = [{"role": "user", "content": [*images, prompt]}]
        pieces: list[str] = []
        finished = False
        with _llm_extras(self.model, **self._llm_kwargs(params, cancel)):
            result = self.model.chat(
                image=None, msgs=msgs, tokenizer=self.tokenizer, stream=True, **self.chat_kwargs(params)
            )
            try:
                if isinstance(result, str):  # a revision that does not stream
                    pieces.append(result)
                    yield result
                else:
                    for text in result:
                        if cancel.is_set():
                            break
                        if text:
                            pieces.append(text)
                            yield text
                finished = True
            finally:
                if not finished:  # the consumer went away: stop the generation thread too
                    cancel.set()
        yield self._finish(prompt, "".join(pieces), params)

    def _generate_v2(
        self, image: Image.Image, prompt: str, params: GenerationParams, cancel: threading.Event
    ) -> Iterator[Piece]:
        msgs = [{"role": "user", "content": prompt}]
        extra = self._llm_kwargs(params, cancel)

        def chat(**more: Any) -> Any:
            with _llm_extras(self.model, **extra, **more):
                return self.model.chat(
                    image=image, msgs=msgs, context=None, tokenizer=self.tokenizer, **self.chat_kwargs(params)
                )

        if getattr(getattr(self.model, "llm", None), "generate", None) is None:
            answer, _context, _config = chat()
            yield answer
        else:
            call = StreamedCall(lambda streamer: chat(streamer=streamer), self.tokenizer, cancel)
            yield from call
            answer = call.result[0]
        yield self._finish(prompt, answer, params)
