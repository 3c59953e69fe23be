"""What every adapter offers: `load(spec, device)` and a streaming `generate`.

This module must stay importable under the pinned runtimes (transformers 4.36+), so it imports
torch and transformers only inside functions.
"""

from __future__ import annotations

import contextlib
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar

from app.adapters.threads import GENERATION, compute_threads
from app.core.budget import apply_capabilities
from app.core.generation import Call, Finish, GenerationParams, Piece
from app.core.images import ImageError, prepare_for_model

if TYPE_CHECKING:
    from PIL import Image

    from app.core.catalog import ModelSpec


class ModelLoadError(RuntimeError):
    """A model that cannot be loaded; the message says why in words a person can act on."""


class ParkError(RuntimeError):
    """A model whose weights cannot be parked in host memory (the pool unloads it instead)."""


class Adapter(ABC):
    """A loaded model of one family. Subclasses implement `load` and `_generate`, and `fit` where the
    family's images cost tokens that can overflow its context."""

    families: ClassVar[tuple[str, ...]] = ()
    answers_text_alone: ClassVar[bool] = False  # whether a prompt without images is answered (else a 400)

    def __init__(self, spec: ModelSpec, device: str) -> None:
        self.spec = spec
        self.device = device

    @classmethod
    @abstractmethod
    def load(cls, spec: ModelSpec, device: str) -> Adapter:
        """Load weights and processor for `spec` onto `device`."""

    # --- parking: an evicted model's weights kept warm in host memory -------------------------------

    def weight_bytes(self) -> int:
        """Bytes of the model's parameters and buffers (what parking keeps in host memory)."""
        model = getattr(self, "model", None)
        if model is None or not hasattr(model, "parameters"):
            return 0
        tensors = [*model.parameters(), *model.buffers()]
        return sum(t.numel() * t.element_size() for t in tensors)

    def park(self) -> int:
        """Move the weights to host memory — page-locked on a GPU, so that `unpark` is one fast copy — and
        return the bytes kept there. On a CPU they are in host memory already: nothing moves. Raises
        ParkError where the model cannot move as a whole (spread over devices by a device map, or
        quantised weights that live on their device)."""
        model = getattr(self, "model", None)
        if model is None or not hasattr(model, "to"):
            raise ParkError(f"{self.spec.id}: its adapter holds no single module to move")
        if self.device.startswith("cuda"):
            if len(set(getattr(model, "hf_device_map", {}).values())) > 1:
                raise ParkError(f"{self.spec.id} is spread over several devices by its device map")
            try:
                model.to("cpu")
                import torch

                with torch.no_grad():
                    for tensor in [*model.parameters(), *model.buffers()]:
                        tensor.data = tensor.data.pin_memory()
            except (ValueError, RuntimeError, TypeError) as exc:  # 4/8-bit weights refuse .to()
                model.to(self.device)
                raise ParkError(f"{self.spec.id} cannot leave its device: {exc}") from exc
        return self.weight_bytes()

    def unpark(self) -> None:
        """Bring parked weights back onto the device (a host-to-device copy; nothing on a CPU)."""
        if self.device.startswith("cuda"):
            import torch

            getattr(self, "model").to(self.device, non_blocking=True)  # noqa: B009  (subclasses hold it)
            torch.cuda.synchronize()

    def prepare(self, images: list[Image.Image], prompt: str, params: GenerationParams) -> Call:
        """The request as this model will run it: capabilities applied, images fitted to the budget.

        Raises `InputTooLarge` (before any generation) when the input cannot be made to fit.
        """
        budget = self.spec.input_budget
        applied = apply_capabilities(params.max_new_tokens, params.temperature, params.top_p, params.seed,
                                     self.spec.capabilities)
        if not images:  # a chat client's message of text alone
            if not self.answers_text_alone:
                raise ImageError(f"{self.spec.id} answers only about an image: add at least one image")
            return self.fit(Call([], prompt, applied, []))
        prepared = prepare_for_model(images, budget.max_images)
        call = Call(prepared.images, prompt, applied, [prepared.note] if prepared.note else [])
        return self.fit(call)

    def fit(self, call: Call) -> Call:
        """Fit the call into the model's context (downsize, combine, refuse); the default changes nothing."""
        return call

    def generate(
        self,
        images: list[Image.Image],
        prompt: str,
        params: GenerationParams,
        cancel: threading.Event | None = None,
    ) -> Iterator[Piece]:
        """Yield text pieces, then one `Finish` saying what was applied. Single-image models get a grid."""
        yield from self.run(self.prepare(images, prompt, params), cancel)

    def run(self, call: Call, cancel: threading.Event | None = None) -> Iterator[Piece]:
        """Generate a prepared call: text pieces, then one `Finish` with the image note and applied settings."""
        cancel = cancel or threading.Event()
        finish: Finish | None = None
        for piece in self._generate(call, cancel):
            if isinstance(piece, Finish):
                finish = piece
            else:
                yield piece
        if finish is None:
            raise RuntimeError(f"{type(self).__name__} ended without token counts")
        if cancel.is_set():
            finish = replace(finish, finish_reason="cancelled")
        yield replace(finish, image_note=call.image_note, applied=call.applied.as_dict())

    @abstractmethod
    def _generate(self, call: Call, cancel: threading.Event) -> Iterator[Piece]:
        """Family-specific generation of a prepared call."""


