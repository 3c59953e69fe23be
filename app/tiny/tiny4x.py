"""A tiny random-weight LLaVA-1.5 checkpoint built with transformers 4.49–4.55, for pinned runtimes.

A checkpoint saved by transformers 5 does not load correctly in 4.x, so a pinned runtime's test
model must be built by that runtime's own transformers: `<runtime python> -m app.tiny4x OUT_DIR`.
This module imports only the standard library, tokenizers, transformers and torch (never the
app's transformers-5 code). Differences from `app.tiny`: `extra_special_tokens` is a dict,
unnamed specials go to `additional_special_tokens`, the tokenizer returns no `token_type_ids`
(4.x LLaVA `generate` rejects them), and the image processor is the slow `CLIPImageProcessor`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from app.tiny.checkpoints import CORPUS as _CORPUS  # app.tiny imports transformers only inside its builders

MODEL_ID = "tiny-llava-4x"


def _tokenizer(specials: list[str], named: dict[str, str], **tokens: Any) -> Any:
    """A byte-level BPE trained on `_CORPUS`; `named` become attributes like `tokenizer.image_token`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    every_special = list(dict.fromkeys([*specials, *named.values()]))
    bpe = Tokenizer(models.BPE(unk_token=tokens.get("unk_token")))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=420, special_tokens=every_special, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(_CORPUS, trainer)
    unnamed = [t for t in every_special if t not in tokens.values() and t not in named.values()]
    extra: dict[str, Any] = {"extra_special_tokens": named}
    if unnamed:
        extra["additional_special_tokens"] = unnamed
    return PreTrainedTokenizerFast(tokenizer_object=bpe, model_input_names=["input_ids", "attention_mask"],
                                   **extra, **tokens)


def _template() -> str:
    """LLaVA-1.5's chat layout: `USER: <image>\\n... ASSISTANT:`, images before the text."""
    each = "{% for c in message['content'] %}{% if c['type'] == "
    each_image = each + "'image' %}<image>\n{% endif %}{% endfor %}"
    each_text = each + "'text' %}{{ c['text'] }}{% endif %}{% endfor %}"
    return ("{% for message in messages %}{{ message['role'].upper() }}: "
            "{% if message['content'] is string %}{{ message['content'] }}{% else %}" + each_image + each_text
            + "{% endif %} {% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}")


def _vocab(tokenizer: Any) -> int:
    """Embedding rows for the tokenizer, rounded up to a multiple of 64."""
    return -(-len(tokenizer) // 64) * 64


def build_llava() -> tuple[Any, Any]:
    """A LLaVA-1.5 model (CLIP vision tower, Llama text model) and its processor, random weights."""
    from transformers import CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    tok = _tokenizer(["<unk>", "<s>", "</s>", "<pad>"], {"image_token": "<image>"},
                     bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>")
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    # 32 px / patch 8 = 16 patches, +1 CLS token, minus 1 for the "default" feature strategy.
    processor = LlavaProcessor(image_processor=images, tokenizer=tok, patch_size=8, chat_template=_template(),
                               vision_feature_select_strategy="default", num_additional_image_tokens=1)
    text = dict(model_type="llama", vocab_size=_vocab(tok), hidden_size=64, intermediate_size=128,
                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                max_position_embeddings=1024, rope_theta=10000.0, bos_token_id=tok.bos_token_id,
                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    config = LlavaConfig(
        vision_config=dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8,
                           projection_dim=32),
        text_config=text, image_token_index=tok.image_token_id, image_seq_length=16,
        vision_feature_select_strategy="default", vision_feature_layer=-2)
    return LlavaForConditionalGeneration(config), processor


def _wake_zero_tensors(model: Any) -> None:
    """Random init leaves some tensors exactly zero; refill them so every input reaches the logits."""
    import torch

    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.numel() and not parameter.any():
                parameter.normal_(0.0, 0.02)


def _built_by_this_version(directory: Path) -> bool:
    import transformers

    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    same_version = config.get("transformers_version") == transformers.__version__
    return same_version and (directory / "tokenizer.json").exists()


def build(out_dir: str | Path, force: bool = False) -> Path:
    """Write the tiny LLaVA checkpoint into `out_dir` (kept when this transformers already built it)."""
    directory = Path(out_dir)
    if not force and _built_by_this_version(directory):
        return directory
    import torch

    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model, processor = build_llava()
    _wake_zero_tensors(model)
    tok = processor.tokenizer
    generation = model.generation_config
    generation.bos_token_id, generation.eos_token_id = tok.bos_token_id, tok.eos_token_id
    generation.pad_token_id = tok.pad_token_id
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def spec(directory: str | Path, runtime: str = "default") -> dict[str, Any]:
    """The catalogue entry for the checkpoint in `directory`, served by `runtime`."""
    return {"id": MODEL_ID, "name": "Tiny LLaVA-1.5 (transformers 4.x)",
            "repo": str(Path(directory).resolve()), "original_repo": "llava-hf/llava-1.5-7b-hf",
            "family": "llava", "min_gpu_gb": 0.5, "min_gpu_gb_source": "tiny", "dtype": "float32",
            "multi_image": True, "tiny": True, "runtime": runtime}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.tiny4x", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--force", action="store_true", help="rebuild an existing checkpoint")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    import transformers

    started = time.perf_counter()
    directory = build(args.out_dir, force=args.force)
    print(f"wrote {directory} with transformers {transformers.__version__} "
          f"({time.perf_counter() - started:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
