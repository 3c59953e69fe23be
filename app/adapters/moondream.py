"""moondream through its remote code; one image per call.

Which API is used depends on what the loaded model offers:
- moondream2, 2025 revisions on: `model.query(image, question, stream=True, settings=...)` returns
  `{"answer": <generator of text>}` (`model.caption(image, length="normal")` when the prompt is
  empty). At the pinned 2025-01-09 (GitHub vikhyat/moondream 8ac77eb, `moondream/torch/moondream.py`)
  `settings` reads `max_tokens` only and decoding is argmax: temperature and top_p arrived with
  2025-04-14, so the catalogue declares that entry greedy-only and the record says so. That revision
  builds every layer in float16 whatever dtype is asked (and must not be cast afterwards), streams
  one token at a time, each decoded alone (`tokenizer.decode([id])`, which breaks a character whose
  bytes span two tokens: `ByteSafeDecoder` mends that), and overruns its 2,048-position cache with an
  IndexError rather than stopping (`fit` keeps the 730-token image prefix + question + answer inside).
- moondream2, 2024 revisions, and moondream1: `model.answer_question(model.encode_image(image),
  question, tokenizer, **kwargs)`, whose extra keyword arguments reach the language model's
  `generate` (streamer, stopping criteria, sampling). moondream1's `answer_question` fixes
  `max_new_tokens=256` itself, so there the limit is enforced by a stopping criterion instead.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from app.adapters import register
from app.adapters.base import (
    Adapter,
    StreamedCall,
    cancel_criteria,
    count_tokens,
    explained_load_errors,
    from_pretrained_kwargs,
    loader_kwargs,
    sampling_kwargs,
    seed_everything,
    torch_dtype,
)
from app.core.budget import fit_answer
from app.core.generation import Call, Finish, GenerationParams, Piece

if TYPE_CHECKING:
    from PIL import Image

    from app.core.catalog import ModelSpec

END_MARKER = "<END>"  # the old API stops on (the first token of) this text and strips it from its answer


def _accepts(function: Any, name: str) -> bool:
    try:
        return name in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False


def without_end_marker(pieces: Iterable[str], marker: str = END_MARKER) -> Iterator[str]:
    """Pass streamed text on, holding back a tail that may be the start of `marker`, which is dropped."""
    held = ""
    for piece in pieces:
        text = held + piece
        cut = text.rfind("<")
        if cut >= 0 and marker.startswith(text[cut:].rstrip()):
            text, held = text[:cut], text[cut:]
        else:
            held = ""
        if text:
            yield text
    if held and not marker.startswith(held.strip()):
        yield held


IMAGE_PREFIX_TOKENS = 730  # 729 image tokens + BOS: `EncodedImage.pos` on 2025 revisions
LEGACY_IMAGE_TOKENS = 729  # moondream1 and 2024 revisions: image embeddings before the prompt


class ByteSafeDecoder:
    """Stands in for the model's tokenizer during one generation that decodes each token alone.

    `decode([id])` collects the ids and decodes them together, so a character whose bytes span two
    tokens comes out whole; text is held back while it ends in an incomplete character. `flush`
    returns what is left. Everything else (`encode`, decoding several ids) goes to the real tokenizer.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.emitted = 0  # characters of the decoded ids already handed out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tokenizer, name)

    def decode(self, ids: Any, *args: Any, **kwargs: Any) -> str:
        ids = list(ids)
        if len(ids) != 1:
            return self.tokenizer.decode(ids, *args, **kwargs)
        self.ids.append(int(ids[0]))
        text = self.tokenizer.decode(self.ids, *args, **kwargs)
        if text.endswith("\ufffd"):
            return ""
        fresh, self.emitted = text[self.emitted:], len(text)
        return fresh

    def flush(self) -> str:
        text = self.tokenizer.decode(self.ids) if self.ids else ""
        fresh, self.emitted = text[self.emitted:], len(text)
        return fresh


def _token_limit(limit: int) -> Any:
    """A stopping criterion that ends generation after `limit` new tokens (it is called once a token)."""
    import torch
    from transformers import StoppingCriteria

    class _Limit(StoppingCriteria):
        def __init__(self) -> None:
            self.calls = 0

        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return torch.full((input_ids.shape[0],), self.calls >= limit, dtype=torch.bool,
                              device=input_ids.device)

    return _Limit()


