"""Tiny random-weight checkpoints of real VLM architectures, built offline in seconds.

Each checkpoint holds a config, safetensors weights and a working processor (image processor,
a word-level tokenizer over a few hundred English words, a chat template), so tests and the
offline demo run the real transformers code path. Their weights are random, so their answers are
word salad by design: whole words in no sensible order, never broken bytes.
`build_tiny_models(out_dir)` writes the checkpoints and a `models.yaml` listing them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from app.tiny.words import INPUT_ONLY, NEWLINES, PUNCTUATION, WORDS

CORPUS = [
    "hello world, describe this image please.",
    "What is in the picture? A cat and a dog on a red sofa.",
    "The quick brown fox jumps over the lazy dog.",
    "Compare the two images. Which one is brighter? The first one.",
    "user assistant system You are a helpful assistant. Answer briefly.",
    "caption en: a photo of a small house near a lake.",
]

# family → (display name, multi_image, the real model it stands in for)
TINY_FAMILIES: dict[str, tuple[str, bool, str]] = {
    "llava": ("Tiny LLaVA-1.5", True, "llava-hf/llava-1.5-7b-hf"),
    "paligemma": ("Tiny PaliGemma", False, "google/paligemma-3b-pt-224"),
    "idefics3": ("Tiny SmolVLM (Idefics3)", True, "HuggingFaceTB/SmolVLM-Instruct"),
    "mllama": ("Tiny Llama 3.2 Vision (Mllama)", False, "meta-llama/Llama-3.2-11B-Vision-Instruct"),
    "qwen2_vl": ("Tiny Qwen2-VL", True, "Qwen/Qwen2-VL-2B-Instruct"),
    "qwen2_5_vl": ("Tiny Qwen2.5-VL", True, "Qwen/Qwen2.5-VL-3B-Instruct"),
    "internvl": ("Tiny InternVL (native)", True, "OpenGVLab/InternVL3-1B-hf"),
    "gemma3": ("Tiny Gemma 3", True, "google/gemma-3-4b-it"),
}


TINY_CONTEXT = 4096  # max_position_embeddings of every tiny text model (vLLM serves them at --max-model-len 2048)
# What a checkpoint on disk was built as: a build of another format is rebuilt (tests reuse VLM_TINY_DIR).
# 2: a word-level vocabulary (answers are lower-case word salad, not bytes), text attention heads of 32 (vLLM's
#    CPU minimum).
TINY_FORMAT = 2
# Random weights fall into loops ("rabbit rabbit rabbit"), which read as a broken page: a penalty on repeats
REPETITION_PENALTY = 4.0  # the logits of random weights are small (about ±1), the repeat ahead by 0.5
# and an answer of one word ("from") reads as a fault: the end token is held back a little (it stays possible)
END_BIAS = -0.5
INFO = "tiny_info.json"  # family, parameter count and format, written last
# The tiny Qwen processors resize to 28²..56² pixels (1 to 4 image tokens): their budget says the same.
TINY_BUDGETS: dict[str, dict[str, int]] = {
    family: {"context_tokens": TINY_CONTEXT, "min_pixels": 28 * 28, "max_pixels": 56 * 56}
    for family in ("qwen2_vl", "qwen2_5_vl")
}


def _tokenizer(specials: list[str], named: dict[str, str] | None = None, **tokens: str) -> Any:
    """A word-level tokenizer over `WORDS` (unknown words → an unknown token), so that whatever random weights
    pick decodes to whole words; `named` become attributes like `tokenizer.image_token`. Newlines are tokens
    of their own (vLLM's processors look them up by text)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    named = named or {}
    unknown = tokens.get("unk_token") or "<unk>"
    every_special = list(dict.fromkeys([*specials, unknown, *named.values()]))
    vocab = {token: index for index, token in enumerate(dict.fromkeys([*every_special, *WORDS, *PUNCTUATION,
                                                                        *INPUT_ONLY]))}
    words = Tokenizer(models.WordLevel(vocab, unk_token=unknown))
    words.pre_tokenizer = pre_tokenizers.Whitespace()  # words and runs of punctuation
    # words joined by spaces, none before punctuation (cleanup) or a newline (marked as a "##" continuation)
    words.decoder = decoders.Sequence([decoders.Replace(Regex("\\A\n"), "##\n"),
                                       decoders.WordPiece(prefix="##", cleanup=True),
                                       decoders.Replace("##\n", "\n")])  # the first token keeps its mark
    words.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in every_special])
    words.add_tokens([AddedToken(newline, normalized=False) for newline in NEWLINES])
    extra: Any = named or [t for t in every_special if t not in tokens.values()]
    return PreTrainedTokenizerFast(tokenizer_object=words, extra_special_tokens=extra, **tokens)


