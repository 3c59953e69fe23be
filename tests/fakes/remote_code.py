"""Fakes of the remote-code model APIs: MiniCPM-V-2_6 and -2, Molmo, moondream2 / moondream1, InternVL2.

The real models run code that comes from the Hub with their weights (trust_remote_code), and
neither can be downloaded here. These classes stand in for that remote code: the same method
names, signatures and return shapes as the model cards and the published modelling files
document, and the same reactions to misuse where the adapters depend on them (beam search with a
streamer, a batch without its batch dimension, pixels in the wrong dtype, a `max_new_tokens` that
moondream1 already sets). Their answers echo what they were given (how many images, their sizes
and mean colours, the question, the sampling settings) and every call is recorded.

They test the contract between an adapter and an API, not results: a fake's "answer" is a
description of its inputs, never a model's output.
"""

from __future__ import annotations

import math
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from PIL import Image, ImageStat

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def colour(image: Image.Image) -> tuple[int, int, int]:
    """Mean colour of an image, rounded."""
    r, g, b = (round(value) for value in ImageStat.Stat(image.convert("RGB")).mean)
    return r, g, b


def describe(image: Image.Image) -> str:
    r, g, b = colour(image)
    return f"{image.width}x{image.height}@rgb({r},{g},{b})"


def filler(count: int) -> str:
    """Extra words that make an answer long (for tests that cancel a stream part-way)."""
    return "".join(f" w{index}" for index in range(count))


class FakeTokenizer:
    """A word-level tokenizer: each whitespace-led word is one token, so counts are easy to check.

    Enough of a transformers tokenizer for the adapters and for `TextIteratorStreamer`.
    """

    special = {0: "<|endoftext|>", 1: "<s>", 2: "<im_patch>"}
    eos_token_id, bos_token_id, image_token_id = 0, 1, 2
    eos_token, bos_token = "<|endoftext|>", "<s>"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._words: dict[int, str] = dict(self.special)
        self._ids: dict[str, int] = {word: index for index, word in self._words.items()}

    def token_id(self, word: str) -> int:
        with self._lock:
            if word not in self._ids:
                self._ids[word] = len(self._words)
                self._words[self._ids[word]] = word
            return self._ids[word]

    def encode(self, text: str, add_special_tokens: bool = True, **kwargs: Any) -> list[int]:
        return [self.token_id(word) for word in re.findall(r"\s*\S+", text)]

    def decode(self, ids: Any, skip_special_tokens: bool = False, **kwargs: Any) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        if isinstance(ids, int):
            ids = [ids]
        return "".join(self._words[i] for i in ids if not (skip_special_tokens and i in self.special))

    def batch_decode(self, sequences: Any, **kwargs: Any) -> list[str]:
        return [self.decode(sequence, **kwargs) for sequence in sequences]


class FakeTokenizersTokenizer:
    """Like a `tokenizers.Tokenizer` (what moondream2's 2025 code keeps): `encode(...).ids`."""

    def __init__(self, words: FakeTokenizer | None = None) -> None:
        self.words = words or FakeTokenizer()

    def encode(self, sequence: str, pair: Any = None, is_pretokenized: bool = False,
               add_special_tokens: bool = True) -> Any:
        return SimpleNamespace(ids=self.words.encode(sequence))

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self.words.decode(ids, skip_special_tokens=skip_special_tokens)


@dataclass
class GenerateRecord:
    """What one (fake) `generate` did."""

    kwargs: dict[str, Any]
    new_tokens: int = 0
    reached_end: bool = False
    stopped_by_criteria: bool = False


def fake_generate(tokenizer: FakeTokenizer, text: str, *, max_new_tokens: int, prompt_ids: Any = (),
                  streamer: Any = None, stopping_criteria: Any = None, delay_s: float = 0.0,
                  kwargs: dict[str, Any] | None = None) -> tuple[torch.Tensor, GenerateRecord]:
    """What transformers' `generate` does with a streamer and stopping criteria, "generating" `text`.

    The streamer gets the prompt first, then each new token; the stopping criteria are asked after
    each token; generation ends at end-of-text, at `max_new_tokens`, or when a criterion says so.
    Returns the prompt and new ids, shape (1, length), as decoder-only `generate` does.
    """
    record = GenerateRecord(kwargs=dict(kwargs or {}))
    ids = list(prompt_ids)
    if streamer is not None:
        streamer.put(torch.tensor([ids], dtype=torch.long))
    for token in [*tokenizer.encode(text), tokenizer.eos_token_id]:
        if record.new_tokens >= max_new_tokens:
            break
        ids.append(token)
        record.new_tokens += 1
        if streamer is not None:
            streamer.put(torch.tensor([token], dtype=torch.long))
        if token == tokenizer.eos_token_id:
            record.reached_end = True
            break
        if stopping_criteria is not None:
            done = stopping_criteria(torch.tensor([ids], dtype=torch.long), None)
            if bool(done.any() if isinstance(done, torch.Tensor) else done):
                record.stopped_by_criteria = True
                break
        if delay_s:
            time.sleep(delay_s)
    if streamer is not None:
        streamer.end()
    return torch.tensor([ids], dtype=torch.long), record


