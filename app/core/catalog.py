"""The model catalogue: `models.yaml` parsed and validated into `ModelSpec` entries."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from app.core import families
from app.core.budget import (
    BudgetOverride,
    Capabilities,
    ImageUse,
    InputBudget,
    SupportsOverride,
    family_defaults,
    resolve_budget,
    resolve_capabilities,
)

ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
REMOTE_FAMILY = "remote"


class CatalogError(ValueError):
    """A catalogue that cannot be used; the message names the entry and the field."""


class RuntimeSpec(BaseModel):
    """A pinned environment: packages installed over the app's own (torch shared)."""

    model_config = ConfigDict(extra="forbid")
    requirements: list[str] = Field(min_length=1)
    description: str = ""


class ModelSpec(BaseModel):
    """One catalogue entry: what the pool and the page need, plus what people are shown."""

    model_config = ConfigDict(extra="forbid")

    id: str
    name: str = ""
    repo: str | None = None
    original_repo: str | None = None
    revision: str = "main"
    family: str | None = None
    min_gpu_gb: float | None = Field(default=None, gt=0)
    min_gpu_gb_source: Literal["seed", "estimate", "measured", "tiny"] = "estimate"
    dtype: Literal["bfloat16", "float16", "float32", "auto"] = "bfloat16"
    multi_image: bool = False
    trust_remote_code: bool = False
    runtime: str = "default"
    endpoint: str | None = None
    served_model: str | None = None
    api_key_env: str | None = None
    languages: list[str] = Field(default_factory=list)
    languages_note: str | None = None
    gated: bool = False
    licence: str = ""
    params_b: float | None = None
    scores: dict[str, float] = Field(default_factory=dict)
    available: bool = True
    unavailable_reason: str | None = None
    preload: bool = False
    tiny: bool = False
    budget: BudgetOverride | None = None  # context, images, pixels; unset fields: the family's defaults
    supports: SupportsOverride | None = None  # sampling, seed, streaming; unset: the family's defaults
    notes: str = ""

    @field_validator("id")
    @classmethod
    def _id_is_slug(cls, value: str) -> str:
        if not ID_PATTERN.match(value):
            raise ValueError("must be a short slug of a-z, 0-9, '.', '_' or '-' (at most 64 characters)")
        return value

    @field_validator("endpoint")
    @classmethod
    def _endpoint_is_http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// base URL of an OpenAI-compatible server")
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        if not self.name:
            self.name = self.id
        if not self.available:
            if not self.unavailable_reason:
                raise ValueError("unavailable_reason: required when available is false")
            return self
        if self.endpoint is None:
            if not self.repo:
                raise ValueError("repo: required for a model served by a local worker")
            if not self.family:
                raise ValueError("family: required for a model served by a local worker")
            if self.family == REMOTE_FAMILY:
                raise ValueError("endpoint: required for family 'remote'")
            if self.min_gpu_gb is None:
                raise ValueError("min_gpu_gb: required for a model served by a local worker")
        return self

    @property
    def is_remote(self) -> bool:
        return self.endpoint is not None

    @property
    def display_repo(self) -> str:
        return self.original_repo or self.repo or ""

    @property
    def input_budget(self) -> InputBudget:
        """The entry's budget over its family's; a single-image model takes at most one image."""
        budget = resolve_budget(self.family, self.budget)
        if not self.multi_image:
            budget = budget.model_copy(update={"max_images": 1})
        return budget

    @property
    def capabilities(self) -> Capabilities:
        return resolve_capabilities(self.family, self.supports)

    @property
    def image_use(self) -> ImageUse:
        """The most of an image this model uses: its pixel budget when it has one, else its family's."""
        pixels = self.input_budget.max_pixels
        return ImageUse(pixels=pixels) if pixels else family_defaults(self.family).image_use


class Catalog(BaseModel):
    """The whole catalogue: models in file order and the runtimes they may name."""

    model_config = ConfigDict(extra="forbid")
    runtimes: dict[str, RuntimeSpec] = Field(default_factory=dict)
    models: list[ModelSpec]
    source: Path | None = None

    def get(self, model_id: str) -> ModelSpec:
        for spec in self.models:
            if spec.id == model_id:
                return spec
        raise KeyError(model_id)

    def ids(self) -> list[str]:
        return [spec.id for spec in self.models]


