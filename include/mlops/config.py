"""Every environment variable the platform reads is a field of a settings model here.

`Settings` (`get_settings()`): where things are and how the platform behaves. Only the
environment differs between the embedded default and the production stack:

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
address, log level, the DAGs' start date, Feast's type checks, Airflow's home) are described on
their fields. `Timeouts` (`get_timeouts()`) holds the bounded waits' deadlines, `LocalPorts`
(`get_ports()`) the ports of `make up`, `DemoOverrides` (`get_demo_overrides()`) the demo's
DEMO_* variables. The scoring service's own knobs (`MLOPS_SERVE_*`) are
`ServeConfig` (below).

Every model is read when asked for, never at import time, so tests can change the environment.
An empty variable counts as unset. A value that does not parse raises `SettingsError` naming the
variable, what it holds and its default.
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_START_DATE = date(2020, 1, 1)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

_CONFIG = SettingsConfigDict(frozen=True, extra="ignore", env_ignore_empty=True, case_sensitive=True)
S = TypeVar("S", bound=BaseSettings)


class SettingsError(ValueError):
    """An environment variable holds a value its setting cannot take; the message names it."""


def _env(*names: str, default: Any = "", **kw: Any) -> Any:
    alias = names[0] if len(names) == 1 else AliasChoices(*names)
    return Field(default=default, validation_alias=alias, **kw)


class Settings(BaseSettings):
    model_config = _CONFIG

    home: Path = _env("MLOPS_HOME", default=PROJECT_ROOT / ".mlops")
    store_uri: str = _env("MLOPS_STORE_URI")  # default: file://<home>/store
    s3_endpoint_url: str | None = _env("MLOPS_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL", default=None)
    tracking_uri: str = _env("MLFLOW_TRACKING_URI")  # default: sqlite:///<home>/mlflow.db
    # A tracking server decides where artifacts go; a local database needs to be told, else
    # MLflow writes ./mlruns wherever the process happens to start.
    mlflow_artifacts: str | None = _env("MLOPS_MLFLOW_ARTIFACTS", default=None)
    feast_registry_path: str = _env("FEAST_REGISTRY_PATH")
    feast_online_store: str = _env("FEAST_ONLINE_STORE", default="sqlite")
    feast_online_path: str = _env("FEAST_ONLINE_PATH")
    feast_repo: Path = _env("MLOPS_FEAST_REPO", default=PROJECT_ROOT / "feature_repo")
    # MLOPS_FEAST_TYPECHECKS=1 keeps typeguard's checks in Feast, and its slow import (feast_import)
    feast_typechecks: bool = _env("MLOPS_FEAST_TYPECHECKS", default=False)
    dataset: str = _env("MLOPS_DATASET", default="churn")
    git_commit: str = _env("MLOPS_GIT_COMMIT")  # default: read from .git
    # extra spec directories (os.pathsep-separated), looked in before $MLOPS_HOME/specs
    spec_dirs: Annotated[tuple[Path, ...], NoDecode] = _env("MLOPS_SPEC_DIRS", default=())
    serve_url: str | None = _env("MLOPS_SERVE_URL", default=None)  # the live scoring service, if one runs
    admin_token: str | None = _env("MLOPS_ADMIN_TOKEN", default=None)  # its admin token (reload, flush, pin)
    mlflow_ui_url: str = _env("MLOPS_MLFLOW_UI_URL", default="http://localhost:5000")  # for Airflow's links
    # the operator's own estimator classes the model loader may construct (comma-separated; model_io)
    trusted_types_extra: Annotated[tuple[str, ...], NoDecode] = _env("MLOPS_TRUSTED_TYPES_EXTRA", default=())
    bind_address: str = _env("MLOPS_BIND_ADDRESS", default="127.0.0.1")  # what local services listen on
    log_level: str = _env("MLOPS_LOG_LEVEL", default="INFO")  # the scoring service's log level
    start_date: date = _env("MLOPS_START_DATE", default=DEFAULT_START_DATE)  # the DAGs' start_date (UTC)
    airflow_home: Path | None = _env("AIRFLOW_HOME", default=None)  # default: <home>/airflow (airflow_env)

    @field_validator("spec_dirs", mode="before")
    @classmethod
    def _split_dirs(cls, v: Any) -> Any:
        return tuple(p for p in v.split(os.pathsep) if p.strip()) if isinstance(v, str) else v

    @field_validator("trusted_types_extra", mode="before")
    @classmethod
    def _split_types(cls, v: Any) -> Any:
        return tuple(t.strip() for t in v.split(",") if t.strip()) if isinstance(v, str) else v

    @field_validator("bind_address", "mlflow_ui_url", mode="before")
    @classmethod
    def _strip(cls, v: Any, info: Any) -> Any:
        if not isinstance(v, str):
            return v
        v = v.strip().rstrip("/") if info.field_name == "mlflow_ui_url" else v.strip()
        return v or cls.model_fields[info.field_name].default

    @field_validator("log_level", mode="before")
    @classmethod
    def _level(cls, v: Any) -> Any:
        if isinstance(v, str) and v.strip().upper() not in LOG_LEVELS:  # names uvicorn knows too
            raise ValueError(f"not a log level (one of {', '.join(LOG_LEVELS)})")
        return v.strip().upper() if isinstance(v, str) else v

    @field_validator("start_date", mode="before")
    @classmethod
    def _iso_day(cls, v: Any) -> Any:
        if not isinstance(v, str):
            return v
        try:
            return date.fromisoformat(v.strip()[:10])  # a timestamp counts for its day
        except ValueError:
            raise ValueError("not an ISO date (YYYY-MM-DD)") from None

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


def _seconds(var: str, default: float, what: str) -> Any:
    return _env(var, default=default, gt=0, description=what)


class Timeouts(BaseSettings):
    """The deadlines of the bounded waits (`waits.Wait`), in seconds, each positive."""

    model_config = _CONFIG

    up: float = _seconds("MLOPS_UP_TIMEOUT", 600.0, "`make up`: each service becoming ready")
    service_start: float = _seconds(
        "MLOPS_SERVICE_START_TIMEOUT", 300.0, "a scoring service started for a check (or by the demo) becoming ready"
    )
    deploy_wait: float = _seconds(
        "MLOPS_DEPLOY_WAIT_TIMEOUT", 300.0, "the deploy step: the service serving the expected versions"
    )
    deploy_request: float = _seconds(
        "MLOPS_DEPLOY_REQUEST_TIMEOUT", 60.0, "one request of the deploy check (a slower answer counts as an error)"
    )
    airflow_start: float = _seconds(
        "MLOPS_AIRFLOW_START_TIMEOUT", 600.0, "the demo's `airflow standalone` answering its API"
    )
    airflow_run: float = _seconds("MLOPS_AIRFLOW_RUN_TIMEOUT", 3600.0, "the demo's `ml_retraining` run finishing")
    api_call: float = _seconds(
        "MLOPS_API_CALL_TIMEOUT", 60.0, "one Airflow REST call (retried until the wait's deadline)"
    )
    progress: float = _seconds("MLOPS_PROGRESS_SECONDS", 15.0, "how often a wait says it is still waiting")
    # Airflow's own default (5 s) failed a task's first try on a busy laptop before its first log line
    execution_api: float = _seconds(
        "MLOPS_EXECUTION_API_TIMEOUT", 60.0, "a task process's calls to Airflow's execution API"
    )


def _port(var: str, default: int) -> Any:
    return _env(var, default=default, ge=1, le=65535)


class LocalPorts(BaseSettings):
    """The ports `make up` (`local.stack`) serves on; the same variables set docker compose's."""

    model_config = _CONFIG

    airflow: int = _port("AIRFLOW_PORT", 8080)
    mlflow: int = _port("MLFLOW_PORT", 5000)
    serve: int = _port("MLOPS_SERVE_PORT", 8000)
    evidently: int = _port("EVIDENTLY_PORT", 8001)


