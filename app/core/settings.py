"""Every option of the server in one place, each with its environment variable.

`Settings()` reads `VLM_*` (and `DATABASE_URL`) from the environment; keyword arguments (the command
line's flags) win over the environment. The README's configuration table lists exactly these
variables (a test checks that the two agree).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

MB = 1024 * 1024
ENV_PREFIX = "VLM_"


def megabytes(size: int) -> str:
    """A size for people: '20 MB', '0.5 MB'."""
    return f"{size / MB:g} MB" if size % MB else f"{size // MB} MB"


class Limits(BaseSettings):
    """What one comparison may ask for; each refusal names the limit."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore", env_ignore_empty=True)

    max_images: int = Field(8, ge=1, description="images per prompt")
    max_image_mb: float = Field(20, gt=0, description="size of one image file, in MB")
    max_request_mb: float = Field(50, gt=0, description="size of one request body, in MB (counted while reading)")
    max_megapixels: float = Field(40, gt=0, description="decoded size of one image, in megapixels")
    max_total_megapixels: float = Field(100, gt=0, description="decoded size of all images of one request, "
                                                              "in megapixels")
    max_prompt_chars: int = Field(4000, ge=1, description="characters in a prompt")
    max_models: int = Field(8, ge=1, description="models in one comparison")
    max_new_tokens: int = Field(2048, ge=1, description="tokens an answer may be asked for")

    @property
    def max_image_bytes(self) -> int:
        return int(self.max_image_mb * MB)

    @property
    def max_request_bytes(self) -> int:
        return int(self.max_request_mb * MB)

    @property
    def max_pixels(self) -> int:
        return int(self.max_megapixels * 1_000_000)

    @property
    def max_total_pixels(self) -> int:
        return int(self.max_total_megapixels * 1_000_000)

    def help_text(self) -> str:
        return (f"Up to {self.max_images} images, {megabytes(self.max_image_bytes)} each and "
                f"{megabytes(self.max_request_bytes)} in all, {self.max_megapixels:g} megapixels each and "
                f"{self.max_total_megapixels:g} in all; "
                f"a prompt of up to {self.max_prompt_chars:,} characters; up to {self.max_models} models.")


class Settings(BaseSettings):
    """Everything `create_app` and the command line need."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore", populate_by_name=True,
                                      env_ignore_empty=True)

    models_path: Path = Field(Path("models.yaml"), validation_alias="VLM_MODELS",
                              description="the catalogue file")
    data_dir: Path = Field(Path("data"), description="database, image files, worker logs, pinned runtimes")
    database_url: str | None = Field(None, validation_alias="DATABASE_URL",
                                     description="a SQLAlchemy URL; default: SQLite in the data directory")
    budget_gb: float | None = Field(None, gt=0, description="memory the resident models may plan for; "
                                                           "default: 90 % of the GPU, else cpu_budget_gb")
    cpu_budget_gb: float = Field(8.0, gt=0, description="the budget when there is no GPU")
    overhead_gb: float | None = Field(None, ge=0, description="memory added to each model's plan for its "
                                      "process; default: what each runtime's worker measured at start-up")
    warm_budget_gb: float | None = Field(None, ge=0, description="host memory in which evicted models keep their "
                                         "weights warm (parked), so a swap back is a copy, not a load; default: "
                                         "on a GPU half the host memory available at start-up, on a CPU 0")
    swap_patience: int = Field(4, ge=0, description="answers to resident models that may go ahead of a request "
                                                     "waiting for memory to load another")
    spare_workers: int = Field(1, ge=0, le=1, description="keep a prepared worker process per runtime, so a "
                                                           "load skips the interpreter start and imports")
    worker_threads: int | None = Field(None, ge=1, description="torch threads per CPU worker, fixed; default: "
                                                               "the cores shared by the models answering then")
    wait_timeout_s: float = Field(300.0, gt=0, description="how long a request waits for memory to free")
    load_timeout_s: float = Field(900.0, gt=0, description="how long a model may take to load")
    generation_timeout_s: float = Field(600.0, gt=0, description="how long one answer may take, from its turn "
                                                                 "on the model")
    queue_timeout_s: float = Field(120.0, gt=0, description="how long a request waits for its turn on a busy model")
    max_queued_per_client: int = Field(4, ge=1, description="requests one client may have waiting for one model")
    header_timeout_s: float = Field(10.0, gt=0, description="how long a client may take to send a request's headers")
    body_timeout_s: float = Field(120.0, gt=0, description="how long a client may take to send a request's body")
    max_connections: int = Field(512, ge=8, description="open connections; past it the oldest one still sending "
                                                        "headers is closed")
    allowed_hosts: str = Field("", description="host names the server answers to besides its bind address and "
                                               "localhost, comma-separated ('*': any)")
    idle_timeout_s: float | None = Field(None, gt=0, description="stop a worker idle this long; default: never")
    retry_after_s: float = Field(30.0, gt=0, description="how long a model that failed to load is not retried")
    shutdown_grace_s: float = Field(10.0, ge=0, description="answers in flight may finish this long on SIGTERM")
    abandon_after_s: float = Field(10.0, ge=0, description="stop answers no page has watched for this long")
    auth_token: str | None = Field(None, description="require this token for every request")
    auth_token_file: Path | None = Field(None, description="a file whose first line is the access token")
    users_file: Path | None = Field(None, description="per-rater accounts (name, role, argon2 hash a line); "
                                                     "see `vlm-playground users`")
    default_rater: str = Field("anonymous", description="the rater name of someone who gave none")
    demo: bool = Field(False, description="label the page as the offline demo")
    limits: Limits = Field(default_factory=Limits)

    @classmethod
    def from_args(cls, **values: object) -> Settings:
        """Settings from the environment, with every given value that is not None on top."""
        return cls(**{key: value for key, value in values.items() if value is not None})  # type: ignore[arg-type]


def environment_variables() -> dict[str, str]:
    """Each environment variable the settings read → what it sets (for the README and `--help`)."""
    found: dict[str, str] = {}
    for model in (Settings, Limits):
        for name, field in model.model_fields.items():
            if name == "limits":
                continue
            alias = field.validation_alias
            found[alias if isinstance(alias, str) else f"{ENV_PREFIX}{name.upper()}"] = field.description or ""
    return found
