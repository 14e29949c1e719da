"""One configuration object, read lazily from the environment.

Only the environment differs between the embedded default and the production stack:

| variable | embedded default | production stack |
|---|---|---|
| MLOPS_HOME | ./.mlops | /opt/airflow/mlops |
| MLOPS_STORE_URI | file://$MLOPS_HOME/store | s3://mlops |
| MLOPS_S3_ENDPOINT_URL | (unset) | http://minio:9000 |
| MLFLOW_TRACKING_URI | sqlite:///$MLOPS_HOME/mlflow.db | http://mlflow:5000 |
| MLOPS_MLFLOW_ARTIFACTS | file://$MLOPS_HOME/mlartifacts | (server side) |
| FEAST_REGISTRY_PATH | sqlite:///$MLOPS_HOME/feast_registry.db | postgresql+psycopg2://... |
| FEAST_ONLINE_STORE | sqlite (ours; feast-sqlite: Feast's layout) | redis |
| FEAST_ONLINE_PATH | $MLOPS_HOME/feast_online.db | redis:6379 |
| MLOPS_DATASET | churn | churn |
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Settings:
    home: Path
    store_uri: str
    s3_endpoint_url: str | None
    tracking_uri: str
    mlflow_artifacts: str | None
    feast_registry_path: str
    feast_online_store: str
    feast_online_path: str
    feast_repo: Path
    dataset: str
    git_commit: str

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
            return "unknown"
        return ref
    except OSError:
        return os.environ.get("MLOPS_GIT_COMMIT", "unknown")


def get_settings() -> Settings:
    """Read the settings now (never at import time), so tests can change the environment."""
    env = os.environ
    home = Path(env.get("MLOPS_HOME") or PROJECT_ROOT / ".mlops").resolve()
    tracking = env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home / 'mlflow.db'}"
    # A tracking server decides where artifacts go; a local database needs to be told, else
    # MLflow writes ./mlruns wherever the process happens to start.
    artifacts_default = None if tracking.startswith("http") else f"file://{home / 'mlartifacts'}"
    return Settings(
        home=home,
        store_uri=env.get("MLOPS_STORE_URI") or f"file://{home / 'store'}",
        s3_endpoint_url=env.get("MLOPS_S3_ENDPOINT_URL") or env.get("AWS_ENDPOINT_URL") or None,
        tracking_uri=tracking,
        mlflow_artifacts=env.get("MLOPS_MLFLOW_ARTIFACTS") or artifacts_default,
        feast_registry_path=env.get("FEAST_REGISTRY_PATH") or f"sqlite:///{home / 'feast_registry.db'}",
        feast_online_store=env.get("FEAST_ONLINE_STORE") or "sqlite",
        feast_online_path=env.get("FEAST_ONLINE_PATH") or str(home / "feast_online.db"),
        feast_repo=Path(env.get("MLOPS_FEAST_REPO") or PROJECT_ROOT / "feature_repo"),
        dataset=env.get("MLOPS_DATASET") or "churn",
        git_commit=env.get("MLOPS_GIT_COMMIT") or _git_commit(),
    )


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