class FakeModel:
    """What adapters use of a loaded `PreTrainedModel`: `.to`, `.eval`, `.dtype`, `.device`.

    `calls` records each API call's arguments, `records` each generate, `answers` each planned answer;
    `padding_words` lengthens answers and `delay_s` slows each token (for cancellation tests).
    """

    def __init__(self, tokenizer: FakeTokenizer | None = None) -> None:
        self.tokenizer = tokenizer or FakeTokenizer()
        self.dtype = torch.float32
        self.device = torch.device("cpu")
        self.calls: list[dict[str, Any]] = []
        self.records: list[GenerateRecord] = []
        self.answers: list[str] = []
        self.padding_words = 0
        self.delay_s = 0.0
        self.moved_to: Any = None
        self.in_eval = False

    def to(self, *args: Any, **kwargs: Any) -> FakeModel:
        self.moved_to = args[0] if args else kwargs
        return self

    def eval(self) -> FakeModel:
        self.in_eval = True
        return self

    def plan(self, answer: str) -> str:
        answer += filler(self.padding_words)
        self.answers.append(answer)
        return answer


# --- MiniCPM-V ------------------------------------------------------------------------------------


@dataclass
class FakeEmbeds:
    """Stands in for the `inputs_embeds` MiniCPM-V builds; carries the text the fake LLM will produce."""

    text: str


class FakeMiniCPMLLM:
    """MiniCPM-V's `model.llm`: a causal LM that `chat` calls as `self.llm.generate(inputs_embeds=...)`."""

    def __init__(self, owner: FakeModel) -> None:
        self.owner = owner
        self.generate_kwargs: list[dict[str, Any]] = []
        self.fail_with: BaseException | None = None  # e.g. torch.OutOfMemoryError, raised mid-generation

    def generate(self, inputs_embeds: FakeEmbeds, max_new_tokens: int = 20, streamer: Any = None,
                 stopping_criteria: Any = None, num_beams: int = 1, **kwargs: Any) -> torch.Tensor:
        if self.fail_with is not None:
            raise self.fail_with
        if streamer is not None and num_beams > 1:
            raise ValueError("`streamer` cannot be used with beam search (yet!). Make sure that `num_beams` "
                             "is set to 1.")
        seen = dict(kwargs, num_beams=num_beams, max_new_tokens=max_new_tokens,
                    stopping_criteria=stopping_criteria, streamer=streamer)
        self.generate_kwargs.append(seen)
        ids, record = fake_generate(self.owner.tokenizer, inputs_embeds.text, max_new_tokens=max_new_tokens,
                                    streamer=streamer, stopping_criteria=stopping_criteria,
                                    delay_s=self.owner.delay_s, kwargs=seen)
        self.owner.records.append(record)
        return ids  # with inputs_embeds only, decoder-only generate returns the new tokens alone


def _minicpm_generation_config(sampling: bool, kwargs: dict[str, Any]) -> dict[str, Any]:
    """As the remote code builds it: only keys already in its config are taken from `kwargs`."""
    if sampling:
        config: dict[str, Any] = {"top_p": 0.8, "top_k": 100, "temperature": 0.7, "do_sample": True,
                                  "repetition_penalty": 1.05}
    else:
        config = {"num_beams": 3, "repetition_penalty": 1.2}
    config.update((key, kwargs[key]) for key in config.keys() & kwargs.keys())
    return config


def _settings_text(config: dict[str, Any], max_new_tokens: int) -> str:
    return (f"sampling={config.get('do_sample', False)} temperature={config.get('temperature')} "
            f"top_p={config.get('top_p')} num_beams={config.get('num_beams', 1)} "
            f"max_new_tokens={max_new_tokens}")


# The import-time pattern of MiniCPM-V-2_6's resampler.py: `List` comes only from the star import,
# which torch >= 2.7 no longer provides (upstream reports since torch 2.7: NameError at load).
MINICPM_V26_RESAMPLER_PATTERN = """
from torch import Tensor
from torch.nn.functional import *  # noqa: F403


def _in_projection_packed(q: Tensor, k: Tensor, v: Tensor, w: Tensor, b: Tensor | None = None) -> List[Tensor]:
    return [q, k, v]
"""


