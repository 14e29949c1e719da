"""One settings object: every environment variable the platform reads is a field here.

Only the environment differs between the embedded default and the production stack:

| variable | embedded default | production stack |
|---|---|---|
| MLOPS_HOME | ./.mlops | /opt/airflow/mlops |
| MLOPS_STORE_URI | file://$MLOPS_HOME/store | s3://mlops |
| MLOPS_S3_ENDPOINT_URL (or AWS_ENDPOINT_URL) | (unset) | http://minio:9000 |
| MLFLOW_TRACKING_URI | sqlite:///$MLOPS_HOME/mlflow.db | http://mlflow:5000 |
| MLOPS_MLFLOW_ARTIFACTS | file://$MLOPS_HOME/mlartifacts | (server side) |
| FEAST_REGISTRY_PATH | sqlite:///$MLOPS_HOME/feast_registry.db | postgresql+psycopg2://... |
| FEAST_ONLINE_STORE | sqlite (ours; feast-sqlite: Feast's layout) | redis |
| FEAST_ONLINE_PATH | $MLOPS_HOME/feast_online.db | redis:6379 |
| MLOPS_DATASET | churn | churn |
| MLOPS_SERVE_URL / MLOPS_ADMIN_TOKEN | set by `make up` / the demo | http://scoring:8000 / a secret |

The others (spec directories, extra trusted model types, the MLflow UI address for links, bind
address, log level) are described on their fields. The scoring service's own knobs
(`MLOPS_SERVE_*`) are `serving.config.ServeConfig`; the waits' deadlines are `waits.DEFAULTS`.
Settings are read when asked for (`get_settings()`), never at import time, so tests can change
the environment. An empty variable counts as unset.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _env(*names: str, default: str | None = "") -> Any:
    return Field(default=default, validation_alias=AliasChoices(*names))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, extra="ignore", env_ignore_empty=True, case_sensitive=True)

    home: Path = Field(default=PROJECT_ROOT / ".mlops", validation_alias="MLOPS_HOME")
    store_uri: str = _env("MLOPS_STORE_URI")  # default: file://<home>/store
    s3_endpoint_url: str | None = _env("MLOPS_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL", default=None)
    tracking_uri: str = _env("MLFLOW_TRACKING_URI")  # default: sqlite:///<home>/mlflow.db
    # A tracking server decides where artifacts go; a local database needs to be told, else
    # MLflow writes ./mlruns wherever the process happens to start.
    mlflow_artifacts: str | None = _env("MLOPS_MLFLOW_ARTIFACTS", default=None)
    feast_registry_path: str = _env("FEAST_REGISTRY_PATH")
    feast_online_store: str = Field(default="sqlite", validation_alias="FEAST_ONLINE_STORE")
    feast_online_path: str = _env("FEAST_ONLINE_PATH")
    feast_repo: Path = Field(default=PROJECT_ROOT / "feature_repo", validation_alias="MLOPS_FEAST_REPO")
    dataset: str = Field(default="churn", validation_alias="MLOPS_DATASET")
    git_commit: str = _env("MLOPS_GIT_COMMIT")  # default: read from .git
    spec_dirs: str = Field(default="", validation_alias="MLOPS_SPEC_DIRS")  # extra spec directories, os.pathsep
    serve_url: str | None = _env("MLOPS_SERVE_URL", default=None)  # the live scoring service, if one runs
    admin_token: str | None = _env("MLOPS_ADMIN_TOKEN", default=None)  # its admin token (reload, flush, pin)
    mlflow_ui_url: str = Field(default="http://localhost:5000", validation_alias="MLOPS_MLFLOW_UI_URL")
    trusted_types_extra: str = Field(default="", validation_alias="MLOPS_TRUSTED_TYPES_EXTRA")
    bind_address: str = Field(default="127.0.0.1", validation_alias="MLOPS_BIND_ADDRESS")
    log_level: str = Field(default="INFO", validation_alias="MLOPS_LOG_LEVEL")

    @model_validator(mode="after")
    def _defaults_under_home(self) -> Settings:
        home = self.home.resolve()
        object.__setattr__(self, "home", home)
        tracking = self.tracking_uri or f"sqlite:///{home / 'mlflow.db'}"
        derived = {
            "store_uri": self.store_uri or f"file://{home / 'store'}",
            "tracking_uri": tracking,
            "mlflow_artifacts": self.mlflow_artifacts
            or (None if tracking.startswith("http") else f"file://{home / 'mlartifacts'}"),
            "feast_registry_path": self.feast_registry_path or f"sqlite:///{home / 'feast_registry.db'}",
            "feast_online_path": self.feast_online_path or str(home / "feast_online.db"),
            "git_commit": self.git_commit or _git_commit(),
            "serve_url": self.serve_url.rstrip("/") if self.serve_url else None,
        }
        for k, v in derived.items():
            object.__setattr__(self, k, v)
        return self

    @property
    def is_s3(self) -> bool:
        return self.store_uri.startswith("s3://")


def _git_commit() -> str:
    head = PROJECT_ROOT / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            ref_file = PROJECT_ROOT / ".git" / ref[5:]
            if ref_file.exists():
                return ref_file.read_text().strip()
            packed = PROJECT_ROOT / ".git" / "packed-refs"
            for line in packed.read_text().splitlines() if packed.exists() else []:
                if line.endswith(ref[5:]):
                    return line.split()[0]
        else:
            return ref
    except OSError:
        pass
    return "unknown"


def get_settings() -> Settings:
    """Read the settings now (never at import time), so tests can change the environment."""
    return Settings()


def embedded_env(home: Path) -> dict[str, str]:
    """The embedded default's variables for a given home, spelled out so they override whatever
    the surrounding environment says (benchmarks and subprocesses use this)."""
    return {
        "MLOPS_HOME": str(home),
        "MLOPS_STORE_URI": f"file://{home / 'store'}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
        "MLOPS_MLFLOW_ARTIFACTS": f"file://{home / 'mlartifacts'}",
        "FEAST_REGISTRY_PATH": f"sqlite:///{home / 'feast_registry.db'}",
        "FEAST_ONLINE_PATH": str(home / "feast_online.db"),
        "FEAST_ONLINE_STORE": "sqlite",
        "DO_NOT_TRACK": "true",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "GX_ANALYTICS_ENABLED": "false",
    }


def quiet_telemetry() -> None:
    """MLflow, Evidently and GX phone home by default; the platform never does."""
    os.environ.setdefault("DO_NOT_TRACK", "true")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
