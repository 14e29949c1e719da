"""The dataset spec's sections: one typed model per YAML section, each default written here once.

A `None` default follows from another field (its comment says which); `DatasetSpec` (spec.py)
assembles the sections and fills most of those once parsed. The README's "Bring your own data"
section documents each field.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from include.mlops.constants import STRATEGIES

NUMERIC_TYPES = {"int", "float"}
FEATURE_TYPES = NUMERIC_TYPES | {"category"}
LabelValue = bool | int | str


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class SourceSpec(_Section):
    format: Literal["parquet", "csv"] = "parquet"
    landing_prefix: str | None = None  # default raw/<name>
    csv_delimiter: str = Field(",", min_length=1, max_length=1)
    rename: dict[str, str] = Field(default_factory=dict)  # file column -> spec name, applied at extract


class EntitySpec(_Section):
    name: str
    key: str
    dtype: Literal["int64", "string"] = "int64"


class LabelSpec(_Section):
    name: str
    feed: Literal["separate", "inline"] = "separate"
    feed_prefix: str | None = None  # default <landing_prefix>/labels
    delay_days: int = Field(0, ge=0)
    positive_class: LabelValue | None = None
    classes: list[LabelValue] | None = None


class Feature(_Section):
    name: str = ""
    type: Literal["int", "float", "category"]
    required: bool = True
    range: tuple[float, float] | None = None
    values: tuple[str, ...] | None = None

    @field_validator("values", mode="before")
    @classmethod
    def _values_as_text(cls, v: Any) -> Any:
        return tuple(str(x) for x in v) if isinstance(v, list | tuple) else v

    @model_validator(mode="after")
    def _consistent(self) -> Feature:
        if self.range is not None:
            if self.type == "category":
                raise ValueError("range applies to int and float features; a category lists its `values`")
            if self.range[0] > self.range[1]:
                raise ValueError(f"range must be [low, high] with low <= high, not {list(self.range)}")
        if self.values is not None and self.type != "category":
            raise ValueError(f"values apply to category features; a {self.type} feature takes a `range`")
        return self

    @property
    def is_numeric(self) -> bool:
        return self.type in NUMERIC_TYPES


class ValidationSpec(_Section):
    max_bad_fraction: float = Field(0.01, ge=0, le=1)
    time_tolerance_hours: float = Field(0.0, ge=0)  # event times may stray this far outside their day


class TrainingSpec(_Section):
    window_days: int = Field(14, ge=1)
    holdout_days: int = Field(2, ge=1)
    min_rows: int = Field(500, ge=1)

    @model_validator(mode="after")
    def _holdout_inside_window(self) -> TrainingSpec:
        if self.holdout_days >= self.window_days:
            raise ValueError(
                f"holdout_days ({self.holdout_days}) must be smaller than window_days ({self.window_days}): "
                "the holdout is the newest days of the window"
            )
        return self


class SearchSpec(_Section):
    n_iter: int = Field(5, ge=1)
    cv_folds: int = Field(3, ge=2)
    budget_seconds: float = Field(300, ge=0)  # 0: one candidate only
    space: dict[str, list[Any]] = Field(default_factory=dict)


class ModelSpec(_Section):
    family: str = "hist_gradient_boosting"
    params: dict[str, Any] = Field(default_factory=dict)
    search: SearchSpec = Field(default_factory=SearchSpec)
    primary_metric: str | None = None  # default by task: roc_auc, f1_macro or r2


class GateSpec(_Section):
    minimums: dict[str, float] = Field(default_factory=dict)
    max_regression: float = Field(0.02, ge=0)
    slice_max_regression: float | None = Field(None, ge=0)  # default: max_regression
    slices: list[str] = Field(default_factory=list)
    slice_min_rows: int = Field(30, ge=1)
    # slow-decay guard: the challenger against the best, on the same holdout, of the last N
    # champions and the baseline (the first champion, or the last one a person put in place)
    reference_champions: int = Field(5, ge=0, le=20)  # 0 turns the reference check off
    cumulative_max_regression: float | None = Field(None, ge=0)  # default: max_regression
    # paired bootstrap of the primary metric's difference on the holdout rows (0: bare difference)
    bootstrap_resamples: int = Field(300, ge=0, le=5000)
    confidence: float = Field(0.95, gt=0.5, lt=1)
    # when the champion cannot score the holdout because it needs features the spec no longer has
    feature_change: Literal["minimums", "refuse"] = "minimums"

    @field_validator("bootstrap_resamples")
    @classmethod
    def _enough_resamples(cls, v: int) -> int:
        if 0 < v < 50:
            raise ValueError(
                f"{v} resamples give no usable confidence bound: use at least 50, or 0 to compare bare differences"
            )
        return v


class LoadTestSpec(_Section):
    requests: int = Field(200, ge=1)
    concurrency: int = Field(4, ge=1)
    warmup: int | None = Field(None, ge=0)


class LivePhaseSpec(_Section):
    """How long a phase on live traffic lasts before it is judged (a canary step, a shadow phase)."""

    soak_seconds: float = Field(60.0, ge=0)  # least time the phase runs
    min_requests: int = Field(100, ge=0)  # live requests the new version must have taken before judging
    deadline_seconds: float = Field(1800.0, gt=0)  # longest the phase waits for min_requests, from its start
    on_deadline: Literal["rollback", "judge"] = "rollback"  # too few requests by then: end it, or judge what came
    poll_seconds: float = Field(5.0, gt=0)  # how often the waiting trigger counts requests


class CanarySpec(LivePhaseSpec):
    """A canary in steps, each judged against the champion on that step's live traffic."""

    steps: list[float] = Field(default_factory=lambda: [0.05, 0.25, 0.5])  # shares before the full switch
    max_error_rate_increase: float = Field(0.01, ge=0, le=1)  # canary error rate minus the champion's
    max_latency_ratio: float = Field(1.5, gt=1)  # canary p95 latency over the champion's
    max_score_distance: float = Field(0.3, gt=0, le=1)  # two-sample KS statistic between their scores
    max_metric_drop: float = Field(0.05, ge=0)  # primary metric, where labels have arrived
    min_labelled: int = Field(30, ge=1)  # labelled rows per side before the metric is judged

    @field_validator("steps")
    @classmethod
    def _increasing_shares(cls, v: list[float]) -> list[float]:
        if not v:
            raise ValueError("give at least one step, e.g. [0.05, 0.25, 0.5]; the full switch follows the last")
        if any(not 0 < x < 1 for x in v):
            raise ValueError(f"each step is a share of traffic strictly between 0 and 1, not {v}")
        if any(b <= a for a, b in zip(v, v[1:], strict=False)):
            raise ValueError(f"steps must grow, each larger than the one before: {v}")
        return v


