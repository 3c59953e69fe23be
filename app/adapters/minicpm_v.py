"""MiniCPM-V through its remote code's `model.chat`.

MiniCPM-V-2_6 takes several images in one message and streams (`stream=True` returns a generator);
MiniCPM-V-2 takes one image and returns `(answer, context, generation_config)`. Which API a loaded
model offers is read from `chat`'s signature (only MiniCPM-V-2 has a `context` parameter).

Neither `chat` forwards a streamer or stopping criteria: it keeps only the keyword arguments that
are already keys of its own generation config. Both call their language model as
`self.llm.generate(...)`, so for one call we wrap that method to add them (see `_llm_extras`):
that is how a cancelled comparison stops the GPU work and how MiniCPM-V-2 streams at all.

What the real code (MiniCPM-V-2_6 `modeling_minicpmv.py`, Hub main as of 2024-08) requires:
- `chat` begins with `assert sampling or not stream`: streaming needs `sampling=True`. Greedy is
  therefore `sampling=True, do_sample=False` (`do_sample` is a key of the sampling config, so it is
  honoured; the config's repetition_penalty 1.05 stays). `sampling=False` would mean beam search.
- Its stream thread has no error path: a `generate` that raises never ends the streamer. Our
  wrapper ends it and hands the error to the consumer.
- `resampler.py` annotates `-> List[Tensor]` and gets `List` only through
  `from torch.nn.functional import *`, which stopped exporting it in torch 2.7. Loading puts
  `typing.List` back into `torch.nn.functional` first (see `torch_functional_list`), so the real
  code loads unedited.
- Each image costs about 70 tokens plus 67 per slice (up to `max_slice_nums`, 9); `max_inp_length`
  (8,192 on 2.6, 2,048 on 2.0) would cut the prompt silently, so `fit` checks the cost first.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.adapters import register
from app.adapters.base import Adapter, StreamedCall, cancel_criteria, count_tokens, load_pretrained, seed_everything
from app.core.budget import answer_room, fit_answer, too_large
from app.core.generation import Call, Finish, GenerationParams, Piece

if TYPE_CHECKING:
    from PIL import Image

    from app.core.catalog import ModelSpec


MAX_SLICES = 9  # the remote code's default max_slice_nums
TOKENS_UNSLICED = 70  # an image's own query tokens and markers (66 + <image></image> + its id)
TOKENS_PER_SLICE = 67  # 64 query tokens, <slice></slice>, a row separator at most


def torch_functional_list() -> None:
    """Give `torch.nn.functional` the `List` name that MiniCPM-V-2_6's resampler star-imports from it.

    torch < 2.7 imported `List` there from typing; from 2.7 it does not, and the remote code fails
    with `NameError: name 'List' is not defined` at import. `list[...]` means the same in an
    annotation; adding the name changes nothing else.
    """
    import torch.nn.functional as functional

    if not hasattr(functional, "List"):
        functional.List = list  # type: ignore[attr-defined]


def image_tokens(image: Image.Image, max_slices: int = MAX_SLICES) -> int:
    """An upper bound of the tokens one image costs MiniCPM-V (its slicing rule: ceil(area / 448²) slices)."""
    multiple = min(math.ceil(image.width * image.height / (448 * 448)), max_slices)
    slices = 0 if multiple <= 1 else min(multiple + 1, max_slices)
    return TOKENS_UNSLICED + TOKENS_PER_SLICE * slices


@dataclass
class _Failure:
    """An exception raised in the remote code's own generation thread, kept for the consumer."""

    error: BaseException | None = None


