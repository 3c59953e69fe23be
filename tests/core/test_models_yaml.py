"""The shipped catalogue holds every model people asked to compare, with the published figures."""

from __future__ import annotations

import pytest

from app.adapters import adapter_for
from app.core.catalog import load_catalog
from tests.helpers import ROOT

PUBLISHED = {  # repo: (measured min GPU RAM, scores)
    "openbmb/MiniCPM-V-2": (7.88, {"mmmu": 38.2, "mathvista": 39.8, "mmstar": 39.1, "docvqa": 71.9, "textvqa": 74.1}),
    "Qwen/Qwen2-VL-2B-Instruct": (13.70, {"mmmu": 41.1, "mathvista": 47.8, "mmstar": 47.5, "docvqa": 90.1,
                                          "textvqa": 79.7}),
    "vikhyatk/moondream2": (3.87, {"mmmu": 32.4, "mathvista": 24.3, "mmstar": 40.3, "docvqa": 70.5,
                                   "textvqa": 65.2}),
    "google/paligemma-3b-pt-448": (6.72, {"mmmu": 34.9, "mathvista": 28.7, "mmstar": 48.3, "docvqa": 32.2,
                                          "textvqa": 56.0}),
    "HuggingFaceTB/SmolVLM-Instruct": (5.02, {"mmmu": 38.8, "mathvista": 44.6, "mmstar": 42.1, "docvqa": 81.6,
                                              "textvqa": 72.7}),
    "OpenGVLab/InternVL2-2B": (10.52, {"mmmu": 34.3, "mathvista": 46.3, "mmstar": 49.8, "docvqa": 86.9,
                                       "textvqa": 73.4}),
}
ALL_REPOS = {
    "openbmb/MiniCPM-V-2_6", "openbmb/MiniCPM-V-2", "Qwen/Qwen2-VL-7B-Instruct", "Qwen/Qwen2-VL-2B-Instruct",
    "allenai/Molmo-7B-O-0924", "allenai/Molmo-7B-D-0924", "vikhyatk/moondream1", "vikhyatk/moondream2",
    "vikhyatk/moondream-next", "liuhaotian/llava-v1.5-7b", "google/paligemma-3b-pt-224",
    "google/paligemma-3b-pt-448", "meta-llama/Llama-3.2-11B-Vision-Instruct", "HuggingFaceTB/SmolVLM-Instruct",
    "HuggingFaceTB/SmolVLM-Base", "OpenGVLab/InternVL2-2B", "nvidia/NVLM-D-72B",
}


@pytest.fixture(scope="module")
def catalog():
    return load_catalog(ROOT / "models.yaml")


def test_every_requested_model_is_listed(catalog):
    repos = {spec.display_repo for spec in catalog.models}
    assert repos >= ALL_REPOS
    assert any("MM1.5" in spec.name and not spec.available for spec in catalog.models)


@pytest.mark.parametrize("repo", sorted(PUBLISHED))
def test_published_figures_appear_exactly(catalog, repo):
    spec = next(s for s in catalog.models if s.display_repo == repo)
    gb, scores = PUBLISHED[repo]
    assert spec.min_gpu_gb == gb and spec.min_gpu_gb_source == "seed"
    assert {k: spec.scores[k] for k in scores} == scores


def test_other_figures_are_marked_as_estimates(catalog):
    published = set(PUBLISHED)
    for spec in catalog.models:
        if spec.display_repo not in published and spec.min_gpu_gb is not None:
            assert spec.min_gpu_gb_source == "estimate", spec.id


def test_every_model_has_languages(catalog):
    for spec in catalog.models:
        assert spec.languages, spec.id
    llama = next(s for s in catalog.models if s.family == "mllama")
    assert "English" in (llama.languages_note or "") and not llama.multi_image


def test_unavailable_models_say_why(catalog):
    for repo in ("vikhyatk/moondream-next", "nvidia/NVLM-D-72B"):
        spec = next(s for s in catalog.models if s.display_repo == repo)
        assert not spec.available and spec.unavailable_reason


def test_llava_loads_the_transformers_format_and_says_so(catalog):
    spec = next(s for s in catalog.models if s.display_repo == "liuhaotian/llava-v1.5-7b")
    assert spec.repo == "llava-hf/llava-1.5-7b-hf" and "llava-hf" in spec.notes


def test_remote_code_models_name_a_pinned_runtime(catalog):
    for spec in catalog.models:
        if spec.trust_remote_code and spec.available:
            assert spec.runtime in catalog.runtimes, spec.id
            assert any(r.startswith("transformers==4.") for r in catalog.runtimes[spec.runtime].requirements)


def test_every_catalogue_family_resolves_to_an_adapter(catalog):
    for spec in catalog.models:
        if spec.family and spec.family != "remote":
            assert spec.family in adapter_for(spec.family).families