def _entry_label(raw: dict, index: int) -> str:
    model_id = raw.get("id") if isinstance(raw, dict) else None
    return f"models[{index}] ({model_id})" if model_id else f"models[{index}]"


def _format_error(label: str, error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        field = ".".join(str(p) for p in item["loc"]) or "entry"
        message = item["msg"].removeprefix("Value error, ")
        if ":" in message and not item["loc"]:
            field, message = message.split(":", 1)
            message = message.strip()
        parts.append(f"{field}: {message}")
    return f"{label}: " + "; ".join(parts)


def parse_catalog(data: object, source: Path | None = None, known_families: set[str] | None = None) -> Catalog:
    """Validate catalogue data; every problem is reported with its entry and field."""
    where = f"{source}: " if source else ""
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        raise CatalogError(f"{where}the catalogue needs a top-level 'models:' list")
    unknown_top = set(data) - {"runtimes", "models"}
    if unknown_top:
        raise CatalogError(f"{where}unknown top-level key(s): {', '.join(sorted(unknown_top))}")
    runtimes: dict[str, RuntimeSpec] = {}
    for name, raw in (data.get("runtimes") or {}).items():
        try:
            runtimes[str(name)] = RuntimeSpec.model_validate(raw)
        except ValidationError as exc:
            raise CatalogError(where + _format_error(f"runtimes.{name}", exc)) from None
    if known_families is None:
        known_families = families.known_families()
    models: list[ModelSpec] = []
    seen: set[str] = set()
    for index, raw in enumerate(data["models"]):
        label = _entry_label(raw, index)
        if not isinstance(raw, dict):
            raise CatalogError(f"{where}{label}: each entry must be a mapping")
        try:
            spec = ModelSpec.model_validate(raw)
        except ValidationError as exc:
            raise CatalogError(where + _format_error(label, exc)) from None
        if spec.id in seen:
            raise CatalogError(f"{where}{label}: id: duplicate id '{spec.id}'")
        seen.add(spec.id)
        if spec.family is not None and spec.family != REMOTE_FAMILY and spec.family not in known_families:
            raise CatalogError(
                f"{where}{label}: family: unknown family '{spec.family}' "
                f"(known: {', '.join(sorted(known_families | {REMOTE_FAMILY}))})"
            )
        if spec.runtime != "default" and spec.runtime not in runtimes:
            raise CatalogError(f"{where}{label}: runtime: '{spec.runtime}' is not defined under runtimes:")
        models.append(spec)
    return Catalog(runtimes=runtimes, models=models, source=source)


def load_catalog(path: str | Path) -> Catalog:
    """Read and validate a `models.yaml` file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CatalogError(f"{path}: no such catalogue file") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CatalogError(f"{path}: not valid YAML: {exc}") from None
    catalog = parse_catalog(data, source=path.resolve())
    _resolve_local_repos(catalog, path.resolve().parent)
    return catalog


def _resolve_local_repos(catalog: Catalog, base: Path) -> None:
    """A repo written as a relative path ('./tiny/llava') is taken relative to the catalogue file."""
    for spec in catalog.models:
        if spec.repo and spec.repo.startswith(("./", "../")):
            spec.repo = str((base / spec.repo).resolve())


def model_summary(spec: ModelSpec) -> dict[str, Any]:
    """A catalogue entry as the command line and the JSON API list it (without pool or reachability)."""
    return {
        "id": spec.id, "name": spec.name, "repo": spec.repo, "original_repo": spec.original_repo,
        "revision": spec.revision, "family": spec.family, "min_gpu_gb": spec.min_gpu_gb,
        "min_gpu_gb_source": spec.min_gpu_gb_source, "languages": spec.languages,
        "languages_note": spec.languages_note, "multi_image": spec.multi_image,
        "trust_remote_code": spec.trust_remote_code, "runtime": spec.runtime, "endpoint": spec.endpoint,
        "gated": spec.gated, "licence": spec.licence, "scores": spec.scores, "tiny": spec.tiny,
        "available": spec.available, "unavailable_reason": spec.unavailable_reason, "notes": spec.notes,
        "input_budget": spec.input_budget.model_dump(), "capabilities": spec.capabilities.model_dump(),
    }