def torch_dtype(name: str | Any, device: str) -> Any:
    """Map a catalogue dtype name to a torch dtype; the CPU computes half precision poorly, so float32."""
    import torch

    if not isinstance(name, str):
        return name
    if name == "auto":
        return "auto"
    if device == "cpu" and name in ("bfloat16", "float16"):
        return torch.float32
    return getattr(torch, name)


def seed_everything(params: GenerationParams) -> None:
    """Same seed, same text: seed torch's generators before sampling."""
    import torch

    if params.seed is not None:
        torch.manual_seed(params.seed)
        if torch.cuda.is_available():
            torch.cuda.manual_seed_all(params.seed)


def sampling_kwargs(params: GenerationParams) -> dict[str, Any]:
    """`generate` keyword arguments for the sampling settings."""
    if params.greedy:
        return {"do_sample": False, "max_new_tokens": params.max_new_tokens}
    return {
        "do_sample": True,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "max_new_tokens": params.max_new_tokens,
    }


def cancel_criteria(cancel: threading.Event) -> Any:
    """A transformers StoppingCriteriaList that stops generation once `cancel` is set."""
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _Cancelled(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            import torch

            return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([_Cancelled()])


def token_streamer(tokenizer: Any, timeout_s: float | None = None) -> Any:
    """A `TextIteratorStreamer` that hands on text after every token, not only at word ends.

    The stock streamer waits for a space or newline; answers (and gibberish from random weights)
    would then arrive in lumps. Text is held back only while it ends in an incomplete character.
    """
    from transformers import TextIteratorStreamer

    class TokenStreamer(TextIteratorStreamer):
        # Incremental detokenisation: decode a short window of recent tokens each step, so the
        # cost per token stays flat however long the answer grows.
        prefix_offset = 0
        read_offset = 0

        def put(self, value: Any) -> None:
            if len(value.shape) > 1:
                value = value[0]
            if self.skip_prompt and self.next_tokens_are_prompt:
                self.next_tokens_are_prompt = False
                return
            self.token_cache.extend(value.tolist())
            self._emit(final=False)

        def _emit(self, final: bool) -> None:
            tokens = self.token_cache
            before = str(self.tokenizer.decode(tokens[self.prefix_offset:self.read_offset], **self.decode_kwargs))
            text = str(self.tokenizer.decode(tokens[self.prefix_offset:], **self.decode_kwargs))
            if text.endswith("\ufffd") and not final:
                return  # an incomplete character: wait for the next token
            fresh = text[len(before):]
            self.prefix_offset, self.read_offset = self.read_offset, len(tokens)
            if fresh:
                self.on_finalized_text(fresh)

        def end(self) -> None:
            if self.read_offset < len(self.token_cache):
                self._emit(final=True)
            self.on_finalized_text("", stream_end=True)

    return TokenStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=timeout_s)


