"""Service settings, read from the environment (prefix RELUSWAP_), shared by the API and the workers.

List settings are comma-separated in the environment (RELUSWAP_API_KEYS=alice:k1,bob:k2), not JSON,
so they are easy to write in a compose file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

GiB = 1024**3


def _split(value):
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RELUSWAP_", extra="ignore")

    data_dir: Path = Path("data")
    # Defaults derive from data_dir (see _defaults) so one variable moves everything.
    database_url: str = ""
    storage_dir: Path | None = None
    broker_url: str = "redis://127.0.0.1:6379/0"

    # owner:key pairs, or owner:sha256:<hex> to keep the plain key out of the environment.
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    dev_mode: bool = False
    host: str = "127.0.0.1"
    port: int = 8000

    max_upload_bytes: int = Field(default=2 * GiB, ge=1)
    max_config_bytes: int = Field(default=1024 * 1024, ge=1)
    # imagefolder:/archive: paths must lie under one of these (none configured: such paths are refused).
    allowed_data_roots: Annotated[list[Path], NoDecode] = Field(default_factory=list)

    heartbeat_timeout_s: float = Field(default=120.0, gt=0)
    # Run the reaper (requeue/fail jobs whose worker went silent) inside this API process.
    # Several API replicas may all run it: requeue is conditional and atomic, a claim decides.
    run_reaper: bool = True
    max_attempts: int = Field(default=3, ge=1)
    # Redis redelivers an unacked task after this long: it must exceed the longest job.
    visibility_timeout_s: int = Field(default=12 * 3600, ge=1)
    queue: str = "gpu"

    # Compare jobs: the largest grid accepted (children, the original included) and the level at
    # which a difference to the ReLU control counts (Holm-corrected McNemar).
    max_children: int = Field(default=64, ge=2)
    compare_alpha: float = Field(default=0.05, gt=0.0, lt=1.0)

    # Jobs with tracking.mlflow log to this MLflow tracking URI (http(s)://, sqlite:, databricks...);
    # unset: a SQLite store inside the job's out dir (mlflow/mlflow.db, artifacts in mlflow/artifacts).
    mlflow_tracking_uri: str | None = None

    sse_poll_s: float = Field(default=0.5, gt=0)
    sse_keepalive_s: float = Field(default=15.0, gt=0)
    readiness_timeout_s: float = Field(default=1.0, gt=0)

    @field_validator("api_keys", "allowed_data_roots", mode="before")
    @classmethod
    def _comma_list(cls, value):
        return _split(value)

    @model_validator(mode="after")
    def _defaults(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'reluswap.db'}"
        if self.storage_dir is None:
            self.storage_dir = self.data_dir / "storage"
        return self