class FakeMiniCPMV26(FakeModel):
    """openbmb/MiniCPM-V-2_6, `modeling_minicpmv.py` as on the Hub's main in 2024-08 (public copy:
    wusongbai139/AnyCaption `MiniCPM-V-2_6/`): `chat(image, msgs, tokenizer, processor=None, ...,
    sampling=True, ..., stream=False, max_slice_nums=None, ...)`.

    Mirrors its guards: `assert len(msgs) > 0`, `assert sampling or not stream`, roles user/assistant
    with a user first; an `image` argument is used only when the first message's content is a string;
    content parts other than images and strings are dropped. Sampling settings follow its two configs
    (only keys already present are taken from kwargs). Returns a string, or with `stream=True` a
    generator fed by `self.llm.generate` in a bare thread with a `TextIteratorStreamer` and no error
    path: when that generate raises, the streamer is never ended (the consumer would wait forever).
    Loading imports `MINICPM_V26_RESAMPLER_PATTERN` as transformers imports remote code.
    """

    terminators = ("<|im_end|>", "<|endoftext|>")
    remote_code = MINICPM_V26_RESAMPLER_PATTERN

    def __init__(self, tokenizer: FakeTokenizer | None = None) -> None:
        super().__init__(tokenizer)
        self.llm = FakeMiniCPMLLM(self)
        self.threads: list[threading.Thread] = []

    def chat(self, image: Any, msgs: list[dict[str, Any]], tokenizer: Any, processor: Any = None,
             vision_hidden_states: Any = None, max_new_tokens: int = 2048, min_new_tokens: int = 0,
             sampling: bool = True, max_inp_length: int = 8192, system_prompt: str = "", stream: bool = False,
             max_slice_nums: Any = None, use_image_id: Any = None, **kwargs: Any) -> Any:
        from transformers import TextIteratorStreamer

        assert len(msgs) > 0, "msgs is empty"
        assert sampling or not stream, "if use stream mode, make sure sampling=True"
        content = msgs[0]["content"]
        if image is not None and isinstance(content, str):
            content = [image, content]
        for index, message in enumerate(msgs):
            assert message["role"] in ["user", "assistant"]
            if index == 0:
                assert message["role"] == "user", "The role of first msg should be user"
        if isinstance(content, str):
            content = [content]
        images = [part for part in content if isinstance(part, Image.Image)]
        texts = [part for part in content if isinstance(part, str)]
        config = _minicpm_generation_config(sampling, kwargs)
        self.calls.append({"image": image, "msgs": msgs, "images": images, "texts": texts, "stream": stream,
                           "sampling": sampling, "kwargs": kwargs, "config": config,
                           "max_new_tokens": max_new_tokens, "max_slice_nums": max_slice_nums})
        answer = self.plan(f"images={len(images)} [{' '.join(describe(i) for i in images)}] "
                           f"question={' '.join(texts)} {_settings_text(config, max_new_tokens)}")
        embeds = FakeEmbeds(answer)
        if not stream:
            ids = self.llm.generate(inputs_embeds=embeds, pad_token_id=0, max_new_tokens=max_new_tokens,
                                    **config)
            return tokenizer.decode(ids[0], skip_special_tokens=True).strip()
        streamer = TextIteratorStreamer(tokenizer)
        thread = threading.Thread(
            target=self.llm.generate,
            kwargs={"inputs_embeds": embeds, "pad_token_id": 0, "streamer": streamer,
                    "max_new_tokens": max_new_tokens, **config},
        )
        thread.start()
        self.threads.append(thread)

        def stream_gen() -> Any:
            for text in streamer:
                for term in self.terminators:
                    text = text.replace(term, "")
                yield text

        return stream_gen()


class FakeMiniCPMV2(FakeModel):
    """openbmb/MiniCPM-V-2: `res, context, _ = chat(image=img, msgs=[{"role": "user", "content": q}],
    context=None, tokenizer=tok, sampling=..., ...)`; one image, no streaming of its own."""

    def __init__(self, tokenizer: FakeTokenizer | None = None) -> None:
        super().__init__(tokenizer)
        self.llm = FakeMiniCPMLLM(self)

    def chat(self, image: Any, msgs: list[dict[str, Any]], context: Any, tokenizer: Any,
             vision_hidden_states: Any = None, max_new_tokens: int = 1024, sampling: bool = True,
             max_inp_length: int = 2048, **kwargs: Any) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
        question = msgs[0]["content"]
        if not isinstance(question, str):
            raise TypeError("MiniCPM-V-2 takes the question as a string")
        if not isinstance(image, Image.Image):
            raise TypeError("MiniCPM-V-2 takes one PIL image")
        config = _minicpm_generation_config(sampling, kwargs)
        self.calls.append({"image": image, "msgs": msgs, "context": context, "sampling": sampling,
                           "kwargs": kwargs, "config": config, "max_new_tokens": max_new_tokens})
        answer = self.plan(f"image={describe(image)} question={question} "
                           f"{_settings_text(config, max_new_tokens)}")
        ids = self.llm.generate(inputs_embeds=FakeEmbeds(answer), pad_token_id=0,
                                eos_token_id=tokenizer.eos_token_id, max_new_tokens=max_new_tokens, **config)
        result = tokenizer.decode(ids[0], skip_special_tokens=True).strip()
        return result, [*msgs, {"role": "assistant", "content": result}], config


# --- Molmo ----------------------------------------------------------------------------------------