class StreamedCall:
    """Iterate the text a blocking `generate`-like call streams, then read its return value.

    `StreamedCall(lambda streamer: model.generate(..., streamer=streamer), tokenizer, cancel)`
    runs the call on the process's generation thread; iterating yields decoded pieces; `.result` holds what it returned.
    Errors raised in the thread are re-raised in the caller.
    """

    FLUSH_INTERVAL_S = 0.02

    def __init__(self, run: Callable[[Any], Any], tokenizer: Any, cancel: threading.Event,
                 timeout_s: float | None = None) -> None:
        self._streamer = token_streamer(tokenizer, timeout_s)
        self._run = run
        self._cancel = cancel
        self.result: Any = None
        self._error: BaseException | None = None
        self._ended = threading.Event()

    def _target(self) -> None:
        try:
            compute_threads.apply()
            self.result = self._run(self._streamer)
        except BaseException as exc:  # re-raised in the consuming thread
            self._error = exc
        finally:
            self._streamer.end()  # a second end() only repeats the stop signal
            self._ended.set()

    def __iter__(self) -> Iterator[str]:
        GENERATION.submit(self._target)  # the process's one generation thread (see app.adapters.threads)
        finished = False
        try:
            yield from self._pieces()
            finished = True
        finally:
            if not finished:  # the consumer stopped early: stop generating too
                self._cancel.set()
            self._ended.wait()
        if self._error is not None:
            raise self._error

    def _pieces(self) -> Iterator[str]:
        """The first text at once, then what gathered every `FLUSH_INTERVAL_S`.

        Waking the consumer for every token costs the generating thread the GIL each time (about
        a fifth of the time per token on a CPU); a few tokens a piece keeps streaming smooth.
        """
        queue, stop = self._streamer.text_queue, self._streamer.stop_signal
        first = True
        while True:
            item = queue.get(timeout=self._streamer.timeout)
            if item is stop:
                return
            parts, ended = [item], False
            while not queue.empty():
                item = queue.get_nowait()
                if item is stop:
                    ended = True
                    break
                parts.append(item)
            text = "".join(parts)
            if text:
                yield text
            if ended:
                return
            if not first:
                self._ended.wait(self.FLUSH_INTERVAL_S)
            first = False


def explain_load_error(exc: BaseException, spec: ModelSpec) -> ModelLoadError:
    """Turn a loading exception into a message that says why and what to do."""
    name = type(exc).__name__
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else name
    repo = spec.repo or spec.id
    if name == "GatedRepoError" or "gated repo" in text.lower() or "403" in text:
        why = f"{repo} is gated: accept its licence on the Hub and set HF_TOKEN"
    elif name in ("RepositoryNotFoundError", "RevisionNotFoundError"):
        why = f"{repo}@{spec.revision} was not found on the Hub (or is private without a token)"
    elif name == "LocalEntryNotFoundError" or "offline" in text.lower() or "couldn't connect" in text.lower():
        why = f"{repo} is not in the local Hugging Face cache and the Hub cannot be reached"
    elif name == "OutOfMemoryError" or "out of memory" in text.lower():
        why = f"out of memory while loading {repo}: {text}"
    elif spec.trust_remote_code and name in ("ImportError", "AttributeError", "TypeError", "ModuleNotFoundError"):
        why = f"the remote code of {repo} failed ({name}: {text}); it needs runtime '{spec.runtime}'"
    else:
        why = f"{name}: {text}"
    return ModelLoadError(why)


def from_pretrained_kwargs(spec: ModelSpec, dtype: Any) -> dict[str, Any]:
    """Common `from_pretrained` arguments; the dtype keyword was renamed in transformers 4.56."""
    import transformers

    major, minor = (int(part) for part in transformers.__version__.split(".")[:2])
    dtype_key = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
    kwargs: dict[str, Any] = {dtype_key: dtype, "trust_remote_code": spec.trust_remote_code}
    if spec.revision and spec.revision != "main" and not spec.tiny:
        kwargs["revision"] = spec.revision
    return kwargs


@contextlib.contextmanager
def explained_load_errors(spec: ModelSpec) -> Iterator[None]:
    """Any failure while loading becomes a ModelLoadError that says why (see `explain_load_error`)."""
    try:
        yield
    except Exception as exc:
        raise explain_load_error(exc, spec) from exc


def load_pretrained(spec: ModelSpec, device: str, model_class: Any, helper_class: Any,
                    **helper_options: Any) -> tuple[Any, Any]:
    """The model (on `device`, in eval mode, in the entry's dtype) and its processor or tokenizer."""
    kwargs = from_pretrained_kwargs(spec, torch_dtype(spec.dtype, device))
    with explained_load_errors(spec):
        helper = helper_class.from_pretrained(spec.repo, **helper_options, **loader_kwargs(kwargs))
        model = model_class.from_pretrained(spec.repo, **kwargs).to(device).eval()
    return model, helper


def loader_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The `from_pretrained` arguments a tokenizer or processor takes (no dtype)."""
    return {k: v for k, v in kwargs.items() if k in ("revision", "trust_remote_code")}


def count_tokens(tokenizer: Any, text: str) -> int:
    """Tokens in `text` for APIs that return text, never ids (a transformers or `tokenizers` tokenizer;
    without one, words)."""
    if not text:
        return 0
    if tokenizer is None:
        return len(text.split())
    ids = tokenizer.encode(text, add_special_tokens=False)
    return len(getattr(ids, "ids", ids))
