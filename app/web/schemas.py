"""The JSON API's bodies as pydantic models, so `/openapi.json` describes what the server really sends."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from app.storage.tables import OutputStatus


class Refusal(BaseModel):
    """A request the server refuses: what is wrong, and (for input) which field."""

    detail: str
    field: str | None = None


class ImageOut(BaseModel):
    sha256: str
    name: str
    width: int
    height: int
    format: str


class RatingSummary(BaseModel):
    id: int
    score: int = Field(ge=1, le=5)
    note: str
    rater: str


class OutputOut(BaseModel):
    """One model's answer with its provenance; `params` holds the settings the model really applied."""

    id: int
    model: str
    repo: str
    revision: str
    backend: str
    runtime: str
    transformers_version: str | None
    status: OutputStatus
    text: str
    error: str | None
    ttft_s: float | None
    total_s: float | None
    tokens: int | None
    prompt_tokens: int | None
    tokens_per_s: float | None
    image_note: str | None
    params: dict[str, Any]
    ratings: list[RatingSummary]


class ComparisonOut(BaseModel):
    id: int
    prompt: str
    params: dict[str, Any]
    created_at: datetime
    rater: str
    blind: bool
    images: list[ImageOut]
    outputs: list[OutputOut]


class OutputLine(BaseModel):
    id: int
    model: str
    status: OutputStatus
    ratings: int
    mean_score: float | None


class RatingsLine(BaseModel):
    count: int
    mean_score: float | None


class ComparisonLine(BaseModel):
    """A comparison as the history lists it."""

    id: int
    created_at: datetime
    prompt: str
    rater: str
    blind: bool
    images: list[str]
    models: list[str]
    outputs: list[OutputLine]
    ratings: RatingsLine


class ComparisonPage(BaseModel):
    total: int
    items: list[ComparisonLine]


class RatingIn(BaseModel):
    score: int = Field(ge=1, le=5, description="1 (worst) to 5 (best)")
    note: str = Field(default="", max_length=10_000)
    rater: str | None = Field(default=None, max_length=200)


class RatingOut(BaseModel):
    id: int
    output_id: int
    score: int
    note: str
    rater: str
    updated_at: datetime


class ModelOut(BaseModel):
    """A catalogue entry as this server sees it: memory plan, budget, capabilities, availability, pool state."""

    id: str
    name: str
    repo: str | None
    original_repo: str | None
    revision: str
    family: str | None
    min_gpu_gb: float | None
    min_gpu_gb_source: str
    planned_gb: float | None
    languages: list[str]
    languages_note: str | None
    multi_image: bool
    trust_remote_code: bool
    runtime: str
    endpoint: str | None
    scores: dict[str, float]
    tiny: bool
    available: bool
    unavailable_reason: str | None
    pool_state: str
    input_budget: dict[str, int | None]
    capabilities: dict[str, bool]


class ResidentOut(BaseModel):
    model: str
    planned_gb: float
    measured_gb: float | None  # what its process holds: the model's peak and the process's overhead
    overhead_gb: float | None = None  # what the process held before any weights (imports, CUDA context)
    state: str
    leases: int
    waiting: int = 0  # requests queued for a turn on this model
    last_used: float
    pid: int | None
    runtime: str
    pinned: bool
    detail: str | None
    host_gb: float = 0.0  # parked: the weights it keeps warm in host memory


class PoolOut(BaseModel):
    budget_gb: float
    used_gb: float
    free_gb: float
    resident: list[ResidentOut]
    draining_gb: float
    spares_gb: float = 0.0  # prepared spare worker processes
    warm_budget_gb: float = 0.0  # host memory for parked models' weights
    warm_used_gb: float = 0.0
    failures: dict[str, str]
    hits: int
    misses: int
    loads: int
    evictions: int
    load_failures: int
    crashes: int
    parks: int = 0  # evicted models whose weights stayed warm in host memory
    unparks: int = 0  # requests served by bringing parked weights back instead of loading


class HealthOut(BaseModel):
    status: str
    models: int
    resident: int