class DemoOverrides(BaseSettings):
    """`make demo`'s story where the environment overrides the spec's `demo` section (`spec_sections.DemoSpec`,
    same field names); None: the spec's value. `DEMO_SCENARIO=none make demo` trains and deploys only."""

    model_config = _CONFIG

    scenario: str | None = _env("DEMO_SCENARIO", default=None)
    history_days: int | None = _env("DEMO_HISTORY_DAYS", default=None, ge=1)
    monitor_days: int | None = _env("DEMO_MONITOR_DAYS", default=None, ge=0)
    drift_days: int | None = _env("DEMO_DRIFT_DAYS", default=None, ge=0)
    rows_per_day: int | None = _env("DEMO_ROWS_PER_DAY", default=None, ge=10)


class ServeConfig(BaseSettings):
    """The scoring service's settings (`python -m include.mlops.serving`), read when it starts.

    | variable | default | meaning |
    |---|---|---|
    | MLOPS_SERVE_HOST | 127.0.0.1 | bind address |
    | MLOPS_SERVE_PORT | 8000 | port |
    | MLOPS_SERVE_POLL_SECONDS | 5 | how often the registry's aliases are read |
    | MLOPS_SERVE_REGISTRY_TIMEOUT | 10 | longest wait for one registry read before /ready says `registry: degraded` |
    | MLOPS_ADMIN_TOKEN | (unset: admin endpoints refuse) | bearer token for POST /admin/* |
    | MLOPS_SERVE_MAX_BODY_BYTES | 1048576 | larger bodies get 413 |
    | MLOPS_SERVE_MAX_RECORDS | 1000 | more records in one request get 413 |
    | MLOPS_SERVE_BATCH_MAX_ROWS | 64 | micro-batch size cap |
    | MLOPS_SERVE_BATCH_WAIT_MS | 2 | how long a batch waits for stragglers under load |
    | MLOPS_SERVE_INLINE | true | score a lone request on the event loop (no thread hand-off) |
    | MLOPS_SERVE_PREDICTION_LOG | true | write the prediction log |
    | MLOPS_SERVE_LOG_FLUSH_SECONDS | 5 | prediction log flush interval |
    | MLOPS_SERVE_LOG_MAX_ROWS | 10000 | prediction log rows per object |
    | MLOPS_SERVE_STRATEGY | (registry tag, then spec) | pins the deployment strategy |
    | MLOPS_SERVE_CANARY_SHARE | (registry tag, then spec) | pins the challenger's share (canary, A/B test) |
    | MLOPS_SERVE_ACCESS_LOG | false | uvicorn access log |
    | MLOPS_SERVE_SPEC | (MLOPS_DATASET) | dataset spec name (installed in a spec directory) |
    """

    # not case-sensitive: the prefix reads `port` from MLOPS_SERVE_PORT (no bare name can collide)
    model_config = SettingsConfigDict(
        frozen=True, extra="ignore", env_ignore_empty=True, case_sensitive=False, env_prefix="MLOPS_SERVE_"
    )

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    poll_seconds: float = Field(5.0, gt=0)
    registry_timeout: float = Field(10.0, gt=0)
    admin_token: str | None = Field(None, validation_alias="MLOPS_ADMIN_TOKEN")
    max_body_bytes: int = Field(1_048_576, ge=1)
    max_records: int = Field(1000, ge=1)
    batch_max_rows: int = Field(64, ge=1)
    batch_wait_ms: float = Field(2.0, ge=0)
    inline: bool = True
    prediction_log: bool = True
    log_flush_seconds: float = Field(5.0, gt=0)
    log_max_rows: int = Field(10_000, ge=1)
    strategy: str | None = None
    canary_share: float | None = Field(None, ge=0, le=1)
    access_log: bool = False
    spec_name: str | None = Field(None, validation_alias="MLOPS_SERVE_SPEC")  # default: MLOPS_DATASET

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, v: str | None) -> str | None:
        from include.mlops.constants import STRATEGIES

        if v is not None and v not in STRATEGIES:
            raise ValueError(f"must be one of {', '.join(STRATEGIES)}")
        return v

    @classmethod
    def from_env(cls) -> ServeConfig:
        """Read now; a value that does not parse is a SettingsError naming its variable."""
        return _read(cls)