@register("moondream")
class MoondreamAdapter(Adapter):
    """`AutoModelForCausalLM` (trust_remote_code) and `query`, or `encode_image` + `answer_question`."""

    def __init__(self, spec: ModelSpec, device: str, model: Any, tokenizer: Any) -> None:
        super().__init__(spec, device)
        self.model = model
        self.tokenizer = tokenizer

    @staticmethod
    def has_query_api(model: Any) -> bool:
        # Looked up on the class: on the 2025 revisions `query` is a property that sets up KV caches.
        return hasattr(type(model), "query")

    @classmethod
    def load(cls, spec: ModelSpec, device: str) -> MoondreamAdapter:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        kwargs = from_pretrained_kwargs(spec, torch_dtype(spec.dtype, device))
        tokenizer_kwargs = loader_kwargs(kwargs)
        with explained_load_errors(spec):
            model: Any = AutoModelForCausalLM.from_pretrained(spec.repo or spec.id, **kwargs)
            model = model.to(device).eval()
            if cls.has_query_api(model):
                tokenizer = cls._own_tokenizer(model)
                if tokenizer is None:
                    try:  # only used to count tokens
                        tokenizer = AutoTokenizer.from_pretrained(spec.repo, **tokenizer_kwargs)
                    except Exception:
                        tokenizer = None
            else:
                tokenizer = AutoTokenizer.from_pretrained(spec.repo, **tokenizer_kwargs)
        return cls(spec, device, model, tokenizer)

    @staticmethod
    def _own_tokenizer(model: Any) -> Any:
        """The `tokenizers.Tokenizer` the 2025 revisions keep at `model.model.tokenizer`."""
        for owner in (getattr(model, "model", None), model):
            tokenizer = getattr(owner, "tokenizer", None) if owner is not None else None
            if tokenizer is not None and hasattr(tokenizer, "encode"):
                return tokenizer
        return None

    def image_cost(self) -> int:
        return IMAGE_PREFIX_TOKENS if self.has_query_api(self.model) else LEGACY_IMAGE_TOKENS

    def fit(self, call: Call) -> Call:
        """Image prefix + question + answer must fit the 2,048 positions: lower max_new_tokens or refuse."""
        context = self.spec.input_budget.context_tokens
        if context is not None:
            # the remote code's own prompt: "\n\nQuestion:" + question + "\n\nAnswer:", after the image prefix
            needed = self.image_cost() + count_tokens(self.tokenizer, f"\n\nQuestion: {call.prompt}\n\nAnswer:") + 1
            call.applied = fit_answer(call.applied, needed, context, self.spec.id)
        return call

    def _generate(self, call: Call, cancel: threading.Event) -> Iterator[Piece]:
        images, prompt, params = call.images, call.prompt, call.params
        seed_everything(params)
        if self.has_query_api(self.model):
            pieces = self._query(images[0], prompt, params, cancel)
        else:
            pieces = self._answer_question(images[0], prompt, params, cancel)
        answer: list[str] = []
        for piece in pieces:
            answer.append(piece)
            yield piece
        # The APIs return text only: both counts come from encoding the text (image tokens not included).
        completion = count_tokens(self.tokenizer, "".join(answer))
        yield Finish(
            prompt_tokens=self.image_cost() + count_tokens(self.tokenizer, prompt),
            completion_tokens=completion,
            finish_reason="length" if completion >= params.max_new_tokens else "stop",
        )

    def _query(
        self, image: Image.Image, prompt: str, params: GenerationParams, cancel: threading.Event
    ) -> Iterator[str]:
        settings = {
            "max_tokens": params.max_new_tokens,
            "temperature": 0.0 if params.greedy else params.temperature,
            "top_p": params.top_p,
        }
        args: tuple[Any, ...]
        if prompt.strip():
            method, key, args = self.model.query, "answer", (image, prompt)
        else:
            method, key, args = self.model.caption, "caption", (image,)
        kwargs: dict[str, Any] = {"settings": settings} if _accepts(method, "settings") else {}
        if _accepts(method, "stream"):
            kwargs["stream"] = True
        owner: Any = getattr(self.model, "model", None)
        tokenizer = getattr(owner, "tokenizer", None)
        decoder = ByteSafeDecoder(tokenizer) if tokenizer is not None and hasattr(tokenizer, "decode") else None
        if decoder is not None:
            owner.tokenizer = decoder  # for this call only: the remote code decodes token by token
        try:
            result = method(*args, **kwargs)[key]
            if isinstance(result, str):
                yield result
                return
            # The generator computes lazily in this thread: not asking for the next piece stops the work.
            try:
                for text in result:
                    if cancel.is_set():
                        break
                    if text:
                        yield text
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
            rest = decoder.flush() if decoder is not None else ""
            if rest:
                yield rest
        finally:
            if decoder is not None:
                owner.tokenizer = tokenizer

    def _answer_question(
        self, image: Image.Image, prompt: str, params: GenerationParams, cancel: threading.Event
    ) -> Iterator[str]:
        import torch

        criteria = cancel_criteria(cancel)
        options = sampling_kwargs(params)
        if not _accepts(self.model.answer_question, "max_new_tokens"):  # moondream1: fixed at 256
            criteria.append(_token_limit(options.pop("max_new_tokens")))

        def run(streamer: Any) -> Any:
            with torch.inference_mode():
                embeds = self.model.encode_image(image)
                return self.model.answer_question(
                    embeds, prompt, self.tokenizer, streamer=streamer, stopping_criteria=criteria, **options
                )

        yield from without_end_marker(StreamedCall(run, self.tokenizer, cancel))