MOLMO_CONTEXT = 4096  # max_position_embeddings: the RoPE table has this many rows


def molmo_tiling(width: int, height: int, max_crops: int = 12) -> tuple[int, int]:
    """(rows, columns) of 224-px crops (plus 112 px of overlap) for an image, at most `max_crops` cells.

    Reproduces the real `select_tiling` counts measured on the remote code (64², 336², 640×480,
    1024×768, 1920×1080, 4000×300, 300×4000); not its search.
    """
    rows = max(1, math.ceil(max(height - 112, 1) / 224))
    columns = max(1, math.ceil(max(width - 112, 1) / 224))
    while rows * columns > max_crops:
        if columns > rows:
            columns -= 1
        else:
            rows -= 1
    return rows, columns


def molmo_image_tokens(width: int, height: int, max_crops: int = 12) -> int:
    rows, columns = molmo_tiling(width, height, max_crops)
    return 160 + (8 * rows + 4) * (8 * columns + 5)


class FakeMolmoProcessor:
    """Molmo-7B-*-0924's processor (`preprocessing_molmo.py`, public copy reubzdubz/Molmo7B_D_NF4Quant):
    `process(text=None, images=None, **kwargs)` → dict of unbatched tensors.

    input_ids (tokens,): BOS (`<|endoftext|>`), then 160 + (8·rows+4)(8·cols+5) image tokens, then
    " User: q Assistant:"; images (1 + rows·cols crops, 576, 588) holding the image's mean colour;
    image_input_idx (crops, 144) int32; image_masks (crops, 576). `max_crops` (12) may be passed.
    No image raises TypeError as the real code does; several images are accepted (the real code
    then gives them overlapping indices).
    """

    def __init__(self, tokenizer: FakeTokenizer | None = None) -> None:
        self.tokenizer = tokenizer or FakeTokenizer()
        self.calls: list[dict[str, Any]] = []

    def process(self, text: str | None = None, images: list[Image.Image] | None = None,
                **kwargs: Any) -> dict[str, torch.Tensor]:
        if images is None:
            raise TypeError("'<' not supported between instances of 'NoneType' and 'int'")
        image = images[0]
        if image.mode != "RGB":
            raise ValueError(f"image mode {image.mode}: the remote preprocessing expects RGB")
        max_crops = int(kwargs.get("max_crops", 12))
        self.calls.append({"images": images, "text": text, "kwargs": kwargs})
        rows, columns = molmo_tiling(image.width, image.height, max_crops)
        crops = 1 + rows * columns
        rgb = torch.tensor(colour(image), dtype=torch.float32) / 255
        pixels = rgb.repeat(crops, 576, 196).reshape(crops, 576, 588)
        ids = [self.tokenizer.eos_token_id]
        ids += [self.tokenizer.image_token_id] * molmo_image_tokens(image.width, image.height, max_crops)
        ids += self.tokenizer.encode(f" User: {text} Assistant:")
        return {
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "images": pixels,
            "image_input_idx": torch.arange(crops * 144, dtype=torch.int32).reshape(crops, 144),
            "image_masks": torch.ones(crops, 576),
        }


class FakeMolmo(FakeModel):
    """Molmo-7B-*-0924 (`modeling_molmo.py`): `generate_from_batch(batch, generation_config=None, **kwargs)`.

    Asserts `generation_config.use_cache` and `max_new_tokens`; needs 2-D input ids and pixels in the
    model's dtype; the tokenizer is required with stop strings; past 4,096 positions the RoPE lookup
    fails with an IndexError; returns ids including the prompt.
    """

    allowed_kwargs = frozenset({"tokenizer", "streamer", "stopping_criteria"})

    def generate_from_batch(self, batch: dict[str, torch.Tensor], generation_config: Any = None,
                            **kwargs: Any) -> torch.Tensor:
        if generation_config is not None:
            assert generation_config.use_cache
        max_new_tokens = generation_config.max_new_tokens  # AttributeError without a config, as the real code
        assert max_new_tokens is not None
        unknown = set(kwargs) - self.allowed_kwargs
        if unknown:
            raise ValueError(f"The following `model_kwargs` are not used by the model: {sorted(unknown)}")
        input_ids = batch["input_ids"]
        _batch_size, seq_len = input_ids.shape  # a 1-D input fails here, as in the remote code
        images = batch["images"]
        if images.dim() != 4:
            raise ValueError(f"images must be (batch, crops, patches, pixels), got {tuple(images.shape)}")
        if images.dtype != self.dtype:
            raise RuntimeError(f"Input type ({images.dtype}) and weight type ({self.dtype}) "
                               "should be the same")
        tokenizer = kwargs.get("tokenizer")
        if generation_config.stop_strings and tokenizer is None:
            raise ValueError("There are one or more stop strings, ... but we could not locate a tokenizer. "
                             "When generating with stop strings, you must pass the model's tokenizer.")
        prompt = tokenizer.decode(input_ids[0], skip_special_tokens=True).strip()
        r, g, b = (round(float(v)) for v in images[0].reshape(-1, 3).mean(0) * 255)
        config = generation_config
        self.calls.append({"batch": batch, "config": config, "kwargs": kwargs})
        answer = self.plan(
            f"crops={images.shape[1]} rgb({r},{g},{b}) prompt=[{prompt}] sampling={config.do_sample} "
            f"temperature={config.temperature if config.do_sample else None} "
            f"top_p={config.top_p if config.do_sample else None} max_new_tokens={config.max_new_tokens}"
        )
        if seq_len + min(max_new_tokens, n_words(answer) + 1) > MOLMO_CONTEXT:
            raise IndexError("index out of range in self")  # the 4,096-row RoPE table
        ids, record = fake_generate(
            tokenizer, answer, max_new_tokens=config.max_new_tokens, prompt_ids=input_ids[0].tolist(),
            streamer=kwargs.get("streamer"), stopping_criteria=kwargs.get("stopping_criteria"),
            delay_s=self.delay_s, kwargs=kwargs,
        )
        self.records.append(record)
        return ids


