"""Server settings: paths, the pool's budget and time limits, and the limits on input."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

MB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """What one comparison may ask for; each refusal names the limit."""

    max_images: int = 8
    max_image_bytes: int = 20 * MB
    max_request_bytes: int = 50 * MB
    max_pixels: int = 40_000_000
    max_prompt_chars: int = 4000
    max_models: int = 8
    max_new_tokens: int = 2048

    def help_text(self) -> str:
        return (f"Up to {self.max_images} images, {megabytes(self.max_image_bytes)} each and "
                f"{megabytes(self.max_request_bytes)} in all, {self.max_pixels / 1e6:g} megapixels each; "
                f"a prompt of up to {self.max_prompt_chars:,} characters; up to {self.max_models} models.")

    @classmethod
    def from_env(cls) -> Limits:
        """Defaults, overridden by VLM_MAX_IMAGES, VLM_MAX_IMAGE_MB, VLM_MAX_REQUEST_MB, VLM_MAX_MEGAPIXELS,
        VLM_MAX_PROMPT_CHARS, VLM_MAX_MODELS and VLM_MAX_NEW_TOKENS."""
        scales = {"max_images": ("VLM_MAX_IMAGES", 1), "max_image_bytes": ("VLM_MAX_IMAGE_MB", MB),
                  "max_request_bytes": ("VLM_MAX_REQUEST_MB", MB), "max_pixels": ("VLM_MAX_MEGAPIXELS", 1_000_000),
                  "max_prompt_chars": ("VLM_MAX_PROMPT_CHARS", 1), "max_models": ("VLM_MAX_MODELS", 1),
                  "max_new_tokens": ("VLM_MAX_NEW_TOKENS", 1)}
        values = {field: int(float(os.environ[name]) * scale)
                  for field, (name, scale) in scales.items() if os.environ.get(name)}
        return cls(**values)


def megabytes(size: int) -> str:
    """A size for people: '20 MB', '0.5 MB'."""
    return f"{size / MB:g} MB" if size % MB else f"{size // MB} MB"


@dataclass(frozen=True)
class Settings:
    """Everything `create_app` needs; the CLI and the environment fill it in."""

    models_path: Path = Path("models.yaml")
    data_dir: Path = Path("data")
    database_url: str | None = None
    budget_gb: float | None = None  # None: 90 % of the GPU, else cpu_budget_gb
    cpu_budget_gb: float = 8.0
    overhead_gb: float = 0.0
    wait_timeout_s: float = 300.0
    load_timeout_s: float = 900.0
    generation_timeout_s: float = 600.0
    idle_timeout_s: float | None = None
    retry_after_s: float = 30.0
    shutdown_grace_s: float = 10.0
    abandon_after_s: float = 10.0  # stop answers when every page watching them has been gone this long
    auth_token: str | None = None
    default_rater: str = "anonymous"
    demo: bool = False
    limits: Limits = field(default_factory=Limits)

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Settings from `VLM_*` environment variables, then explicit overrides."""
        env: dict[str, object] = {}
        if os.environ.get("VLM_DATA_DIR"):
            env["data_dir"] = Path(os.environ["VLM_DATA_DIR"])
        if os.environ.get("VLM_BUDGET_GB"):
            env["budget_gb"] = float(os.environ["VLM_BUDGET_GB"])
        if os.environ.get("VLM_CPU_BUDGET_GB"):
            env["cpu_budget_gb"] = float(os.environ["VLM_CPU_BUDGET_GB"])
        if os.environ.get("VLM_AUTH_TOKEN"):
            env["auth_token"] = os.environ["VLM_AUTH_TOKEN"]
        for name in ("generation_timeout_s", "shutdown_grace_s", "abandon_after_s", "wait_timeout_s"):
            if os.environ.get(f"VLM_{name.upper()}"):
                env[name] = float(os.environ[f"VLM_{name.upper()}"])
        if os.environ.get("DATABASE_URL"):
            env["database_url"] = os.environ["DATABASE_URL"]
        env["limits"] = Limits.from_env()
        env.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**env)  # type: ignore[arg-type]