def variable(cls: type[BaseSettings], field: str) -> str:
    """The environment variable behind `cls.field` (its first name, if it has several)."""
    alias = cls.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return str(alias) if alias else f"{cls.model_config.get('env_prefix') or ''}{field}".upper()


def _read(cls: type[S]) -> S:
    """`cls()` from the environment; a value that does not parse is a SettingsError naming it."""
    try:
        return cls()
    except ValidationError as exc:
        by_var = {variable(cls, name): f for name, f in cls.model_fields.items()}
        problems = []
        for err in exc.errors():
            loc = str(err["loc"][0]) if err["loc"] else cls.__name__
            var = variable(cls, loc) if loc in cls.model_fields else loc
            msg = str(err["msg"]).removeprefix("Value error, ")
            f = by_var.get(var)
            default = f"; unset it for the default ({f.default})" if f is not None and f.default is not None else ""
            problems.append(f"{var}={err.get('input')!r}: {msg}{default}")
        raise SettingsError("; ".join(problems)) from None


def get_settings() -> Settings:
    """Read the settings now (never at import time), so tests can change the environment."""
    return _read(Settings)


def get_timeouts() -> Timeouts:
    """The waits' deadlines, read now."""
    return _read(Timeouts)


def get_ports() -> LocalPorts:
    """`make up`'s ports, read now."""
    return _read(LocalPorts)


def get_demo_overrides() -> DemoOverrides:
    """The demo's overrides of the spec's `demo` section, read now."""
    return _read(DemoOverrides)


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