def n_words(text: str) -> int:
    return len(re.findall(r"\s*\S+", text))


# --- moondream ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FakeEncodedImage:
    """moondream2's EncodedImage: KV caches of the image prefix and its length."""

    pos: int
    description: str = ""
    caches: list[Any] = field(default_factory=list)


class FakeByteTokenizer:
    """A `tokenizers.Tokenizer` over bytes: one token a UTF-8 byte (256 = end of text), so a character
    of several bytes spans several tokens, as it does in moondream's byte-level BPE."""

    eos_id = 256

    def encode(self, sequence: str, pair: Any = None, is_pretokenized: bool = False,
               add_special_tokens: bool = True) -> Any:
        return SimpleNamespace(ids=list(sequence.encode("utf-8")))

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


MOONDREAM_CONTEXT = 2048  # config.py: max_context; the KV cache is allocated for exactly this many positions


class FakeMoondream2(FakeModel):
    """vikhyatk/moondream2 at revision 2025-01-09 (GitHub vikhyat/moondream 8ac77eb:
    `moondream/torch/hf_moondream.py`, `moondream.py`).

    `query`, `caption` and `encode_image` are properties returning the inner model's methods:
    `query(image, question, stream=False, settings=None)` → {"answer": str | generator};
    `caption(image, length="normal"|"short", stream=False, settings=None)` → {"caption": ...}.
    `settings` is read for `max_tokens` only (default 512); every other key is ignored, and each next
    token is the argmax (no sampling, no seed). Each token is decoded alone
    (`self.model.tokenizer.decode([id])`) and yielded. The image prefix takes 730 positions; a
    position past 2,048 raises IndexError mid-answer. Layers are float16 whatever `torch_dtype` is
    asked, and casting the loaded model to another dtype breaks `encode_image`.
    """

    image_prefix = 730

    def __init__(self, tokenizer: FakeTokenizer | None = None) -> None:
        super().__init__(tokenizer)
        self.model = SimpleNamespace(tokenizer=FakeByteTokenizer())
        self.produced = 0  # tokens the generators actually computed
        self._dtype = torch.float16

    @property  # type: ignore[override]
    def dtype(self) -> torch.dtype:
        return self._dtype

    @dtype.setter
    def dtype(self, value: torch.dtype) -> None:
        """`from_pretrained(torch_dtype=...)` is ignored: HfMoondream builds its layers in float16."""

    def to(self, *args: Any, **kwargs: Any) -> FakeModel:
        target = args[0] if args else kwargs.get("dtype", kwargs.get("device"))
        if isinstance(target, torch.dtype) and target != torch.float16:
            self.cast_to = target  # encode_image then fails: "mat1 and mat2 must have the same dtype"
        return super().to(*args, **kwargs)

    @property
    def encode_image(self) -> Any:
        return self._encode_image

    @property
    def query(self) -> Any:
        return self._query

    @property
    def caption(self) -> Any:
        return self._caption

    def _encode_image(self, image: Any) -> FakeEncodedImage:
        if isinstance(image, FakeEncodedImage):
            return image
        if not isinstance(image, Image.Image):
            raise ValueError("image must be a PIL Image or EncodedImage")
        if getattr(self, "cast_to", None) is not None:
            raise RuntimeError(f"mat1 and mat2 must have the same dtype, but got Half and {self.cast_to}")
        return FakeEncodedImage(pos=self.image_prefix, description=describe(image))

    def _generate_text(self, skill: str, image: Any, question: str, stream: bool,
                       settings: dict[str, Any] | None) -> Any:
        max_tokens = settings.get("max_tokens", 512) if settings else 512
        encoded = self._encode_image(image)
        tokenizer = self.model.tokenizer
        self.calls.append({"skill": skill, "image": image, "question": question, "stream": stream,
                           "settings": settings})
        answer = self.plan(f"{skill} image={encoded.description} question={question} greedy "
                           f"max_tokens={max_tokens}")
        answer_ids = tokenizer.encode(answer).ids + [FakeByteTokenizer.eos_id]
        start = encoded.pos + len(tokenizer.encode(f"\n\nQuestion: {question}\n\nAnswer:").ids)

        def generator() -> Any:
            for count, token in enumerate(answer_ids[:max_tokens]):
                if start + count >= MOONDREAM_CONTEXT:
                    raise IndexError(f"index {MOONDREAM_CONTEXT} is out of bounds for dimension 0 with size "
                                     f"{MOONDREAM_CONTEXT}")
                if token == FakeByteTokenizer.eos_id:
                    return
                self.produced += 1
                if self.delay_s:
                    time.sleep(self.delay_s)
                yield self.model.tokenizer.decode([token])

        return generator() if stream else "".join(generator())

    def _query(self, image: Any, question: str, stream: bool = False,
               settings: dict[str, Any] | None = None) -> dict:
        return {"answer": self._generate_text("query", image, question, stream, settings)}

    def _caption(self, image: Any, length: str = "normal", stream: bool = False,
                 settings: dict[str, Any] | None = None) -> dict:
        if length not in ("normal", "short"):
            raise ValueError(f"Unsupported caption length: {length}")
        return {"caption": self._generate_text("caption", image, f"<{length} caption>", stream, settings)}


