"""Per-model input budgets and capabilities on the real transformers code path (tiny checkpoints).

Before generating, an adapter knows what the images cost in tokens: it downsizes (Qwen2-VL's
dynamic resolution), combines into a grid, lowers max_new_tokens, or refuses with a message naming
the model, the tokens and the limit — and the Finish says what was done and what was applied.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from app.adapters import adapter_for
from app.core.budget import FAMILY_DEFAULTS, InputTooLarge, apply_capabilities
from app.core.budget import Capabilities as Caps
from app.core.catalog import ModelSpec
from app.core.generation import Finish, GenerationParams
from tests.helpers import CATALOGUE, solid

PHOTO = (4032, 3024)  # a phone photo: 12.2 MP


def tiny_spec(tiny_dir: Path, family: str, **changes) -> ModelSpec:
    from app.tiny.checkpoints import tiny_spec as entry

    raw = entry(family)
    raw["repo"] = str(tiny_dir / family)
    raw.update(changes)
    return ModelSpec.model_validate(raw)


def run(adapter, images, prompt="Compare the images.", **params) -> tuple[str, Finish]:
    items = list(adapter.generate(images, prompt, GenerationParams(**{"max_new_tokens": 4, **params})))
    finish = items[-1]
    assert isinstance(finish, Finish)
    return "".join(items[:-1]), finish


@pytest.fixture(scope="module")
def qwen_like_the_hub(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Qwen2-VL with the real Qwen2-VL-2B-Instruct preprocessor ceiling: 12,845,056 pixels."""
    copy = tmp_path_factory.mktemp("qwen-hub") / "qwen2_vl"
    shutil.copytree(tiny_dir / "qwen2_vl", copy)
    config_path = copy / "processor_config.json"
    config = json.loads(config_path.read_text())
    config["image_processor"]["size"] = {"shortest_edge": 3136, "longest_edge": 12845056}
    config_path.write_text(json.dumps(config))
    return copy


def test_qwen2_vl_plans_with_the_catalogue_pixel_budget_not_the_checkpoints_ceiling(qwen_like_the_hub: Path):
    """Problem 5: the checkpoint's own max_pixels turns one phone photo into ~15,500 image tokens."""
    default = FAMILY_DEFAULTS["qwen2_vl"].budget
    spec = ModelSpec(id="qwen-real-budget", repo=str(qwen_like_the_hub), family="qwen2_vl", min_gpu_gb=0.5,
                     multi_image=True, dtype="float32", tiny=True)
    assert spec.input_budget.max_pixels == default.max_pixels == 1280 * 28 * 28
    adapter = adapter_for("qwen2_vl").load(spec, "cpu")
    call = adapter.prepare([solid((10, 120, 200), PHOTO)], "Describe it.", GenerationParams(max_new_tokens=4))
    grid_thw = call.options["inputs"]["image_grid_thw"]
    image_tokens = int(grid_thw.prod()) // 4
    assert image_tokens <= 1280, f"{image_tokens} image tokens for one photo"
    assert image_tokens > 1000  # the budget is used, not crushed
    _, finish = run(adapter, [solid((10, 120, 200), PHOTO)])
    assert 1000 < finish.prompt_tokens < 1280 + 40


def test_qwen2_vl_downsizes_images_that_would_overflow_its_context(tiny_dir: Path):
    spec = tiny_spec(tiny_dir, "qwen2_vl", budget={"context_tokens": 160, "min_pixels": 784, "max_pixels": 16 * 784})
    adapter = adapter_for("qwen2_vl").load(spec, "cpu")
    images = [solid((30 * i, 200, 90), (112, 112)) for i in range(8)]  # 16 tokens each at full budget
    full = adapter.encode(images, "Compare the images.")
    assert int(full["input_ids"].shape[1]) > 160 - 48  # would not leave room for the answer
    text, finish = run(adapter, images, max_new_tokens=48)
    assert finish.prompt_tokens <= 160 - 48
    assert finish.image_note and "downsized" in finish.image_note and "160-token context" in finish.image_note
    assert finish.applied["max_new_tokens"] == 48


def test_llava_combines_images_into_a_grid_instead_of_overflowing(tiny_dir: Path):
    """Problem 6: LLaVA-1.5's images cost a fixed count each (576 on the real one, 16 here)."""
    spec = tiny_spec(tiny_dir, "llava", budget={"context_tokens": 160})
    adapter = adapter_for("llava").load(spec, "cpu")
    images = [solid((25 * i, 40, 200), (48, 48)) for i in range(8)]
    assert int(adapter.encode(images, "Compare the images.")["input_ids"].shape[1]) > 80
    _, finish = run(adapter, images, max_new_tokens=80)
    assert finish.image_note and "8 images were combined into one 3×3 grid" in finish.image_note
    assert "160-token context" in finish.image_note
    assert finish.prompt_tokens + 80 <= 160


def test_a_prompt_that_cannot_fit_is_refused_before_generating(tiny_dir: Path):
    spec = tiny_spec(tiny_dir, "llava", budget={"context_tokens": 64})
    adapter = adapter_for("llava").load(spec, "cpu")
    with pytest.raises(InputTooLarge) as refused:
        next(iter(adapter.generate([solid((1, 2, 3))], "hello world " * 40, GenerationParams(max_new_tokens=8))))
    message = str(refused.value)
    assert message.startswith("tiny-llava:") and "tokens" in message and "56" in message  # 64 − room of 8


