"""What each `ml_training` step hands the next one: one frozen dataclass per step.

A step returns its result; the Airflow task pushes `to_xcom()` (a JSON-ready dict with the same
keys as the fields), and a reader turns it back with `from_xcom`, which takes the dataclass or
the dict and says which step's result is malformed and how. Readers use the fields, never keys.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any, ClassVar, Self


class StepResultError(ValueError):
    """An XCom value that is not the result the reading step expects (missing or unknown fields)."""


class _StepResult:
    STEP: ClassVar[str]

    def to_xcom(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (lists and dicts are copied)."""
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_xcom(cls, value: dict[str, Any] | Self) -> Self:
        """The result itself, or rebuilt from its XCom dict; raises `StepResultError` naming the
        step and the missing or unknown fields."""
        if isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            raise StepResultError(
                f"the {cls.STEP} step's result must be a {cls.__name__} or its XCom dict, got {type(value).__name__}"
                f" (is the upstream task `{cls.STEP}`, and did it succeed?)"
            )
        known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
        required = {n for n, f in known.items() if f.default is MISSING and f.default_factory is MISSING}
        missing, unknown = sorted(required - value.keys()), sorted(value.keys() - known.keys())
        if missing or unknown:
            problems = [f"missing {missing}" if missing else "", f"unknown {unknown}" if unknown else ""]
            raise StepResultError(
                f"the {cls.STEP} step's result does not match {cls.__name__}: "
                + "; ".join(p for p in problems if p)
                + f" (expected fields: {sorted(known)}; was it pushed by a different version of the step?)"
            )
        return cls(**value)


@dataclass(frozen=True)
class ExtractResult(_StepResult):
    """Staged event objects (one per day), their row count, the labels that arrived, the days."""

    STEP: ClassVar[str] = "extract"
    staged: list[str]
    rows: int
    labels: int
    days: list[str]


@dataclass(frozen=True)
class ValidateResult(_StepResult):
    """The GX reports (one per day, the last as `report_uri`), value-skew warnings, rows validated.
    The validate task adds the HTML report's URI and, when logged, its MLflow URL."""

    STEP: ClassVar[str] = "validate"
    reports: list[str]
    report_uri: str
    warnings: list[str]
    rows: int
    report_html: str | None = None
    report_url: str | None = None


@dataclass(frozen=True)
class PrepareResult(_StepResult):
    """The Feast offline source files written, the feature service, the entities materialised."""

    STEP: ClassVar[str] = "prepare"
    feature_uris: list[str]
    feature_service: str
    materialized: int


@dataclass(frozen=True)
class TrainResult(_StepResult):
    """The MLflow run and model, the split's objects, the data hash and row counts; `reused` when
    a finished run of the same interval and data was found (then `candidates` is not known)."""

    STEP: ClassVar[str] = "train"
    run_id: str
    experiment_id: str
    model_uri: str
    train_uri: str
    holdout_uri: str
    data_hash: str
    rows: dict[str, int]
    reused: bool
    candidates: int | None = None


@dataclass(frozen=True)
class EvaluateResult(_StepResult):
    """The gate's decision and why, the challenger's and the champion's holdout metrics (no
    champion: None); `reused` when the decision recorded before an earlier promotion was read back."""

    STEP: ClassVar[str] = "evaluate"
    passed: bool
    reasons: list[str]
    metrics: dict[str, float]
    champion_metrics: dict[str, float] | None = None
    champion_version: str | None = None
    nan_predictions: int = 0
    reused: bool = False


@dataclass(frozen=True)
class RegisterResult(_StepResult):
    """The model version (alias `challenger`), whether this call created it, its MLflow run and
    the run's experiment."""

    STEP: ClassVar[str] = "register"
    model: str
    version: str
    created: bool
    run_id: str
    experiment_id: str | None = None


@dataclass(frozen=True)
class PromoteResult(_StepResult):
    """What the deploy step did: whether `champion` moved and to which version (`gate_passed`
    False is a gate rejection), for the registered `model` `version` and its MLflow run.
    `previous`, `move`, `move_status` and `resumed` describe the ledger move when there was one;
    `strategy` is the one the rollout ran; `checked` says the post-deployment check passed on
    `service_url` (its report `check`, its load figures `deploy_*`). The staged check and the
    live phases' reports (`canary_steps`, `shadow_report`, `ab_test` with its `outcome`) are
    there when the strategy had them."""

    STEP: ClassVar[str] = "deploy"
    promoted: bool
    message: str
    champion: str | None
    gate_passed: bool
    model: str | None = None
    version: str | None = None
    run_id: str | None = None
    experiment_id: str | None = None
    previous: str | None = None
    move: str | None = None
    move_status: str | None = None
    resumed: bool = False
    strategy: str | None = None
    checked: bool = False
    staged_check: dict[str, Any] | None = None
    check: dict[str, Any] | None = None
    service_url: str | None = None
    deploy_rps: float | None = None
    deploy_p50_ms: float | None = None
    deploy_p95_ms: float | None = None
    deploy_p99_ms: float | None = None
    deploy_errors: int | None = None
    canary_steps: list[dict[str, Any]] | None = None
    shadow_report: dict[str, Any] | None = None
    ab_test: dict[str, Any] | None = None
    outcome: str | None = None
