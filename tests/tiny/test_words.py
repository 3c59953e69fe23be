"""The tiny checkpoints answer in whole words (random weights, readable word salad), rebuild when their format
changes, and keep what vLLM needs (text attention heads of 32, newline tokens)."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
from transformers import AutoConfig, AutoProcessor, GenerationConfig

from app.adapters import adapter_for
from app.core.generation import Finish, GenerationParams
from app.tiny.checkpoints import BUILDERS, INFO, TINY_FORMAT, build_tiny_models
from app.tiny.words import NEWLINES, PUNCTUATION, WORDS
from tests.helpers import solid

WORD_SET = set(WORDS)


def words_of(text: str) -> list[str]:
    """The answer split into words, punctuation marks set apart."""
    return re.findall(r"[^\W\d_]+|[^\w\s]", text)


def assert_word_salad(text: str, where: str) -> None:
    assert text.strip(), f"{where}: empty answer"
    assert "\ufffd" not in text, f"{where}: replacement characters in {text!r}"
    strange = [w for w in words_of(text) if w not in WORD_SET and w not in PUNCTUATION]
    assert not strange, f"{where}: not words of the vocabulary: {strange} in {text!r}"
    assert re.fullmatch(r"[a-z.,?! ]+", text), f"{where}: {text!r}"


@pytest.mark.parametrize("family", list(BUILDERS))
def test_every_architecture_answers_in_words(tiny_catalog, family):
    """Greedy and sampled answers of 40 tokens through the adapter's streamer: whole words, spaced, no bytes."""
    spec = tiny_catalog.get(f"tiny-{family.replace('_', '-')}")
    adapter = adapter_for(spec.family).load(spec, "cpu")
    for params in (GenerationParams(max_new_tokens=40), GenerationParams(max_new_tokens=40, temperature=1.0, seed=7)):
        pieces = list(adapter.generate([solid((200, 30, 30))], "What is in the picture?", params))
        assert isinstance(pieces[-1], Finish)
        text = "".join(pieces[:-1])
        assert_word_salad(text, f"{spec.id} at T={params.temperature}")
        assert len(words_of(text)) >= 5, f"{spec.id}: {text!r}"


@pytest.mark.parametrize("family", list(BUILDERS))
def test_what_random_weights_can_pick_decodes_to_words(tiny_dir, family):
    """Every output row the generation config leaves pickable is a word or a punctuation mark (or the end)."""
    processor = AutoProcessor.from_pretrained(tiny_dir / family)
    tokenizer = processor.tokenizer
    generation = GenerationConfig.from_pretrained(tiny_dir / family)
    rows = AutoConfig.from_pretrained(tiny_dir / family).get_text_config().vocab_size
    pickable = sorted(set(range(rows)) - set(generation.suppress_tokens) - {tokenizer.eos_token_id})
    assert len(pickable) == len(WORDS) + len(PUNCTUATION)
    assert {tokenizer.convert_ids_to_tokens(i) for i in pickable} == WORD_SET | set(PUNCTUATION)
    rng = random.Random(family)
    salad = tokenizer.decode([rng.choice(pickable) for _ in range(200)], skip_special_tokens=True)
    assert_word_salad(salad, family)


@pytest.mark.parametrize("family", list(BUILDERS))
def test_checkpoints_keep_what_vllm_needs(tiny_dir, family):
    text = AutoConfig.from_pretrained(tiny_dir / family).get_text_config()
    head = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    assert head == 32, "vLLM's CPU attention takes head sizes of 32 and up"
    assert text.max_position_embeddings >= 2048
    vocab = AutoProcessor.from_pretrained(tiny_dir / family).tokenizer.get_vocab()
    assert all(newline in vocab for newline in NEWLINES), "vLLM's Gemma 3 and PaliGemma processors look them up"


def test_a_prompt_of_vocabulary_words_reaches_the_model_word_by_word(tiny_dir):
    tokenizer = AutoProcessor.from_pretrained(tiny_dir / "llava").tokenizer
    prompt = "What is in the picture? Compare the two, please.\nUSER: answer briefly"
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert tokenizer.unk_token_id not in ids and len(ids) == 17
    # word-level: words come back spaced (": " is not among the marks a decoder joins)
    assert tokenizer.decode(ids) == "What is in the picture? Compare the two, please.\n USER : answer briefly"
    assert tokenizer.decode(tokenizer("a zyzzyva")["input_ids"], skip_special_tokens=True) == "a", "unknown words"


def test_a_checkpoint_of_an_older_format_is_rebuilt_and_a_current_one_kept(tmp_path: Path):
    build_tiny_models(tmp_path, ["llava"])
    info = tmp_path / "llava" / INFO
    assert json.loads(info.read_text())["format"] == TINY_FORMAT
    weights = tmp_path / "llava" / "model.safetensors"
    built = weights.stat().st_mtime_ns
    build_tiny_models(tmp_path, ["llava"])
    assert weights.stat().st_mtime_ns == built, "a current checkpoint is reused"
    info.write_text(json.dumps({"family": "llava", "params": 1}))  # as format 1 wrote it: no format
    (tmp_path / "llava" / "tokenizer.json").write_text("{}")  # and an old tokenizer
    build_tiny_models(tmp_path, ["llava"])
    assert json.loads(info.read_text())["format"] == TINY_FORMAT
    assert "WordLevel" in (tmp_path / "llava" / "tokenizer.json").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["llava", "models.yaml"], "no build folders left"
