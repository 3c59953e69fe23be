"""Remote-code adapters (MiniCPM-V, Molmo, moondream, InternVL2) against fakes of their APIs.

The real remote code and weights cannot be downloaded here; the fakes in tests/fakes/remote_code.py
mimic each documented API and echo what they receive. These tests run the adapters' real `load`
and `generate` and check the contract: what reaches the API and in which form, what comes back
(pieces, then one Finish), sampling settings, cancellation and load errors. Not model quality.
"""

from __future__ import annotations

import ast
import math
import threading
from typing import Any

import pytest
import torch
from PIL import Image

from app.adapters import Adapter, ModelLoadError, adapter_for
from app.adapters.internvl2 import TEMPLATE_TOKENS, closest_grid, pixel_values, tile_image, tiles_per_image
from app.adapters.minicpm_v import torch_functional_list
from app.adapters.moondream import ByteSafeDecoder, without_end_marker
from app.core.budget import InputTooLarge
from app.core.catalog import ModelSpec, load_catalog
from app.core.generation import Finish, GenerationParams
from tests.fakes.remote_code import (
    FakeHub,
    FakeInternVL2,
    FakeMiniCPMV2,
    FakeMiniCPMV26,
    FakeMolmo,
    FakeMolmoProcessor,
    FakeMoondream1,
    FakeMoondream2,
    FakeMoondream2Legacy,
    FakeMoondream2Sampling,
    FakeTokenizer,
    import_remote_code,
)
from tests.helpers import CATALOGUE, ROOT

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)
QUESTION = "What differs between them?"
GRID_OF_TWO = (2 * 448 + 8, 448)  # app.images.grid: two cells side by side with an 8-pixel gap
FAMILIES = ("minicpm_v", "molmo", "moondream", "internvl2")

# What each fixture returns: the loaded adapter, the fakes it talks to, and the fake Hub.
MiniCPM26 = tuple[Adapter, FakeMiniCPMV26, FakeHub]
MiniCPM2 = tuple[Adapter, FakeMiniCPMV2]
Molmo = tuple[Adapter, FakeMolmo, FakeMolmoProcessor, FakeHub]
Moondream2 = tuple[Adapter, FakeMoondream2, FakeHub]
InternVL2 = tuple[Adapter, FakeInternVL2, FakeHub]


