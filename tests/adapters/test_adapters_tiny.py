"""Every tiny architecture through its adapter: 1 and 2 images, images reach the logits, seeds repeat."""

from __future__ import annotations

import pytest
import torch

from app.adapters import adapter_for
from app.core.generation import Finish, GenerationParams
from app.core.images import grid, prepare_for_model
from app.tiny.checkpoints import BUILDERS
from tests.helpers import solid

TINY_IDS = [f"tiny-{family.replace('_', '-')}" for family in BUILDERS]


@pytest.fixture(scope="module")
def adapters(tiny_catalog):
    return {spec.id: adapter_for(spec.family).load(spec, "cpu") for spec in tiny_catalog.models}


def run(adapter, images, prompt="Compare the images.", **params):
    pieces = list(adapter.generate(images, prompt, GenerationParams(**{"max_new_tokens": 8, **params})))
    finish = pieces[-1]
    assert isinstance(finish, Finish)
    text = "".join(p for p in pieces[:-1])
    return text, finish


@pytest.mark.parametrize("model_id", TINY_IDS)
@pytest.mark.parametrize("count", [1, 2])
def test_answers_with_one_and_two_images(adapters, two_images, model_id, count):
    adapter = adapters[model_id]
    text, finish = run(adapter, two_images[:count])
    assert finish.prompt_tokens > 0 and 1 <= finish.completion_tokens <= 8
    assert text, "the stream carried text"
    combined = count == 2 and not adapter.spec.multi_image
    assert (finish.image_note is not None) == combined


@pytest.mark.parametrize("model_id", TINY_IDS)
def test_images_reach_the_model(adapters, model_id):
    """Different pixels, same prompt: the next-token logits differ."""
    adapter = adapters[model_id]

    def logits(images):
        prepared = prepare_for_model(images, adapter.spec.input_budget.max_images).images
        inputs = adapter.encode(prepared, "Compare the images.")
        with torch.inference_mode():
            return adapter.model(**inputs).logits[0, -1]

    red_green = logits([solid((200, 30, 30)), solid((20, 200, 90), (40, 80))])
    blue_yellow = logits([solid((0, 0, 255)), solid((255, 255, 0), (40, 80))])
    assert not torch.allclose(red_green, blue_yellow)
    # the second image matters too (for single-image models, through the grid)
    red_blue = logits([solid((200, 30, 30)), solid((0, 0, 255), (40, 80))])
    assert not torch.allclose(red_green, red_blue)


@pytest.mark.parametrize("model_id", TINY_IDS)
def test_same_seed_same_text_when_sampling(adapters, two_images, model_id):
    adapter = adapters[model_id]
    first, _ = run(adapter, two_images, temperature=1.0, top_p=0.95, seed=7, max_new_tokens=12)
    again, _ = run(adapter, two_images, temperature=1.0, top_p=0.95, seed=7, max_new_tokens=12)
    assert first == again


def test_different_seeds_sample_differently(adapters, two_images):
    adapter = adapters["tiny-qwen2-vl"]
    texts = {run(adapter, two_images, temperature=1.5, seed=seed, max_new_tokens=12)[0] for seed in range(4)}
    assert len(texts) > 1


def test_grid_fallback_combines_images_and_says_so(two_images):
    prepared = prepare_for_model(two_images + [solid((1, 2, 3))], max_images=1)
    assert len(prepared.images) == 1
    assert prepared.images[0].size == (2 * 448 + 8, 2 * 448 + 8)
    assert "3 images were combined into one 2×2 grid" in prepared.note
    assert prepare_for_model(two_images, max_images=None).note is None
    # the grid keeps each image's colour in its cell
    cell = grid([solid((255, 0, 0), (10, 10)), solid((0, 0, 255), (10, 10))], cell=10, gap=0)
    assert cell.getpixel((2, 2)) == (255, 0, 0) and cell.getpixel((12, 2)) == (0, 0, 255)


def test_paligemma_prompt_gets_a_task_prefix(adapters):
    adapter = adapters["tiny-paligemma"]
    assert "answer en What colour?" in adapter.build_prompt([solid((1, 1, 1))], "What colour?")
    assert adapter.build_prompt([solid((1, 1, 1))], "caption en").endswith("caption en")


def test_cancel_stops_generation_early(adapters, two_images):
    import threading

    adapter = adapters["tiny-qwen2-vl"]
    cancel = threading.Event()
    pieces = []
    for piece in adapter.generate(two_images, "Compare.", GenerationParams(max_new_tokens=400), cancel):
        pieces.append(piece)
        if len(pieces) == 3:
            cancel.set()
    finish = pieces[-1]
    assert finish.finish_reason == "cancelled" and finish.completion_tokens < 400