def _template(turn_open: str, turn_end: str, image: str, generation: str, bos: str = "",
              system: str | None = None, images_first: bool = False) -> str:
    """A Jinja chat template that understands content lists of image and text parts."""
    system_turn = ""
    if system is not None:
        system_turn = ("{% if loop.first and message['role'] != 'system' %}"
                       + turn_open.replace("message['role']", "'system'") + system + turn_end + "{% endif %}")
    each_image = "{% for c in message['content'] %}{% if c['type'] == 'image' %}" + image + "{% endif %}{% endfor %}"
    each_text = "{% for c in message['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}"
    in_order = ("{% for c in message['content'] %}{% if c['type'] == 'image' %}" + image
                + "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}")
    parts = each_image + each_text if images_first else in_order
    return (bos + "{% for message in messages %}" + system_turn + turn_open
            + "{% if message['content'] is string %}{{ message['content'] }}{% else %}" + parts + "{% endif %}"
            + turn_end + "{% endfor %}{% if add_generation_prompt %}" + generation + "{% endif %}")


def _vocab(tokenizer: Any, extra: int = 0) -> int:
    """Embedding rows for the tokenizer, rounded up to a multiple of 64."""
    return -(-(len(tokenizer) + extra) // 64) * 64


def _llama_text(tokenizer: Any) -> dict[str, Any]:
    return dict(model_type="llama", vocab_size=_vocab(tokenizer), hidden_size=64, intermediate_size=128,
                num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                max_position_embeddings=TINY_CONTEXT,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id)


def _build_llava() -> tuple[Any, Any]:
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tok = _tokenizer(["<unk>", "<s>", "</s>", "<pad>"], {"image_token": "<image>"},
                     bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>")
    template = _template("{{ message['role'].upper() }}: ", " ", "<image>\n", "ASSISTANT:", images_first=True)
    images = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    # 32 px / patch 8 = 16 patches, +1 CLS token, minus 1 for the "default" feature strategy.
    processor = LlavaProcessor(image_processor=images, tokenizer=tok, patch_size=8, chat_template=template,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1)
    config = LlavaConfig(
        vision_config=dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8,
                           projection_dim=32),
        text_config=_llama_text(tok), image_token_index=tok.image_token_id, image_seq_length=16,
        vision_feature_select_strategy="default", vision_feature_layer=-2)
    return LlavaForConditionalGeneration(config), processor


def _build_paligemma() -> tuple[Any, Any]:
    from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration, PaliGemmaProcessor
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    tok = _tokenizer(["<pad>", "<eos>", "<bos>", "<unk>"], {"image_token": "<image>"},
                     bos_token="<bos>", eos_token="<eos>", unk_token="<unk>", pad_token="<pad>")
    images = SiglipImageProcessorPil(size={"height": 32, "width": 32})
    images.image_seq_length = 16  # type: ignore[attr-defined]  # PaliGemmaProcessor reads this attribute
    # Like the real pt checkpoints, no chat template: the adapter builds the "<image>…<bos>prefix\n" prompt.
    processor = PaliGemmaProcessor(image_processor=images, tokenizer=tok)
    vocab = _vocab(tok)  # after the processor added its <loc>/<seg> tokens
    config = PaliGemmaConfig(
        vision_config=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64,
                           num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8,
                           projection_dim=64),
        text_config=dict(model_type="gemma", vocab_size=vocab, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=32,
                         max_position_embeddings=TINY_CONTEXT, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
        image_token_index=tok.image_token_id, projection_dim=64, hidden_size=64, vocab_size=vocab)
    return PaliGemmaForConditionalGeneration(config), processor


def _build_idefics3() -> tuple[Any, Any]:
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    tiles = [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
    tok = _tokenizer(["<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>",
                      "<image>", "<global-img>", *tiles],
                     bos_token="<|im_start|>", eos_token="<end_of_utterance>", pad_token="<|endoftext|>",
                     unk_token="<|endoftext|>")
    template = _template("{{ message['role'] | capitalize }}:", "<end_of_utterance>\n", "<image>", "Assistant:",
                         bos="<|im_start|>")
    # 32-px tiles, patch 8 → 16 patches; pixel shuffle by 2 → 4 tokens a tile.
    images = Idefics3ImageProcessorPil(size={"longest_edge": 64}, max_image_size={"longest_edge": 32})
    processor = Idefics3Processor(image_processor=images, tokenizer=tok, image_seq_len=4, chat_template=template)
    config = Idefics3Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        text_config=_llama_text(tok), image_token_id=tok.convert_tokens_to_ids("<image>"), scale_factor=2)
    return Idefics3ForConditionalGeneration(config), processor


def _build_mllama() -> tuple[Any, Any]:
    from transformers import MllamaConfig, MllamaForConditionalGeneration, MllamaProcessor
    from transformers.models.mllama.image_processing_pil_mllama import MllamaImageProcessorPil

    tok = _tokenizer(["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                      "<|eot_id|>", "<|finetune_right_pad_id|>", "<|python_tag|>", "<|image|>"],
                     bos_token="<|begin_of_text|>", eos_token="<|eot_id|>", pad_token="<|finetune_right_pad_id|>")
    template = _template("<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n", "<|eot_id|>",
                         "<|image|>", "<|start_header_id|>assistant<|end_header_id|>\n\n", bos="{{ bos_token }}")
    images = MllamaImageProcessorPil(size={"height": 32, "width": 32}, max_image_tiles=2)
    processor = MllamaProcessor(image_processor=images, tokenizer=tok, chat_template=template)
    config = MllamaConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_global_layers=1,
                           attention_heads=2, image_size=32, patch_size=8, max_num_tiles=2,
                           supported_aspect_ratios=[[1, 1], [1, 2], [2, 1]], intermediate_layers_indices=[0, 1],
                           vision_output_dim=32 * 3),  # hidden × (1 + intermediate layers)
        text_config=dict(vocab_size=_vocab(tok, 1), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, cross_attention_layers=[1],
                         max_position_embeddings=TINY_CONTEXT, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
        image_token_index=tok.convert_tokens_to_ids("<|image|>"))
    return MllamaForConditionalGeneration(config), processor


def _build_gemma3() -> tuple[Any, Any]:
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3Processor
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    named = {"image_token": "<image_soft_token>", "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>"}
    tok = _tokenizer(["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"], named,
                     bos_token="<bos>", eos_token="<end_of_turn>", unk_token="<unk>", pad_token="<pad>")
    template = _template("<start_of_turn>{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n",
                         "<end_of_turn>\n", "<start_of_image>", "<start_of_turn>model\n", bos="{{ bos_token }}")
    images = Gemma3ImageProcessorPil(size={"height": 32, "width": 32})
    processor = Gemma3Processor(image_processor=images, tokenizer=tok, chat_template=template, image_seq_length=4)
    config = Gemma3Config(
        vision_config=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64,
                           num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8),
        text_config=dict(vocab_size=_vocab(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=32, query_pre_attn_scalar=32,
                         sliding_window=64, layer_types=["sliding_attention", "full_attention"],
                         max_position_embeddings=TINY_CONTEXT, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
        mm_tokens_per_image=4, boi_token_index=tok.boi_token_id, eoi_token_index=tok.eoi_token_id,
        image_token_index=tok.image_token_id)
    return Gemma3ForConditionalGeneration(config), processor


def _qwen_parts() -> tuple[Any, str, dict[str, Any], dict[str, Any]]:
    """Tokenizer, template, text config and vision token ids shared by Qwen2-VL and Qwen2.5-VL."""
    tok = _tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                      "<|image_pad|>", "<|video_pad|>"], eos_token="<|im_end|>", pad_token="<|endoftext|>")
    template = _template("<|im_start|>{{ message['role'] }}\n", "<|im_end|>\n",
                         "<|vision_start|><|image_pad|><|vision_end|>", "<|im_start|>assistant\n",
                         system="You are a helpful assistant.")
    ids = tok.convert_tokens_to_ids
    # M-RoPE: the sections sum to head_dim / 2 = (64 / 2) / 2 = 16.
    text = dict(vocab_size=_vocab(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=TINY_CONTEXT,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]},
                bos_token_id=ids("<|endoftext|>"), eos_token_id=ids("<|im_end|>"), pad_token_id=ids("<|endoftext|>"))
    vision_ids = dict(image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
                      vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"))
    return tok, template, text, vision_ids


def _build_qwen2_vl() -> tuple[Any, Any]:
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tok, template, text, vision_ids = _qwen_parts()
    pixels: dict[str, Any] = dict(min_pixels=28 * 28, max_pixels=56 * 56)  # multiples of 28: ≤ 4 tokens an image
    processor = Qwen2VLProcessor(image_processor=Qwen2VLImageProcessorPil(**pixels), tokenizer=tok,
                                 video_processor=Qwen2VLVideoProcessor(**pixels), chat_template=template)
    config = Qwen2VLConfig(text_config=text, **vision_ids,
                           vision_config=dict(depth=1, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2,
                                              patch_size=14, spatial_merge_size=2, temporal_patch_size=2))
    return Qwen2VLForConditionalGeneration(config), processor


def _build_qwen2_5_vl() -> tuple[Any, Any]:
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLVideoProcessor,
    )
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tok, template, text, vision_ids = _qwen_parts()
    pixels: dict[str, Any] = dict(min_pixels=28 * 28, max_pixels=56 * 56)
    processor = Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessorPil(**pixels), tokenizer=tok,
                                    video_processor=Qwen2VLVideoProcessor(**pixels), chat_template=template)
    config = Qwen2_5_VLConfig(text_config=text, **vision_ids,
                              vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                                                 out_hidden_size=64, patch_size=14, spatial_merge_size=2,
                                                 temporal_patch_size=2, window_size=56, fullatt_block_indexes=[1]))
    return Qwen2_5_VLForConditionalGeneration(config), processor