def test_max_new_tokens_is_lowered_to_what_the_context_leaves_and_said(tiny_dir: Path):
    spec = tiny_spec(tiny_dir, "llava", budget={"context_tokens": 128})
    adapter = adapter_for("llava").load(spec, "cpu")
    _, finish = run(adapter, [solid((1, 2, 3))], max_new_tokens=500)
    room = 128 - finish.prompt_tokens
    assert finish.applied["max_new_tokens"] == room
    assert any(f"lowered from 500 to {room}" in note for note in finish.applied["notes"])
    assert finish.completion_tokens <= room


def test_paligemma_pt_builds_its_prompt_without_a_chat_template(tiny_dir: Path):
    """Problem 3: pt checkpoints have no chat template; the processor's own layout is used."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_dir / "paligemma")
    assert processor.chat_template is None, "the tiny PaliGemma must not have a template its real one lacks"
    with pytest.raises(ValueError):  # what the old adapter ran into on the real checkpoints
        processor.apply_chat_template([{"role": "user", "content": [{"type": "text", "text": "x"}]}],
                                      tokenize=False, add_generation_prompt=True)
    adapter = adapter_for("paligemma").load(tiny_spec(tiny_dir, "paligemma"), "cpu")
    inputs = adapter.encode([solid((1, 2, 3))], "What colour is it?")
    tokenizer = processor.tokenizer
    ids = inputs["input_ids"][0].tolist()
    seq = processor.image_seq_length
    assert ids[:seq] == [tokenizer.convert_tokens_to_ids("<image>")] * seq
    assert ids[seq] == tokenizer.bos_token_id
    assert tokenizer.decode(ids[seq + 1:]) == "answer en What colour is it?\n"
    text, finish = run(adapter, [solid((1, 2, 3))], "caption en")
    assert finish.prompt_tokens == len(tokenizer("caption en\n", add_special_tokens=False)["input_ids"]) + seq + 1


def test_a_greedy_only_model_records_greedy_even_when_sampling_was_asked(tiny_dir: Path):
    spec = tiny_spec(tiny_dir, "qwen2_vl", supports={"sampling": False})
    adapter = adapter_for("qwen2_vl").load(spec, "cpu")
    sampled_text, sampled = run(adapter, [solid((9, 9, 9))], temperature=1.5, top_p=0.9, seed=3, max_new_tokens=10)
    greedy_text, greedy = run(adapter, [solid((9, 9, 9))], max_new_tokens=10)
    assert sampled_text == greedy_text
    assert sampled.applied["decoding"] == "greedy" and sampled.applied["temperature"] == 0.0
    assert sampled.applied["seed"] is None
    assert sampled.applied["notes"] == ["greedy only: temperature 1.5 and top_p 0.9 ignored"]
    assert greedy.applied["notes"] == []


def test_capabilities_decide_what_is_applied():
    assert apply_capabilities(64, 0.8, 0.9, 5, Caps()).as_dict() == {
        "max_new_tokens": 64, "temperature": 0.8, "top_p": 0.9, "seed": 5, "decoding": "sampling", "notes": []}
    no_seed = apply_capabilities(64, 0.8, 0.9, 5, Caps(seed=False))
    assert no_seed.seed is None and no_seed.notes == ("seed 5 ignored: this model's sampling cannot be seeded",)
    assert apply_capabilities(64, 0.0, 0.5, 5, Caps()).seed is None  # greedy does not depend on a seed


def test_every_catalogued_model_has_a_budget_and_capabilities():
    from app.core.catalog import load_catalog

    catalog = load_catalog(CATALOGUE)
    for spec in catalog.models:
        if spec.available and not spec.is_remote:
            assert spec.input_budget.context_tokens, spec.id
            assert spec.multi_image or spec.input_budget.max_images == 1, spec.id
    assert catalog.get("moondream2").capabilities.sampling is False  # the pinned 2025-01-09 decodes by argmax
    assert catalog.get("qwen2-vl-2b").input_budget.max_pixels == 1280 * 28 * 28


async def test_a_worker_refuses_what_cannot_fit_with_a_400_naming_model_tokens_and_limit(tiny_dir: Path):
    import httpx

    from app.core.protocol import ImagePart, user_message
    from app.pool.client import BackendError, OpenAIBackend
    from app.worker.server import WorkerState, create_worker_app
    from tests.helpers import png_bytes

    spec = tiny_spec(tiny_dir, "llava", budget={"context_tokens": 64})
    state = WorkerState(spec, "cpu")
    state.adapter = adapter_for("llava").load(spec, "cpu")
    state.status = "ready"
    transport = httpx.ASGITransport(app=create_worker_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
        images = [ImagePart(png_bytes((10, 20, 30)))]
        body = {"model": spec.id, "messages": user_message("hello world " * 40, images), "max_tokens": 8}
        response = await client.post("/v1/chat/completions", json=body)
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "context_length_exceeded"
        assert error["message"].startswith("tiny-llava: ") and "56 its context leaves" in error["message"]
        backend = OpenAIBackend("http://worker/v1", spec.id, client=client)
        with pytest.raises(BackendError) as failed:
            async for _ in backend.stream("hello world " * 40, images, GenerationParams(max_new_tokens=8)):
                pass
        assert failed.value.status == 400 and str(failed.value) == error["message"]
        pieces = [p async for p in backend.stream("Hi.", images, GenerationParams(max_new_tokens=4))]
        assert isinstance(pieces[-1], Finish) and pieces[-1].applied["decoding"] == "greedy"