class ShadowSpec(LivePhaseSpec):
    """A shadow phase: the new version scores live requests beside the champion, answers none."""

    min_agreement: float = Field(0.9, ge=0, le=1)  # share of requests with the champion's answer (class)
    max_mean_score_diff: float = Field(0.1, ge=0)  # mean |shadow score - champion score|
    max_latency_ratio: float = Field(2.0, gt=1)  # shadow scoring p95 over the champion's
    max_error_rate: float = Field(0.01, ge=0, le=1)  # shadow rows that failed to score


class ABTestSpec(_Section):
    """An A/B test: champion and challenger split traffic by entity until enough labelled
    outcomes (or the period ends); a statistical test on the outcome decides."""

    share: float = Field(0.5, gt=0, lt=1)  # the challenger arm's share of entities
    samples_per_arm: int = Field(200, ge=10)  # labelled outcomes per arm that end the test
    period_seconds: float = Field(7 * 24 * 3600.0, gt=0)  # the test ends then with what it has
    metric: Literal["accuracy", "log_loss", "abs_error", "squared_error"] | None = None  # None: by task
    significance: float = Field(0.05, gt=0, lt=0.5)
    min_effect: float = Field(0.02, ge=0)  # least improvement (in the metric's units) that counts
    poll_seconds: float = Field(60.0, gt=0)


class DeploymentSpec(_Section):
    strategy: str = "direct"  # one of constants.STRATEGIES
    canary: CanarySpec = Field(default_factory=CanarySpec)
    shadow: ShadowSpec = Field(default_factory=ShadowSpec)
    ab_test: ABTestSpec = Field(default_factory=ABTestSpec)
    latency_budget_ms: dict[str, float] = Field(default_factory=dict)  # an explicit SLO, e.g. {p99: 500}
    max_latency_ratio: float = Field(3.0, gt=1)  # new version's p50 and p95 over the current one's, same check
    max_error_rate: float = Field(0.0, ge=0, le=1)
    load_test: LoadTestSpec = Field(default_factory=LoadTestSpec)

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, v: str) -> str:
        if v not in STRATEGIES:
            raise ValueError(f"{v!r} is not a strategy: use one of {', '.join(STRATEGIES)}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "canary_share" in data:
            raise ValueError(
                "deployment.canary_share was replaced by deployment.canary.steps, the canary's shares in order "
                f"(e.g. canary: {{steps: [{data['canary_share']}]}} for one step)"
            )
        return data


class DriftSpec(_Section):
    num_method: str = "wasserstein"
    num_threshold: float = Field(0.1, gt=0)
    cat_method: str = "jensenshannon"
    cat_threshold: float = Field(0.1, gt=0)
    prediction_method: str | None = None  # default: num_method
    prediction_threshold: float | None = Field(None, gt=0)  # default: num_threshold


class PolicySpec(_Section):
    min_rows: int = Field(500, ge=1)
    drift_share: float = Field(0.25, gt=0, le=1)
    performance_drop: float = Field(0.05, ge=0)
    min_labelled_rows: int | None = Field(None, ge=1)  # default: min(min_rows, 200)
    consecutive_windows: int = Field(1, ge=1)
    cooldown_days: float = Field(2.0, ge=0)
    max_bad_fraction: float | None = Field(None, ge=0, le=1)  # default: validation.max_bad_fraction


class RetrainingSpec(_Section):
    data_strategy: Literal["sliding_window", "all_history", "new_data_only"] = "sliding_window"
    window_days: int | None = Field(None, ge=1)  # default: training.window_days


class MonitoringSpec(_Section):
    window_days: int = Field(1, ge=1)
    sample_rows: int = Field(100_000, ge=100)
    sample_seed: int = 7
    label_lookback_days: int | None = Field(None, ge=0)  # default: label.delay_days
    drift: DriftSpec = Field(default_factory=DriftSpec)
    policy: PolicySpec = Field(default_factory=PolicySpec)
    retraining: RetrainingSpec = Field(default_factory=RetrainingSpec)


class DemoSpec(_Section):
    rows_per_day: int = Field(1000, ge=10)
    start: str = "2026-10-01"
    history_days: int | None = Field(None, ge=1)  # default: training window + label delay
    monitor_days: int = Field(3, ge=0)
    drift_days: int = Field(2, ge=0)
    scenario: str = "covariate_drift"
    seed: int = 0


class FeatureStoreSpec(_Section):
    ttl_days: int = Field(2, ge=1)