def _build_internvl() -> tuple[Any, Any]:
    from transformers import (
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLProcessor,
        InternVLVideoProcessor,
    )
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

    named = {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
             "video_token": "<video>"}
    tok = _tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>"], named, eos_token="<|im_end|>",
                     pad_token="<|endoftext|>")
    template = _template("<|im_start|>{{ message['role'] }}\n", "<|im_end|>\n", "<IMG_CONTEXT>\n",
                         "<|im_start|>assistant\n")
    # 32-px tiles, up to 2 and a thumbnail; patch 8 → 16 patches, downsampled by 0.5 → 4 tokens a tile.
    images = GotOcr2ImageProcessorPil(size={"height": 32, "width": 32}, crop_to_patches=True, min_patches=1,
                                      max_patches=2)
    processor = InternVLProcessor(image_processor=images, tokenizer=tok, image_seq_length=4, chat_template=template,
                                  video_processor=InternVLVideoProcessor(size={"height": 32, "width": 32}))
    config = InternVLConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=[32, 32], patch_size=[8, 8]),
        text_config=dict(model_type="qwen2", vocab_size=_vocab(tok), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=TINY_CONTEXT, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id),
        image_token_id=tok.context_image_token_id, image_seq_length=4, downsample_ratio=0.5)
    return InternVLForConditionalGeneration(config), processor