class FakeMoondream2Sampling(FakeModel):
    """vikhyatk/moondream2 at revision 2025-04-14 (GitHub vikhyat/moondream 7a979ce + f660ccb): the
    same `query`/`caption`, with settings max_tokens (768), temperature (0.5; 0 = argmax) and top_p
    (0.3), sampled from torch's global generator (so `torch.manual_seed` repeats it). Pieces are about
    a word each (the 300573a stream). The tokenizer is a `tokenizers.Tokenizer` at `model.model.tokenizer`.
    """

    def __init__(self, tokenizer: FakeTokenizer | None = None) -> None:
        super().__init__(tokenizer)
        self.model = SimpleNamespace(tokenizer=FakeTokenizersTokenizer(self.tokenizer))
        self.produced = 0  # pieces the generators actually computed

    def encode_image(self, image: Image.Image | FakeEncodedImage) -> FakeEncodedImage:
        if isinstance(image, FakeEncodedImage):
            return image
        return FakeEncodedImage(pos=730, description=describe(image))

    def _text(self, skill: str, image: Any, question: str, stream: bool, settings: dict[str, Any] | None) -> Any:
        settings = settings or {}
        max_tokens = settings.get("max_tokens", 768)
        temperature = settings.get("temperature", 0.5)
        top_p = settings.get("top_p", 0.3)
        encoded = self.encode_image(image)
        self.calls.append({"skill": skill, "image": image, "question": question, "stream": stream,
                           "settings": settings})
        draw = f" draw={torch.rand(1).item():.6f}" if temperature > 0 else ""
        answer = self.plan(f"{skill} image={encoded.description} question={question} "
                           f"temperature={temperature} top_p={top_p} max_tokens={max_tokens}{draw}")
        words = re.findall(r"\s*\S+", answer)[:max_tokens]

        def generator() -> Any:
            for word in words:
                self.produced += 1
                if self.delay_s:
                    time.sleep(self.delay_s)
                yield word

        return generator() if stream else "".join(words)

    def query(self, image: Any, question: str, stream: bool = False, settings: dict[str, Any] | None = None) -> dict:
        return {"answer": self._text("query", image, question, stream, settings)}

    def caption(self, image: Any, length: str = "normal", stream: bool = False,
                settings: dict[str, Any] | None = None) -> dict:
        if length not in ("normal", "short", "long"):
            raise ValueError(f"Unsupported caption length: {length}")
        return {"caption": self._text("caption", image, f"<{length} caption>", stream, settings)}


