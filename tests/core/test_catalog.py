"""Catalogue validation: bad entries fail with the entry and field named; families resolve."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from app.adapters import adapter_for, families
from app.core.catalog import CatalogError, load_catalog, parse_catalog


def entry(**fields):
    base = {"id": "m1", "repo": "org/m1", "family": "llava", "min_gpu_gb": 1.0}
    base.update(fields)
    return base


def error_for(*models, runtimes=None) -> str:
    data = {"models": list(models)}
    if runtimes is not None:
        data["runtimes"] = runtimes
    with pytest.raises(CatalogError) as caught:
        parse_catalog(data)
    return str(caught.value)


def test_a_valid_entry_parses_with_defaults():
    catalog = parse_catalog({"models": [entry()]})
    spec = catalog.get("m1")
    assert spec.name == "m1" and spec.runtime == "default" and spec.available


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        (entry(family="nonsense"), "models[0] (m1): family: unknown family 'nonsense'"),
        (entry(min_gpu_gb=-2), "models[0] (m1): min_gpu_gb:"),
        (entry(min_gpu_gb="lots"), "models[0] (m1): min_gpu_gb:"),
        (entry(id="Bad Id!"), "models[0] (Bad Id!): id: must be a short slug"),
        (entry(colour="red"), "models[0] (m1): colour: Extra inputs are not permitted"),
        (entry(repo=None), "models[0] (m1): repo: required"),
        (entry(min_gpu_gb=None), "models[0] (m1): min_gpu_gb: required"),
        (entry(runtime="hf-9"), "models[0] (m1): runtime: 'hf-9' is not defined"),
        (entry(available=False), "models[0] (m1): unavailable_reason: required"),
        (entry(endpoint="ftp://x"), "models[0] (m1): endpoint: must be an http"),
        (entry(min_gpu_gb_source="guess"), "models[0] (m1): min_gpu_gb_source:"),
    ],
)
def test_bad_entries_name_the_entry_and_the_field(bad, expected):
    assert expected in error_for(bad)


def test_duplicate_ids_are_rejected():
    assert "models[1] (m1): id: duplicate id 'm1'" in error_for(entry(), entry())


def test_missing_models_list_is_explained():
    with pytest.raises(CatalogError, match="top-level 'models:' list"):
        parse_catalog({"model": []})


def test_bad_runtime_names_the_runtime():
    assert "runtimes.hf-4.48: requirements:" in error_for(entry(), runtimes={"hf-4.48": {"requirements": []}})


def test_file_errors_name_the_file(tmp_path: Path):
    with pytest.raises(CatalogError, match="no such catalogue file"):
        load_catalog(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("models: [\n")
    with pytest.raises(CatalogError, match="not valid YAML"):
        load_catalog(broken)


def test_relative_repo_paths_resolve_against_the_catalogue(tmp_path: Path):
    (tmp_path / "models.yaml").write_text(yaml.safe_dump({"models": [entry(repo="./ckpt")]}))
    assert load_catalog(tmp_path / "models.yaml").get("m1").repo == str(tmp_path / "ckpt")


def test_every_family_resolves_to_an_adapter():
    for family in families():
        cls = adapter_for(family)
        assert family in cls.families


def test_unknown_family_lookup_names_the_known_ones():
    with pytest.raises(KeyError, match="known: .*llava"):
        adapter_for("nonsense")