BUILDERS: dict[str, Callable[[], tuple[Any, Any]]] = {
    "llava": _build_llava,
    "paligemma": _build_paligemma,
    "idefics3": _build_idefics3,
    "mllama": _build_mllama,
    "qwen2_vl": _build_qwen2_vl,
    "qwen2_5_vl": _build_qwen2_5_vl,
    "internvl": _build_internvl,
    "gemma3": _build_gemma3,
}


def _wake_zero_tensors(model: Any) -> None:
    """Random init leaves some tensors exactly zero (Mllama's cross-attention gates, Gemma 3's
    multimodal projection), which would keep the image out of the logits: give them values."""
    import torch

    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.numel() and not param.any():
                if "gate" in name and param.numel() == 1:
                    param.fill_(0.5)
                else:
                    param.normal_(0.0, 0.02)


def _not_words(tokenizer: Any, rows: int) -> list[int]:
    """The output ids that are not a word or punctuation mark of the vocabulary (the end token is kept)."""
    allowed = set(tokenizer.convert_tokens_to_ids([*WORDS, *PUNCTUATION])) | {tokenizer.eos_token_id}
    return [index for index in range(rows) if index not in allowed]


def build_checkpoint(family: str, directory: Path) -> Path:
    """Build one tiny checkpoint into `directory` (seeded, so builds are reproducible). It is written beside
    it first and then moved in, so a process reading an older build never sees half of a new one."""
    import torch

    torch.manual_seed(0)
    model, processor = BUILDERS[family]()
    _wake_zero_tensors(model)
    tok = processor.tokenizer
    generation = model.generation_config
    generation.bos_token_id = tok.bos_token_id
    generation.eos_token_id = tok.eos_token_id
    generation.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    # Answers are words: every other row of the output layer (special and image tokens, newlines, PaliGemma's
    # <loc>/<seg> tokens, the padding rows) is never picked, or its word would decode to nothing or to markup
    generation.suppress_tokens = _not_words(tok, model.get_output_embeddings().weight.shape[0])
    generation.repetition_penalty = REPETITION_PENALTY
    generation.sequence_bias = [[[tok.eos_token_id], END_BIAS]]
    directory.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    model.save_pretrained(building)
    processor.save_pretrained(building)
    params = sum(p.numel() for p in model.parameters())
    (building / INFO).write_text(json.dumps({"family": family, "params": params, "format": TINY_FORMAT}))
    old = directory.parent / f"{building.name}.old"
    if directory.exists():
        directory.rename(old)
    building.rename(directory)
    shutil.rmtree(old, ignore_errors=True)
    return directory