class FakeMoondream2Legacy(FakeModel):
    """vikhyatk/moondream2, 2024 revisions: `answer_question(model.encode_image(img), q, tokenizer,
    chat_history="", result_queue=None, max_new_tokens=256, **kwargs)`; `kwargs` reach the text
    model's `generate` (streamer, stopping_criteria, do_sample, temperature, top_p)."""

    generate_kwargs = frozenset({"streamer", "stopping_criteria", "do_sample", "temperature", "top_p",
                                 "max_new_tokens"})

    def encode_image(self, image: Image.Image) -> torch.Tensor:
        rgb = torch.tensor(colour(image), dtype=torch.float32) / 255
        embeds = rgb.repeat(1, 729, 1)  # (1, 729 image tokens, features)
        self.calls.append({"encode_image": image})
        return embeds

    def generate(self, image_embeds: torch.Tensor, prompt: str, tokenizer: Any, max_new_tokens: int = 128,
                 **kwargs: Any) -> list[str]:
        unknown = set(kwargs) - self.generate_kwargs
        if unknown:
            raise ValueError(f"The following `model_kwargs` are not used by the model: {sorted(unknown)}")
        r, g, b = (round(float(v)) for v in image_embeds[0].mean(0) * 255)
        self.calls.append({"prompt": prompt, "max_new_tokens": max_new_tokens, "kwargs": kwargs})
        answer = self.plan(
            f"image_tokens={image_embeds.shape[1]} rgb({r},{g},{b}) prompt=[{prompt.replace(chr(10), ' ')}] "
            f"sampling={kwargs.get('do_sample')} temperature={kwargs.get('temperature')} "
            f"top_p={kwargs.get('top_p')} max_new_tokens={max_new_tokens}" + self.answer_suffix()
        )
        ids, record = fake_generate(tokenizer, answer, max_new_tokens=max_new_tokens,
                                    streamer=kwargs.get("streamer"),
                                    stopping_criteria=kwargs.get("stopping_criteria"),
                                    delay_s=self.delay_s, kwargs=kwargs)
        self.records.append(record)
        return tokenizer.batch_decode(ids, skip_special_tokens=True)

    def answer_suffix(self) -> str:
        return ""

    def answer_question(self, image_embeds: torch.Tensor, question: str, tokenizer: Any,
                        chat_history: str = "", result_queue: Any = None, max_new_tokens: int = 256,
                        **kwargs: Any) -> str | None:
        prompt = f"<image>\n\n{chat_history}Question: {question}\n\nAnswer:"
        answer = self.generate(image_embeds, prompt, tokenizer=tokenizer, max_new_tokens=max_new_tokens,
                               **kwargs)[0]
        cleaned = re.sub("<$|<END$", "", answer).strip()
        if result_queue:
            result_queue.put(cleaned)
            return None
        return cleaned


class FakeMoondream1(FakeMoondream2Legacy):
    """vikhyatk/moondream1: `answer_question(image_embeds, question, tokenizer, chat_history="",
    result_queue=None, **kwargs)`, which calls `generate(..., max_new_tokens=256, **kwargs)` itself
    (so a caller's max_new_tokens is a TypeError) and stops on the first token of "<END>", which
    the streamer sees and the returned answer strips."""

    def answer_suffix(self) -> str:
        return " <"

    def generate(self, image_embeds: torch.Tensor, prompt: str, tokenizer: Any, eos_text: str = "<END>",
                 max_new_tokens: int = 128, **kwargs: Any) -> list[str]:
        return super().generate(image_embeds, prompt, tokenizer, max_new_tokens=max_new_tokens, **kwargs)

    def answer_question(self, image_embeds: torch.Tensor, question: str, tokenizer: Any,  # type: ignore[override]
                        chat_history: str = "", result_queue: Any = None, **kwargs: Any) -> str | None:
        prompt = f"<image>\n\n{chat_history}Question: {question}\n\nAnswer: "
        answer = self.generate(image_embeds, prompt, eos_text="<END>", tokenizer=tokenizer,
                               max_new_tokens=256, **kwargs)[0]
        cleaned = re.sub("<$", "", re.sub("END$", "", answer)).strip()
        if result_queue:
            result_queue.put(cleaned)
            return None
        return cleaned


# --- InternVL2 ------------------------------------------------------------------------------------