def solid(color: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> Image.Image:
    return Image.new("RGB", size, color)


def make_spec(family: str, multi_image: bool = False, repo: str = "org/remote-model") -> ModelSpec:
    return ModelSpec(id=f"{family.replace('_', '-')}-test", repo=repo, family=family, min_gpu_gb=5.0,
                     multi_image=multi_image, trust_remote_code=True, runtime="hf-4.48")


def run(adapter: Adapter, images: list[Image.Image], prompt: str = QUESTION,
        cancel_after: int | None = None, **params: Any) -> tuple[list[str], Finish]:
    """Generate to the end; with `cancel_after`, set the cancel event after that many pieces."""
    cancel = threading.Event()
    items: list[Any] = []
    for item in adapter.generate(images, prompt, GenerationParams(**params), cancel):
        items.append(item)
        if cancel_after is not None and len(items) == cancel_after:
            cancel.set()
    *pieces, finish = items
    assert isinstance(finish, Finish)
    assert all(isinstance(piece, str) for piece in pieces)
    assert sum(isinstance(item, Finish) for item in items) == 1
    return pieces, finish


def catalogue_spec(model_id: str) -> ModelSpec:
    """The real catalogue entry (budget, capabilities, revision) of a remote-code model."""
    return load_catalog(CATALOGUE).get(model_id)


def greedy(max_new_tokens: int, *notes: str) -> dict[str, Any]:
    """The `applied` record of a greedy answer."""
    return {"max_new_tokens": max_new_tokens, "temperature": 0.0, "top_p": 1.0, "seed": None,
            "decoding": "greedy", "notes": list(notes)}


def n_tokens(tokenizer: FakeTokenizer, text: str) -> int:
    return len(tokenizer.encode(text))


def criteria_set(value: Any) -> bool:
    return value is not None and len(value) >= 1


# --- registry and import hygiene ------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_family_registers_an_adapter(family: str) -> None:
    cls = adapter_for(family)
    assert issubclass(cls, Adapter)
    assert family in cls.families


@pytest.mark.parametrize("family", FAMILIES)
def test_module_imports_no_torch_or_transformers_at_top_level(family: str) -> None:
    """The pinned runtimes import these modules: heavy imports must wait until a function runs."""
    source = ROOT / "app" / "adapters" / f"{family}.py"
    tree = ast.parse(source.read_text(encoding="utf-8"))
    for node in tree.body:
        names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        assert not [n for n in names if n.split(".")[0] in ("torch", "transformers", "numpy")], names


# --- MiniCPM-V-2_6 --------------------------------------------------------------------------------


@pytest.fixture
def minicpm26(monkeypatch: pytest.MonkeyPatch) -> MiniCPM26:
    fake = FakeMiniCPMV26()
    hub = FakeHub(monkeypatch, AutoModel=fake, AutoTokenizer=fake.tokenizer)
    spec = make_spec("minicpm_v", multi_image=True, repo="openbmb/MiniCPM-V-2_6")
    adapter = adapter_for("minicpm_v").load(spec, "cpu")
    return adapter, fake, hub


def test_minicpm_v26_loads_with_remote_code(minicpm26: MiniCPM26) -> None:
    adapter, fake, hub = minicpm26
    assert [(name, repo) for name, repo, _ in hub.calls] == [("AutoTokenizer", "openbmb/MiniCPM-V-2_6"),
                                                             ("AutoModel", "openbmb/MiniCPM-V-2_6")]
    model_kwargs = hub.kwargs("AutoModel")
    assert model_kwargs["trust_remote_code"] is True
    assert model_kwargs.get("dtype", model_kwargs.get("torch_dtype")) is torch.float32  # bf16 → fp32 on CPU
    assert hub.kwargs("AutoTokenizer")["trust_remote_code"] is True
    assert fake.moved_to == "cpu" and fake.in_eval


def test_minicpm_v26_sends_all_images_in_one_message_and_streams(
        minicpm26: MiniCPM26) -> None:
    adapter, fake, _ = minicpm26
    red, green = solid(RED, (64, 48)), solid(GREEN, (40, 80))
    pieces, finish = run(adapter, [red, green], max_new_tokens=128)

    call = fake.calls[-1]
    assert call["image"] is None and call["stream"] is True
    content = call["msgs"][0]["content"]
    assert call["msgs"][0]["role"] == "user" and len(call["msgs"]) == 1
    assert [type(part) for part in content[:2]] == [Image.Image, Image.Image]
    assert [part.size for part in content[:2]] == [(64, 48), (40, 80)] and content[2] == QUESTION
    text = "".join(pieces)
    assert len(pieces) > 1
    assert text == fake.answers[-1]
    assert "images=2" in text and "64x48@rgb(255,0,0)" in text and "40x80@rgb(0,255,0)" in text
    assert f"question={QUESTION}" in text
    tokenizer = fake.tokenizer
    assert finish == Finish(prompt_tokens=n_tokens(tokenizer, QUESTION),
                            completion_tokens=n_tokens(tokenizer, text), finish_reason="stop",
                            applied=greedy(128))


def test_minicpm_v26_greedy_streams_inside_the_sampling_config(minicpm26: MiniCPM26) -> None:
    """Problem 2: the real chat asserts `sampling or not stream`; greedy is do_sample=False, not sampling=False."""
    adapter, fake, _ = minicpm26
    pieces, finish = run(adapter, [solid(RED)], max_new_tokens=64, temperature=0)
    call = fake.calls[-1]
    assert call["sampling"] is True and call["stream"] is True and call["max_new_tokens"] == 64
    assert call["config"]["do_sample"] is False
    assert "sampling=False" in "".join(pieces)  # what generate was told
    fake.threads[-1].join(timeout=5)
    generate = fake.llm.generate_kwargs[-1]
    assert generate["do_sample"] is False and criteria_set(generate["stopping_criteria"])
    assert generate["num_beams"] == 1 and finish.applied == greedy(64)


def test_minicpm_v26_loads_on_a_torch_without_functional_list(monkeypatch: pytest.MonkeyPatch) -> None:
    """Problem 1: its resampler gets `List` only from `from torch.nn.functional import *` (gone in torch 2.7)."""
    import torch.nn.functional as functional

    monkeypatch.delattr(functional, "List", raising=False)
    with pytest.raises(NameError, match="List"):
        import_remote_code(FakeMiniCPMV26.remote_code)  # what loading the real code does on torch 2.14
    fake = FakeMiniCPMV26()
    FakeHub(monkeypatch, AutoModel=fake, AutoTokenizer=fake.tokenizer)
    adapter = adapter_for("minicpm_v").load(catalogue_spec("minicpm-v-2.6"), "cpu")
    assert functional.List is list  # put back before the model's code was imported
    pieces, _ = run(adapter, [solid(RED)], max_new_tokens=16)
    assert "".join(pieces) == fake.answers[-1]
    torch_functional_list()  # idempotent
    assert functional.List is list


def test_minicpm_v26_generation_error_reaches_the_caller_instead_of_hanging(minicpm26: MiniCPM26) -> None:
    """The remote stream thread has no error path: our wrapper ends the streamer and passes the error on."""
    adapter, fake, _ = minicpm26
    fake.llm.fail_with = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    outcome: dict[str, Any] = {}

    def consume() -> None:
        try:
            run(adapter, [solid(RED)], max_new_tokens=16)
        except BaseException as exc:  # recorded for the assertion below
            outcome["error"] = exc

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive(), "the stream hung after generate raised"
    assert isinstance(outcome.get("error"), torch.OutOfMemoryError)


def test_minicpm_v26_sends_images_whole_when_slices_would_overflow(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeMiniCPMV26()
    FakeHub(monkeypatch, AutoModel=fake, AutoTokenizer=fake.tokenizer)
    spec = ModelSpec.model_validate({**catalogue_spec("minicpm-v-2.6").model_dump(exclude={"budget"}),
                                     "budget": {"context_tokens": 2048}})
    adapter = adapter_for("minicpm_v").load(spec, "cpu")
    photos = [solid((40 * i, 90, 200), (1920, 1080)) for i in range(4)]  # ~600 tokens each when sliced
    _, finish = run(adapter, photos, max_new_tokens=256)
    assert fake.calls[-1]["max_slice_nums"] == 1
    assert finish.image_note and "without slices" in finish.image_note and "2,048-token context" in finish.image_note
    with pytest.raises(InputTooLarge, match="minicpm-v-2.6: .* tokens"):
        run(adapter, [solid(RED, (1920, 1080))] * 40, max_new_tokens=256)


def test_minicpm_v26_sampling_settings_and_seed(minicpm26: MiniCPM26) -> None:
    adapter, fake, _ = minicpm26
    pieces, _ = run(adapter, [solid(RED)], max_new_tokens=64, temperature=0.7, top_p=0.9, seed=1234)
    call = fake.calls[-1]
    assert call["sampling"] is True
    assert call["config"]["temperature"] == 0.7 and call["config"]["top_p"] == 0.9
    assert "sampling=True temperature=0.7 top_p=0.9" in "".join(pieces)
    assert torch.initial_seed() == 1234


def test_minicpm_v26_cancel_stops_the_generation_thread(minicpm26: MiniCPM26) -> None:
    adapter, fake, _ = minicpm26
    fake.padding_words, fake.delay_s = 400, 0.002
    pieces, finish = run(adapter, [solid(RED)], cancel_after=1, max_new_tokens=1000)
    fake.threads[-1].join(timeout=5)
    assert finish.finish_reason == "cancelled"
    record = fake.records[-1]
    assert record.stopped_by_criteria and record.new_tokens < 100
    assert len(pieces) == 1


def test_minicpm_v26_length_limit(minicpm26: MiniCPM26) -> None:
    adapter, fake, _ = minicpm26
    pieces, finish = run(adapter, [solid(RED)], max_new_tokens=5)
    assert finish.finish_reason == "length" and finish.completion_tokens == 5
    assert "".join(pieces).split() == fake.answers[-1].split()[:5]


# --- MiniCPM-V-2 ----------------------------------------------------------------------------------


@pytest.fixture
def minicpm2(monkeypatch: pytest.MonkeyPatch) -> MiniCPM2:
    fake = FakeMiniCPMV2()
    FakeHub(monkeypatch, AutoModel=fake, AutoTokenizer=fake.tokenizer)
    spec = make_spec("minicpm_v", multi_image=False, repo="openbmb/MiniCPM-V-2")
    return adapter_for("minicpm_v").load(spec, "cpu"), fake


def test_minicpm_v2_gets_one_grid_image_and_a_string_question(minicpm2: MiniCPM2) -> None:
    adapter, fake = minicpm2
    pieces, finish = run(adapter, [solid(RED), solid(GREEN)], max_new_tokens=128)
    call = fake.calls[-1]
    assert call["image"].size == GRID_OF_TWO
    assert call["msgs"] == [{"role": "user", "content": QUESTION}] and call["context"] is None
    text = "".join(pieces)
    assert len(pieces) >= 1  # streamed through the language model's generate
    assert text == fake.answers[-1] and f"image={GRID_OF_TWO[0]}x{GRID_OF_TWO[1]}@" in text
    assert finish.image_note and "grid" in finish.image_note
    assert finish.completion_tokens == n_tokens(fake.tokenizer, text) and finish.finish_reason == "stop"


def test_minicpm_v2_greedy_and_sampling(minicpm2: MiniCPM2) -> None:
    adapter, fake = minicpm2
    run(adapter, [solid(RED)], max_new_tokens=32)
    assert fake.calls[-1]["sampling"] is False and fake.calls[-1]["config"]["num_beams"] == 1
    assert fake.llm.generate_kwargs[-1]["do_sample"] is False
    run(adapter, [solid(RED)], max_new_tokens=32, temperature=0.5, top_p=0.8)
    assert fake.calls[-1]["sampling"] is True
    assert fake.calls[-1]["config"]["temperature"] == 0.5 and fake.calls[-1]["config"]["top_p"] == 0.8


def test_minicpm_v2_cancel(minicpm2: MiniCPM2) -> None:
    adapter, fake = minicpm2
    fake.padding_words, fake.delay_s = 400, 0.002
    _, finish = run(adapter, [solid(RED)], cancel_after=1, max_new_tokens=1000)
    assert finish.finish_reason == "cancelled"
    assert fake.records[-1].stopped_by_criteria and fake.records[-1].new_tokens < 100
    assert "generate" not in vars(fake.llm)  # the wrapper around llm.generate is gone again


# --- Molmo ----------------------------------------------------------------------------------------


@pytest.fixture
def molmo(monkeypatch: pytest.MonkeyPatch) -> Molmo:
    processor = FakeMolmoProcessor()
    fake = FakeMolmo(processor.tokenizer)
    hub = FakeHub(monkeypatch, AutoProcessor=processor, AutoModelForCausalLM=fake)
    adapter = adapter_for("molmo").load(make_spec("molmo", repo="allenai/Molmo-7B-D-0924"), "cpu")
    return adapter, fake, processor, hub


def test_molmo_processes_then_generates_from_a_batch(
        molmo: Molmo) -> None:
    adapter, fake, processor, hub = molmo
    assert hub.kwargs("AutoModelForCausalLM")["trust_remote_code"] is True
    assert hub.kwargs("AutoProcessor")["trust_remote_code"] is True
    pieces, finish = run(adapter, [solid(RED)], max_new_tokens=128)

    assert processor.calls[-1]["text"] == QUESTION
    assert [image.size for image in processor.calls[-1]["images"]] == [(64, 48)]
    call = fake.calls[-1]
    assert call["batch"]["input_ids"].dim() == 2 and call["batch"]["input_ids"].shape[0] == 1
    assert call["batch"]["images"].dim() == 4
    config = call["config"]
    assert config.stop_strings == "<|endoftext|>" and config.max_new_tokens == 128 and not config.do_sample
    assert call["kwargs"]["tokenizer"] is processor.tokenizer
    assert criteria_set(call["kwargs"]["stopping_criteria"])
    text = "".join(pieces)
    assert len(pieces) >= 1 and text == fake.answers[-1]
    assert "rgb(255,0,0)" in text and f"prompt=[User: {QUESTION} Assistant:]" in text
    prompt_length = call["batch"]["input_ids"].shape[1]
    assert finish.prompt_tokens == prompt_length  # exact: Molmo returns ids, prompt included
    # exact too, and one more than the text's tokens: the end-of-text token
    assert finish.completion_tokens == fake.records[-1].new_tokens == n_tokens(fake.tokenizer, text) + 1
    assert finish.finish_reason == "stop"


def test_molmo_counts_its_image_tokens_and_keeps_the_answer_inside_4096_positions(molmo: Molmo) -> None:
    adapter, fake, processor, _ = molmo
    _, finish = run(adapter, [solid(RED, (640, 480))], max_new_tokens=16)
    assert finish.prompt_tokens == 1 + 740 + n_tokens(fake.tokenizer, f" User: {QUESTION} Assistant:")
    fake.padding_words = 5000
    _, finish = run(adapter, [solid(RED, (300, 4000))], max_new_tokens=4096)  # would overrun the RoPE table
    assert finish.prompt_tokens + finish.applied["max_new_tokens"] == 4096
    assert "max_new_tokens lowered from 4,096" in finish.applied["notes"][0]


def test_molmo_takes_fewer_crops_for_a_long_prompt_or_refuses(molmo: Molmo) -> None:
    adapter, _, processor, _ = molmo
    long_prompt = "word " * 2000  # + 1,196 image tokens: more than 4,096 − 1,024 for the answer
    _, finish = run(adapter, [solid(RED, (1920, 1080))], prompt=long_prompt, max_new_tokens=1024)
    assert processor.calls[-1]["kwargs"] == {"max_crops": 4}
    assert finish.image_note and "at most 4 crops" in finish.image_note
    with pytest.raises(InputTooLarge, match="molmo-test: .* tokens"):
        run(adapter, [solid(RED)], prompt="word " * 4000, max_new_tokens=16)


def test_molmo_gets_a_grid_for_several_images(molmo: Molmo) -> None:
    adapter, _, processor, _ = molmo
    _, finish = run(adapter, [solid(RED), solid(GREEN), solid(BLUE)], max_new_tokens=16)
    assert len(processor.calls[-1]["images"]) == 1
    assert processor.calls[-1]["images"][0].size == (2 * 448 + 8, 2 * 448 + 8)  # 2×2 cells for three
    assert finish.image_note and "2×2 grid" in finish.image_note


def test_molmo_sampling_settings(molmo: Molmo) -> None:
    adapter, fake, _, _ = molmo
    pieces, _ = run(adapter, [solid(RED)], max_new_tokens=64, temperature=0.8, top_p=0.9, seed=7)
    config = fake.calls[-1]["config"]
    assert config.do_sample and config.temperature == 0.8 and config.top_p == 0.9
    assert "sampling=True temperature=0.8 top_p=0.9" in "".join(pieces)
    assert torch.initial_seed() == 7


def test_molmo_cancel_and_length(molmo: Molmo) -> None:
    adapter, fake, _, _ = molmo
    _, finish = run(adapter, [solid(RED)], max_new_tokens=4)
    assert finish.finish_reason == "length" and finish.completion_tokens == 4
    fake.padding_words, fake.delay_s = 400, 0.002
    _, finish = run(adapter, [solid(RED)], cancel_after=1, max_new_tokens=1000)
    assert finish.finish_reason == "cancelled"
    assert fake.records[-1].stopped_by_criteria and fake.records[-1].new_tokens < 100


def test_molmo_pixels_follow_the_model_dtype(monkeypatch: pytest.MonkeyPatch) -> None:
    processor = FakeMolmoProcessor()
    fake = FakeMolmo(processor.tokenizer)
    FakeHub(monkeypatch, AutoProcessor=processor, AutoModelForCausalLM=fake)
    adapter = adapter_for("molmo").load(make_spec("molmo"), "cpu")
    fake.dtype = torch.bfloat16  # as the model is on a GPU, where the entry's bfloat16 is kept
    run(adapter, [solid(RED)], max_new_tokens=8)
    assert fake.calls[-1]["batch"]["images"].dtype is torch.bfloat16


# --- moondream2 (query API) -----------------------------------------------------------------------


@pytest.fixture
def moondream2(monkeypatch: pytest.MonkeyPatch) -> Moondream2:
    """The catalogue's moondream2 entry (revision 2025-01-09) against a fake of that revision."""
    fake = FakeMoondream2()
    hub = FakeHub(monkeypatch, AutoModelForCausalLM=fake, AutoTokenizer=OSError("no tokenizer files"))
    adapter = adapter_for("moondream").load(catalogue_spec("moondream2"), "cpu")
    return adapter, fake, hub


def byte_tokens(text: str) -> int:
    return len(text.encode("utf-8"))


def test_moondream2_query_streams_with_settings(moondream2: Moondream2) -> None:
    adapter, fake, hub = moondream2
    assert [name for name, _, _ in hub.calls] == ["AutoModelForCausalLM"]  # its own tokenizer counts tokens
    assert hub.kwargs("AutoModelForCausalLM")["revision"] == "2025-01-09"
    assert fake.moved_to == "cpu" and getattr(fake, "cast_to", None) is None  # never cast from its fp16
    pieces, finish = run(adapter, [solid(RED)], max_new_tokens=64)
    call = fake.calls[-1]
    assert call["skill"] == "query" and call["question"] == QUESTION and call["stream"] is True
    assert call["image"].size == (64, 48)
    assert call["settings"]["max_tokens"] == 64
    text = "".join(pieces)
    assert text == fake.answers[-1][:64] and "64x48@rgb(255,0,0)" in text
    assert finish == Finish(prompt_tokens=730 + byte_tokens(QUESTION), completion_tokens=byte_tokens(text),
                            finish_reason="length", applied=greedy(64))


def test_moondream2_at_its_pinned_revision_is_recorded_greedy(moondream2: Moondream2) -> None:
    """Problem 4: 2025-01-09 reads settings.max_tokens only and decodes by argmax."""
    adapter, fake, _ = moondream2
    sampled, finish = run(adapter, [solid(RED)], max_new_tokens=300, temperature=0.8, top_p=0.9, seed=5)
    plain, _ = run(adapter, [solid(RED)], max_new_tokens=300)
    assert "".join(sampled) == "".join(plain)
    assert finish.applied == greedy(300, "greedy only: temperature 0.8 and top_p 0.9 ignored")
    assert adapter.spec.capabilities.sampling is False and adapter.spec.dtype == "float16"


def test_moondream2_mends_characters_split_across_tokens(moondream2: Moondream2) -> None:
    """Each token is decoded alone by the remote code: a character of several bytes must come out whole."""
    adapter, fake, _ = moondream2
    question = "Qu'est-ce que c'est, café 猫?"
    pieces, finish = run(adapter, [solid(RED)], prompt=question, max_new_tokens=500)
    text = "".join(pieces)
    assert "\ufffd" not in text and text == fake.answers[-1]
    assert "café 猫" in text and len(pieces) > 10
    assert fake.model.tokenizer.decode([0xE7]) == "\ufffd"  # what one byte of 猫 decodes to alone
    assert not isinstance(fake.model.tokenizer, ByteSafeDecoder)  # put back after the call


def test_moondream2_answer_stays_inside_its_2048_positions(moondream2: Moondream2) -> None:
    """The real cache overflows with an IndexError: max_new_tokens is lowered first, and said."""
    adapter, fake, _ = moondream2
    fake.padding_words = 2000
    pieces, finish = run(adapter, [solid(RED)], max_new_tokens=2048)
    assert finish.applied["max_new_tokens"] < 2048 - finish.prompt_tokens
    assert "max_new_tokens lowered from 2,048" in finish.applied["notes"][0]
    assert finish.finish_reason == "length" and finish.completion_tokens == finish.applied["max_new_tokens"]


def test_moondream2_captions_when_the_prompt_is_empty(moondream2: Moondream2) -> None:
    adapter, fake, _ = moondream2
    pieces, _ = run(adapter, [solid(RED)], prompt="", max_new_tokens=300)
    assert fake.calls[-1]["skill"] == "caption" and fake.calls[-1]["question"] == "<normal caption>"
    assert "".join(pieces) == fake.answers[-1]


def test_moondream2_grid_and_cancel(moondream2: Moondream2) -> None:
    adapter, fake, _ = moondream2
    _, finish = run(adapter, [solid(RED), solid(GREEN)], max_new_tokens=64)
    assert fake.calls[-1]["image"].size == GRID_OF_TWO and finish.image_note
    fake.padding_words = 400
    produced_before = fake.produced
    pieces, finish = run(adapter, [solid(RED)], cancel_after=2, max_new_tokens=1000)
    assert finish.finish_reason == "cancelled" and len(pieces) == 2
    assert fake.produced - produced_before <= 3  # the lazy generator was not driven on


def test_moondream2_length_limit(moondream2: Moondream2) -> None:
    adapter, fake, _ = moondream2
    pieces, finish = run(adapter, [solid(RED)], max_new_tokens=3)
    assert "".join(pieces) == fake.answers[-1][:3] and finish.completion_tokens == 3
    assert finish.finish_reason == "length"


def test_moondream2_sampling_revision_gets_temperature_and_top_p(monkeypatch: pytest.MonkeyPatch) -> None:
    """An entry pinned to 2025-04-14 or later may declare sampling: the settings then carry it."""
    fake = FakeMoondream2Sampling()
    FakeHub(monkeypatch, AutoModelForCausalLM=fake, AutoTokenizer=OSError("no tokenizer files"))
    spec = ModelSpec.model_validate({**catalogue_spec("moondream2").model_dump(exclude={"supports"}),
                                     "revision": "2025-04-14", "supports": {"sampling": True}})
    adapter = adapter_for("moondream").load(spec, "cpu")
    first, finish = run(adapter, [solid(RED)], max_new_tokens=64, temperature=0.6, top_p=0.5, seed=11)
    assert fake.calls[-1]["settings"] == {"max_tokens": 64, "temperature": 0.6, "top_p": 0.5}
    assert finish.applied["decoding"] == "sampling" and finish.applied["seed"] == 11
    again, _ = run(adapter, [solid(RED)], max_new_tokens=64, temperature=0.6, top_p=0.5, seed=11)
    assert "".join(first) == "".join(again)  # seeded through torch's global generator
    run(adapter, [solid(RED)], max_new_tokens=64)
    assert fake.calls[-1]["settings"]["temperature"] == 0.0  # greedy is asked for explicitly (default 0.5)


# --- moondream2 2024 revisions and moondream1 (answer_question API) -------------------------------


def load_legacy(monkeypatch: pytest.MonkeyPatch, fake: FakeMoondream2Legacy,
                repo: str = "vikhyatk/moondream2") -> tuple[Adapter, FakeHub]:
    hub = FakeHub(monkeypatch, AutoModelForCausalLM=fake, AutoTokenizer=fake.tokenizer)
    return adapter_for("moondream").load(make_spec("moondream", repo=repo), "cpu"), hub


def test_moondream2_legacy_answer_question(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeMoondream2Legacy()
    adapter, hub = load_legacy(monkeypatch, fake)
    assert hub.kwargs("AutoTokenizer")["trust_remote_code"] is True
    pieces, finish = run(adapter, [solid(RED), solid(GREEN)], max_new_tokens=64)
    call = fake.calls[-1]
    assert call["max_new_tokens"] == 64 and call["kwargs"]["do_sample"] is False
    assert call["kwargs"]["streamer"] is not None and criteria_set(call["kwargs"]["stopping_criteria"])
    assert f"Question: {QUESTION}" in call["prompt"]
    text = "".join(pieces)
    assert len(pieces) >= 1 and text == fake.answers[-1]
    assert "image_tokens=729" in text and finish.image_note
    assert finish.completion_tokens == n_tokens(fake.tokenizer, text)

    pieces, _ = run(adapter, [solid(RED)], max_new_tokens=64, temperature=0.9, top_p=0.7)
    kwargs = fake.calls[-1]["kwargs"]
    assert kwargs["do_sample"] is True and kwargs["temperature"] == 0.9 and kwargs["top_p"] == 0.7


def test_moondream1_end_marker_is_not_streamed(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeMoondream1()
    adapter, _ = load_legacy(monkeypatch, fake, repo="vikhyatk/moondream1")
    pieces, finish = run(adapter, [solid(RED)], max_new_tokens=200)
    call = fake.calls[-1]
    assert call["max_new_tokens"] == 256  # moondream1 sets it itself; passing ours would be a TypeError
    text = "".join(pieces)
    assert text.strip() == fake.answers[-1].removesuffix(" <") and not text.rstrip().endswith("<")
    assert finish.finish_reason == "stop"


def test_moondream1_token_limit_by_stopping_criterion(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeMoondream1()
    adapter, _ = load_legacy(monkeypatch, fake, repo="vikhyatk/moondream1")
    pieces, finish = run(adapter, [solid(RED)], max_new_tokens=5)
    assert fake.records[-1].new_tokens == 5 and fake.records[-1].stopped_by_criteria
    assert finish.completion_tokens == 5 and finish.finish_reason == "length"
    assert "".join(pieces).split() == fake.answers[-1].split()[:5]


def test_moondream_legacy_cancel(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeMoondream2Legacy()
    fake.padding_words, fake.delay_s = 400, 0.002
    adapter, _ = load_legacy(monkeypatch, fake)
    _, finish = run(adapter, [solid(RED)], cancel_after=1, max_new_tokens=1000)
    assert finish.finish_reason == "cancelled"
    assert fake.records[-1].stopped_by_criteria and fake.records[-1].new_tokens < 100


@pytest.mark.parametrize(("pieces", "expected"), [
    (["a b ", "c <"], "a b c "),
    (["a b <", "END>"], "a b "),
    (["x <", "3 y"], "x <3 y"),
    (["a <b> c"], "a <b> c"),
    (["done"], "done"),
])
def test_without_end_marker(pieces: list[str], expected: str) -> None:
    assert "".join(without_end_marker(pieces)) == expected


# --- InternVL2 ------------------------------------------------------------------------------------


@pytest.fixture
def internvl2(monkeypatch: pytest.MonkeyPatch) -> InternVL2:
    fake = FakeInternVL2()
    hub = FakeHub(monkeypatch, AutoModel=fake, AutoTokenizer=fake.tokenizer)
    spec = make_spec("internvl2", multi_image=True, repo="OpenGVLab/InternVL2-2B")
    return adapter_for("internvl2").load(spec, "cpu"), fake, hub


def test_internvl2_loads_slow_tokenizer(internvl2: InternVL2) -> None:
    _, _, hub = internvl2
    assert hub.kwargs("AutoTokenizer")["use_fast"] is False
    assert hub.kwargs("AutoTokenizer")["trust_remote_code"] is True
    assert hub.kwargs("AutoModel")["trust_remote_code"] is True


def test_internvl2_numbers_several_images_and_their_tiles(internvl2: InternVL2) -> None:
    adapter, fake, _ = internvl2
    images = [solid(RED, (448, 448)), solid(GREEN, (80, 40))]  # 1 tile; 2×1 tiles + thumbnail
    pieces, finish = run(adapter, images, max_new_tokens=128)
    call = fake.calls[-1]
    assert call["question"] == f"Image-1: <image>\nImage-2: <image>\n{QUESTION}"
    assert call["num_patches_list"] == [1, 3]
    assert tuple(call["pixel_values"].shape) == (4, 3, 448, 448)
    config = call["config"]
    assert config["do_sample"] is False and config["max_new_tokens"] == 128
    assert config["streamer"] is not None and criteria_set(config["stopping_criteria"])
    text = "".join(pieces)
    assert len(pieces) >= 1 and text == fake.answers[-1]
    assert "colours=rgb(255,0,0) rgb(0,255,0)" in text  # ImageNet normalisation undone by the fake
    tokenizer = fake.tokenizer
    question_tokens = n_tokens(tokenizer, call["question"].replace("<image>", ""))
    assert finish == Finish(prompt_tokens=question_tokens + TEMPLATE_TOKENS + 256 * 4 + 2 * 2,
                            completion_tokens=n_tokens(tokenizer, text), finish_reason="stop",
                            applied=greedy(128))


def test_internvl2_gives_images_fewer_tiles_to_fit_its_8k_context(internvl2: InternVL2) -> None:
    adapter, fake, _ = internvl2
    assert adapter.spec.input_budget.context_tokens == 8192  # the card's training context
    photos = [solid((20 * i, 60, 90), (1920, 1080)) for i in range(10)]  # 2 tiles + thumbnail each: 7,680
    _, finish = run(adapter, photos, max_new_tokens=512)
    call = fake.calls[-1]
    assert finish.prompt_tokens + 512 <= 8192
    assert len(call["pixel_values"]) == sum(call["num_patches_list"]) < 10 * 3
    assert finish.image_note and "tile" in finish.image_note and "8,192-token context" in finish.image_note
    with pytest.raises(InputTooLarge, match="internvl2-test: .* tokens"):
        run(adapter, [solid(RED, (448, 448))] * 40, max_new_tokens=512)


def test_internvl2_single_image_prompt(internvl2: InternVL2) -> None:
    adapter, fake, _ = internvl2
    run(adapter, [solid(BLUE, (896, 448))], max_new_tokens=32)
    assert fake.calls[-1]["question"] == f"<image>\n{QUESTION}"
    assert fake.calls[-1]["num_patches_list"] == [3]


def test_internvl2_sampling_cancel_and_length(internvl2: InternVL2) -> None:
    adapter, fake, _ = internvl2
    image = solid(RED, (448, 448))
    run(adapter, [image], max_new_tokens=32, temperature=0.4, top_p=0.95, seed=99)
    config = fake.calls[-1]["config"]
    assert config["do_sample"] is True and config["temperature"] == 0.4 and config["top_p"] == 0.95
    assert torch.initial_seed() == 99
    _, finish = run(adapter, [image], max_new_tokens=6)
    assert finish.finish_reason == "length" and finish.completion_tokens == 6
    fake.padding_words, fake.delay_s = 400, 0.002
    _, finish = run(adapter, [image], cancel_after=1, max_new_tokens=1000)
    assert finish.finish_reason == "cancelled"
    assert fake.records[-1].stopped_by_criteria and fake.records[-1].new_tokens < 100


def test_internvl2_pixels_follow_the_model_dtype(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeInternVL2()
    FakeHub(monkeypatch, AutoModel=fake, AutoTokenizer=fake.tokenizer)
    adapter = adapter_for("internvl2").load(make_spec("internvl2", multi_image=True), "cpu")
    fake.dtype = torch.bfloat16  # as the model is on a GPU, where the entry's bfloat16 is kept
    run(adapter, [solid(RED, (448, 448))], max_new_tokens=8)
    assert fake.calls[-1]["pixel_values"].dtype is torch.bfloat16


# --- InternVL2 tiling -----------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "max_num", "grid", "tiles"), [
    ((448, 448), 12, (1, 1), 1),      # one tile: no thumbnail
    ((100, 100), 12, (1, 1), 1),      # small square stays one tile
    ((896, 448), 12, (2, 1), 3),      # two tiles + thumbnail
    ((448, 1344), 12, (1, 3), 4),     # portrait
    ((1000, 1000), 12, (3, 3), 10),   # large square: the biggest equal-ratio grid
    ((1000, 1000), 4, (2, 2), 5),
    ((1000, 100), 6, (6, 1), 7),      # max_num caps the columns
    ((4000, 100), 12, (12, 1), 13),
])
def test_internvl2_tiling(size: tuple[int, int], max_num: int, grid: tuple[int, int], tiles: int) -> None:
    assert closest_grid(*size, max_num=max_num) == grid
    image = solid(RED, size)
    values = pixel_values(image, max_num=max_num)
    assert tuple(values.shape) == (tiles, 3, 448, 448) and values.dtype == torch.float32


def test_internvl2_grid_never_exceeds_max_num() -> None:
    for width in (50, 300, 448, 1000, 3000):
        for height in (50, 300, 448, 1000, 3000):
            for max_num in (1, 2, 6, 12):
                columns, rows = closest_grid(width, height, max_num=max_num)
                assert 1 <= columns * rows <= max_num


def test_internvl2_tiles_in_reading_order_then_thumbnail() -> None:
    image = Image.new("RGB", (896, 448), RED)
    image.paste(Image.new("RGB", (448, 448), BLUE), (448, 0))
    tiles = tile_image(image)
    assert [tile.size for tile in tiles] == [(448, 448)] * 3
    assert tiles[0].getpixel((224, 224)) == RED and tiles[1].getpixel((224, 224)) == BLUE
    assert tiles[2].getpixel((10, 224)) == RED and tiles[2].getpixel((437, 224)) == BLUE  # the whole image


def test_internvl2_imagenet_normalisation() -> None:
    values = pixel_values(solid((255, 255, 255), (448, 448)))
    expected = [(1 - m) / s for m, s in zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), strict=True)]
    for channel, value in enumerate(expected):
        assert math.isclose(float(values[0, channel].mean()), value, rel_tol=1e-5)


def test_internvl2_tiles_per_image() -> None:
    assert [tiles_per_image(n) for n in (1, 2, 3, 4, 30)] == [12, 12, 8, 6, 1]


# --- load errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("family", "others", "model_class"), [
    ("minicpm_v", {"AutoTokenizer": FakeTokenizer()}, "AutoModel"),
    ("molmo", {"AutoProcessor": FakeMolmoProcessor()}, "AutoModelForCausalLM"),
    ("moondream", {}, "AutoModelForCausalLM"),
    ("internvl2", {"AutoTokenizer": FakeTokenizer()}, "AutoModel"),
])
def test_remote_code_import_error_names_the_runtime(monkeypatch: pytest.MonkeyPatch, family: str,
                                                    others: dict[str, Any], model_class: str) -> None:
    error = ImportError("This modeling file requires the following packages that were not found in your "
                        "environment: flash_attn")
    FakeHub(monkeypatch, **others, **{model_class: error})
    with pytest.raises(ModelLoadError) as raised:
        adapter_for(family).load(make_spec(family, repo="org/needs-flash-attn"), "cpu")
    message = str(raised.value)
    assert "org/needs-flash-attn" in message and "runtime 'hf-4.48'" in message and "flash_attn" in message
    assert isinstance(raised.value.__cause__, ImportError)


def test_moondream_legacy_without_tokenizer_is_a_load_error(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeHub(monkeypatch, AutoModelForCausalLM=FakeMoondream1(),
            AutoTokenizer=OSError("vikhyatk/moondream1 does not appear to have a file named tokenizer.json"))
    with pytest.raises(ModelLoadError, match="tokenizer.json"):
        adapter_for("moondream").load(make_spec("moondream", repo="vikhyatk/moondream1"), "cpu")