def is_current(directory: Path) -> bool:
    """Whether `directory` holds a finished checkpoint of this module's format."""
    try:
        return json.loads((directory / INFO).read_text()).get("format") == TINY_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def tiny_spec(family: str) -> dict[str, Any]:
    """The catalogue entry of a tiny checkpoint, with `repo` relative to the catalogue file."""
    name, multi_image, stands_for = TINY_FAMILIES[family]
    return {
        "id": f"tiny-{family.replace('_', '-')}",
        "name": name,
        "repo": f"./{family}",
        "family": family,
        "min_gpu_gb": 0.5,
        "min_gpu_gb_source": "tiny",
        "dtype": "float32",
        "multi_image": multi_image,
        "languages": ["en"],
        "languages_note": "random weights: answers are word salad by design",
        "licence": "apache-2.0",
        "tiny": True,
        "budget": TINY_BUDGETS.get(family, {"context_tokens": TINY_CONTEXT}),
        "notes": f"Random-weight demo of the {stands_for} architecture, built offline; answers are random word salad.",
    }


def build_tiny_models(out_dir: str | Path, families: list[str] | None = None, force: bool = False) -> Path:
    """Build the tiny checkpoints that are missing or of an older format, and write `out_dir/models.yaml`;
    return its path."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers.utils import logging

    logging.disable_progress_bar()
    out = Path(out_dir)
    chosen = families or list(BUILDERS)
    for family in chosen:
        target = out / family
        if force or not is_current(target):
            build_checkpoint(family, target)
    catalogue = {"models": [tiny_spec(family) for family in chosen]}
    path = out / "models.yaml"
    header = "# Tiny random-weight checkpoints built by `vlm-playground tiny-models`; answers are random word salad.\n"
    path.write_text(header + yaml.safe_dump(catalogue, sort_keys=False, allow_unicode=True))
    return path