class FakeInternVL2(FakeModel):
    """OpenGVLab/InternVL2-2B `modeling_internvl_chat.py` (public copy zylluan/ft-uav_internvl2-2B):
    `chat(tokenizer, pixel_values, question, generation_config, history=None, return_history=False,
    num_patches_list=None, IMG_START_TOKEN, IMG_END_TOKEN, IMG_CONTEXT_TOKEN, verbose=False)`.

    Asserts `len(pixel_values) == sum(num_patches_list)`; pixel_values (tiles, 3, 448, 448) in the
    model's dtype; `<image>\\n` is added when the question has none; fewer `<image>` placeholders than
    images fail in generate (shape mismatch), extra ones stay as text. `generation_config` (a dict,
    streamer and stopping criteria included) goes to `generate` with `eos_token_id` set to
    `<|im_end|>`; `use_cache` in it is a duplicate keyword. Generate returns the new tokens only (the
    streamer's first put is empty); chat returns the text, or (text, history).
    """

    num_image_token = 256
    generate_kwargs = frozenset({"max_new_tokens", "do_sample", "temperature", "top_p", "streamer",
                                 "stopping_criteria", "eos_token_id"})

    def __init__(self, tokenizer: FakeTokenizer | None = None) -> None:
        super().__init__(tokenizer)
        self.conv_template = SimpleNamespace(sep="<|im_end|>")

    @staticmethod
    def mean_colours(pixel_values: torch.Tensor, num_patches_list: list[int]) -> list[tuple[int, int, int]]:
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        pixels = pixel_values.float() * std + mean
        colours = []
        for part in pixels.split(num_patches_list):
            r, g, b = (round(float(v) * 255) for v in part.mean(dim=(0, 2, 3)))
            colours.append((r, g, b))
        return colours

    def chat(self, tokenizer: Any, pixel_values: torch.Tensor | None, question: str,
             generation_config: dict[str, Any], history: Any = None, return_history: bool = False,
             num_patches_list: list[int] | None = None, IMG_START_TOKEN: str = "<img>",  # noqa: N803
             IMG_END_TOKEN: str = "</img>", IMG_CONTEXT_TOKEN: str = "<IMG_CONTEXT>",  # noqa: N803
             verbose: bool = False) -> Any:
        if history is None and pixel_values is not None and "<image>" not in question:
            question = "<image>\n" + question
        if num_patches_list is None:
            num_patches_list = [pixel_values.shape[0]] if pixel_values is not None else []
        assert pixel_values is None or len(pixel_values) == sum(num_patches_list)
        if pixel_values is not None:
            if tuple(pixel_values.shape[1:]) != (3, 448, 448):
                raise ValueError(f"pixel_values must be (tiles, 3, 448, 448), "
                                 f"got {tuple(pixel_values.shape)}")
            if pixel_values.dtype != self.dtype:
                raise RuntimeError(f"Input type ({pixel_values.dtype}) and bias type ({self.dtype}) "
                                   "should be the same")
        if question.count("<image>") < len(num_patches_list):  # too many placeholders stay as text
            raise RuntimeError("shape mismatch: value tensor cannot be broadcast to indexing result")
        if "use_cache" in generation_config:
            raise TypeError("generate() got multiple values for keyword argument 'use_cache'")
        unknown = set(generation_config) - self.generate_kwargs
        if unknown:
            raise ValueError(f"The following `model_kwargs` are not used by the model: {sorted(unknown)}")
        generation_config["eos_token_id"] = tokenizer.token_id("<|im_end|>")  # the template's separator
        colours = self.mean_colours(pixel_values, num_patches_list) if pixel_values is not None else []
        config = dict(generation_config)
        self.calls.append({"question": question, "pixel_values": pixel_values,
                           "num_patches_list": list(num_patches_list), "config": config, "history": history})
        text = question.replace("<image>", "[image]").replace("\n", " ")
        answer = self.plan(
            f"images={len(num_patches_list)} tiles={num_patches_list} "
            f"colours={' '.join(f'rgb{c}'.replace(' ', '') for c in colours)} question=[{text}] "
            f"sampling={config.get('do_sample')} temperature={config.get('temperature')} "
            f"top_p={config.get('top_p')} max_new_tokens={config.get('max_new_tokens')}"
        )
        ids, record = fake_generate(tokenizer, answer, max_new_tokens=config.get("max_new_tokens", 20),
                                    prompt_ids=(), streamer=config.get("streamer"),
                                    stopping_criteria=config.get("stopping_criteria"),
                                    delay_s=self.delay_s, kwargs=config)
        self.records.append(record)
        response = tokenizer.batch_decode(ids, skip_special_tokens=True)[0]
        response = response.split(self.conv_template.sep)[0].strip()
        if return_history:
            return response, [*(history or []), (question, response)]
        return response


# --- loading --------------------------------------------------------------------------------------


def import_remote_code(source: str) -> Any:
    """Import `source` as a fresh module, the way transformers imports a repo's remote code files."""
    import importlib.util
    import tempfile
    import uuid

    name = f"fake_remote_{uuid.uuid4().hex[:8]}"
    path = Path(tempfile.mkdtemp()) / f"{name}.py"
    path.write_text(source, encoding="utf-8")
    module_spec = importlib.util.spec_from_file_location(name, path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


class FakeHub:
    """Stands in for the Hub: `transformers.<AutoClass>.from_pretrained` returns the given fake, or
    raises the given exception, for as long as the test's monkeypatch lasts; calls are recorded.

    `FakeHub(monkeypatch, AutoModel=FakeInternVL2(), AutoTokenizer=FakeTokenizer())`
    """

    def __init__(self, monkeypatch: Any, **returns: Any) -> None:
        import transformers

        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        for name, value in returns.items():
            monkeypatch.setattr(getattr(transformers, name), "from_pretrained", self._loader(name, value))

    def _loader(self, name: str, value: Any) -> Any:
        def from_pretrained(repo: str, *args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, repo, kwargs))
            if isinstance(value, BaseException):
                raise value
            if getattr(value, "remote_code", None):
                import_remote_code(value.remote_code)  # as transformers imports a repo's modeling files
            dtype = kwargs.get("dtype", kwargs.get("torch_dtype"))
            if isinstance(value, FakeModel) and isinstance(dtype, torch.dtype):
                value.dtype = dtype
            return value

        return from_pretrained

    def kwargs(self, name: str) -> dict[str, Any]:
        """Keyword arguments of the last `from_pretrained` call on the Auto class `name`."""
        return next(kwargs for called, _repo, kwargs in reversed(self.calls) if called == name)