@contextlib.contextmanager
def _llm_extras(model: Any, failure: _Failure | None = None, **extra: Any) -> Iterator[bool]:
    """For the duration of the block, `model.llm.generate` also receives `extra` keyword arguments.

    A `generate` that raises ends its streamer (the remote stream thread never would) and leaves the
    error in `failure`. Yields False (and changes nothing) when the model has no `llm.generate`.
    """
    llm: Any = getattr(model, "llm", None)
    original = getattr(llm, "generate", None)
    if original is None:
        yield False
        return
    own = vars(llm).get("generate") if hasattr(llm, "__dict__") else None

    def generate(*args: Any, **kwargs: Any) -> Any:
        for key, value in extra.items():
            kwargs.setdefault(key, value)
        try:
            return original(*args, **kwargs)
        except BaseException as exc:
            if failure is None:
                raise
            failure.error = exc
            streamer = kwargs.get("streamer")
            if streamer is not None:
                streamer.end()
            return None

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
    def load(cls, spec: ModelSpec, device: str) -> MiniCPMVAdapter:
        from transformers import AutoModel, AutoTokenizer

        torch_functional_list()
        # The card loads 2.6 with attn_implementation="sdpa"; sdpa is the default where supported.
        model, tokenizer = load_pretrained(spec, device, AutoModel, AutoTokenizer)
        return cls(spec, device, model, tokenizer)

    def chat_kwargs(self, params: GenerationParams) -> dict[str, Any]:
        """Sampling settings in the form `chat` accepts.

        2.6 streams only with `sampling=True` (its first assert), so greedy there is `do_sample=False`
        inside the sampling config. 2.0 does not stream by itself: `sampling=False` with one beam
        (`num_beams` is a key of its beam config) lets the injected streamer work.
        """
        if params.greedy and self.single_image_api:
            return {"sampling": False, "num_beams": 1, "max_new_tokens": params.max_new_tokens}
        if params.greedy:
            return {"sampling": True, "do_sample": False, "max_new_tokens": params.max_new_tokens}
        return {
            "sampling": True,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_new_tokens": params.max_new_tokens,
        }

    def fit(self, call: Call) -> Call:
        """Check the images' token cost against the context; unsliced images (2.6) when it is too much."""
        context = self.spec.input_budget.context_tokens
        if context is None:
            return call
        limit = context - answer_room(context, call.applied.max_new_tokens)
        text = count_tokens(self.tokenizer, call.prompt) + 16  # the chat template's own tokens
        needed = text + sum(image_tokens(image) for image in call.images)
        if needed > limit and not self.single_image_api:
            unsliced = text + sum(image_tokens(image, max_slices=1) for image in call.images)
            if unsliced <= limit:
                call.options["max_slice_nums"] = 1
                call.image_notes.append(
                    f"images sent whole, without slices (about {TOKENS_UNSLICED} tokens each; sliced they "
                    f"needed about {needed:,}) to leave room for the answer in the {context:,}-token context")
                needed = unsliced
        if needed > limit:
            raise too_large(self.spec.id, needed, limit)
        call.applied = fit_answer(call.applied, needed, context, self.spec.id)
        return call

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
            yield from self._generate_v26(images, prompt, params, cancel, call.options)

    def _finish(self, prompt: str, answer: str, params: GenerationParams) -> Finish:
        # Counted by encoding the text: the image slices' tokens are not included in prompt_tokens.
        completion = count_tokens(self.tokenizer, answer)
        return Finish(
            prompt_tokens=count_tokens(self.tokenizer, prompt),
            completion_tokens=completion,
            finish_reason="length" if completion >= params.max_new_tokens else "stop",
        )

    def _generate_v26(
        self, images: list[Image.Image], prompt: str, params: GenerationParams, cancel: threading.Event,
        options: dict[str, Any],
    ) -> Iterator[Piece]:
        msgs = [{"role": "user", "content": [*images, prompt]}]
        pieces: list[str] = []
        finished = False
        failure = _Failure()
        slices = {"max_slice_nums": options["max_slice_nums"]} if "max_slice_nums" in options else {}
        with _llm_extras(self.model, failure, **self._llm_kwargs(params, cancel)):
            result = self.model.chat(
                image=None, msgs=msgs, tokenizer=self.tokenizer, stream=True, **slices, **self.chat_kwargs(params)
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
        if failure.error is not None:
            raise failure.error
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
