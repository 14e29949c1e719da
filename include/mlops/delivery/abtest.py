"""The A/B test: the champion and the challenger answer different entities (a sticky split, see
`serving.routing`) until each arm has `ab_test.samples_per_arm` labelled outcomes or the period
ends; then one statistical test on the outcomes decides, once (a fixed-horizon test: judging
every poll and stopping at the first small p-value would inflate the false-win rate).

Each answered request whose label has arrived is one outcome of its arm:

| metric | outcome per row | better | test |
|---|---|---|---|
| accuracy (classification default) | 1 when the answer is the label's class, else 0 | higher | two-proportion z-test |
| log_loss (binary only) | -log of the probability the score gave the true class | lower | Welch's t-test |
| abs_error (regression default) | abs(prediction - label) | lower | Welch's t-test |
| squared_error | (prediction - label) squared | lower | Welch's t-test |

The effect is the challenger's improvement over the champion in the metric's units, positive
when the challenger is better (accuracy: challenger - champion; a loss: champion - challenger),
with its confidence interval at 1 - `significance`. The decision:

- challenger wins: p < significance and effect >= `min_effect`: it becomes champion;
- champion wins: p < significance and the effect favours the champion;
- inconclusive otherwise (not significant, an improvement smaller than `min_effect`, or fewer
  than `samples_per_arm` outcomes per arm when the period ended): the champion is kept.

`decide` is pure (arrays in, `ABResult` out); `abwindow.ab_outcomes` reads them from the
prediction log of the test's window and the labels that arrived.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from include.mlops.constants import AB_TEST_METRICS

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from include.mlops.spec import DatasetSpec
    from include.mlops.spec_sections import ABTestSpec

ARMS = ("champion", "challenger")  # the prediction log's variants of the two arms
HIGHER_IS_BETTER = frozenset({"accuracy"})
CLASSIFICATION_METRICS = AB_TEST_METRICS["classification"]
REGRESSION_METRICS = AB_TEST_METRICS["regression"]
EPS = 1e-15  # probabilities are clipped to [EPS, 1 - EPS] for the log loss (as sklearn does)
CHALLENGER_WINS, CHAMPION_WINS, INCONCLUSIVE = "challenger", "champion", "inconclusive"


# -- outcomes -------------------------------------------------------------------------------------------
def outcome_metric(cfg: ABTestSpec, spec: DatasetSpec) -> str:
    """`ab_test.metric`, or the task's default (accuracy / abs_error); refused when it does not
    fit the task, naming the ones that do."""
    metric = cfg.metric or ("accuracy" if spec.is_classification else "abs_error")
    fits = CLASSIFICATION_METRICS if spec.is_classification else REGRESSION_METRICS
    if metric not in fits:
        raise ValueError(
            f"deployment.ab_test.metric {metric!r} does not fit the {spec.task} task of {spec.name!r}: "
            f"use one of {', '.join(fits)} (or leave it unset for {fits[0]})"
        )
    if metric == "log_loss" and spec.is_multiclass:
        raise ValueError(
            f"deployment.ab_test.metric 'log_loss' needs the true class's probability, and for a multiclass "
            f"model the prediction log keeps only the predicted class's: use accuracy for {spec.name!r}"
        )
    return metric


def _text(values: Any) -> pd.Series:
    """Class values as comparable text (`scores.label_text`): 1, 1.0 and "1" are one class."""
    import pandas as pd

    from include.mlops.scores import label_text, plain

    return pd.Series(list(values), dtype="object").map(lambda v: label_text(plain(v)))


def _positive(labels: Any, spec: DatasetSpec) -> np.ndarray:
    """1.0 where a label is the positive class (`label.positive_class`, else 1 / true)."""
    import numpy as np

    from include.mlops.scores import label_text

    text = _text(labels)
    wanted = spec.label_spec.positive_class
    if wanted is None:
        unknown = sorted(set(text) - {"0", "1", "true", "false"})
        if unknown:
            raise ValueError(
                f"label {spec.label!r} has classes {unknown[:5]}, not 0/1 or false/true: set "
                f"label.positive_class in the spec to the class whose probability is the score"
            )
        return text.isin({"1", "true"}).to_numpy(dtype=np.float64)
    return (text == label_text(wanted)).to_numpy(dtype=np.float64)


def row_outcomes(rows: pd.DataFrame, metric: str, spec: DatasetSpec) -> np.ndarray:
    """One outcome per labelled prediction-log row (columns `prediction`, `score` and the label)."""
    import numpy as np

    label = rows[spec.label]
    if metric == "accuracy":
        return (_text(rows["prediction"]) == _text(label)).to_numpy(dtype=np.float64)
    if metric == "log_loss":
        y = _positive(label, spec)
        p = np.clip(rows["score"].to_numpy(dtype=np.float64), EPS, 1 - EPS)
        return -(y * np.log(p) + (1 - y) * np.log1p(-p))
    error = rows["prediction"].to_numpy(dtype=np.float64) - label.to_numpy(dtype=np.float64)
    if metric == "abs_error":
        return np.abs(error)
    if metric == "squared_error":
        return error**2
    raise ValueError(f"unknown A/B outcome metric {metric!r}: use one of {CLASSIFICATION_METRICS + REGRESSION_METRICS}")


@dataclass
class ABOutcomes:
    """Per-arm outcomes of a test window (`row_outcomes`), and what else the report shows."""

    metric: str
    champion: np.ndarray
    challenger: np.ndarray
    versions: dict[str, list[str]] = field(default_factory=dict)  # arm -> model versions that answered
    answered: dict[str, int] = field(default_factory=dict)  # arm -> answered requests, labelled or not
    since: str | None = None  # the window, ISO 8601 UTC
    until: str | None = None


# -- the test -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Test:
    name: str
    effect: float
    ci_low: float
    ci_high: float
    p_value: float


def _two_proportions(champion: np.ndarray, challenger: np.ndarray, alpha: float) -> _Test:
    """Two-proportion z-test (pooled standard error) and a Wald interval (unpooled) for
    challenger - champion."""
    from scipy import stats

    n1, n2 = len(champion), len(challenger)
    p1, p2 = float(champion.mean()), float(challenger.mean())
    effect = p2 - p1
    pooled = float(champion.sum() + challenger.sum()) / (n1 + n2)
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    p_value = float(2 * stats.norm.sf(abs(effect) / se0)) if se0 > 0 else (1.0 if effect == 0 else 0.0)
    half = float(stats.norm.ppf(1 - alpha / 2)) * math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    return _Test("two-proportion z-test", effect, effect - half, effect + half, p_value)


def _welch(champion: np.ndarray, challenger: np.ndarray, alpha: float) -> _Test:
    """Welch's t-test on per-row losses; the effect is champion - challenger (lower loss is better)."""
    from scipy import stats

    effect = float(champion.mean() - challenger.mean())
    v1, v2 = float(champion.var(ddof=1)) / len(champion), float(challenger.var(ddof=1)) / len(challenger)
    se = math.sqrt(v1 + v2)
    if se == 0:  # both arms constant: the difference is exact
        return _Test("Welch's t-test", effect, effect, effect, 1.0 if effect == 0 else 0.0)
    dof = (v1 + v2) ** 2 / (v1**2 / (len(champion) - 1) + v2**2 / (len(challenger) - 1))
    p_value = float(2 * stats.t.sf(abs(effect) / se, dof))
    half = float(stats.t.ppf(1 - alpha / 2, dof)) * se
    return _Test("Welch's t-test", effect, effect - half, effect + half, p_value)


# -- the result -----------------------------------------------------------------------------------------
def _num(x: float | None, digits: int = 4, sign: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def _named(arm: str, version: str | None) -> str:
    return f"{arm} v{version}" if version else arm


def _p(x: float | None) -> str:
    """A p-value: 4 decimals, or scientific below 0.0001 (never a bare 0.0000)."""
    if x is None or math.isnan(x):
        return "-"
    return f"{x:.1e}" if x < 1e-4 else f"{x:.4f}"


@dataclass
class ABResult:
    """The A/B test's outcome: the numbers, the decision and why."""

    metric: str
    decision: str  # CHALLENGER_WINS | CHAMPION_WINS | INCONCLUSIVE
    reasons: list[str]
    n_champion: int
    n_challenger: int
    champion_value: float | None  # the metric per arm (accuracy, or the mean loss)
    challenger_value: float | None
    effect: float | None  # the challenger's improvement, in the metric's units (> 0: challenger better)
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    test: str | None
    significance: float
    min_effect: float
    samples_per_arm: int
    champion_version: str | None = None
    challenger_version: str | None = None
    answered: dict[str, int] = field(default_factory=dict)
    since: str | None = None
    until: str | None = None

    @property
    def promote(self) -> bool:
        """Whether the challenger becomes champion."""
        return self.decision == CHALLENGER_WINS

    @property
    def winner_version(self) -> str | None:
        """The version that is champion after the test (the champion's when inconclusive)."""
        return self.challenger_version if self.promote else self.champion_version

    def summary(self) -> str:
        """One line: the decision, the effect with its interval, p and the sample per arm."""
        who = {
            CHALLENGER_WINS: f"{_named('challenger', self.challenger_version)} wins",
            CHAMPION_WINS: f"{_named('champion', self.champion_version)} wins (kept)",
            INCONCLUSIVE: f"inconclusive, {_named('champion', self.champion_version)} kept",
        }[self.decision]
        level = f"{100 * (1 - self.significance):g}%"
        return (
            f"A/B test on {self.metric}: {who}; effect {_num(self.effect, sign=True)} "
            f"({level} CI {_num(self.ci_low, sign=True)} to {_num(self.ci_high, sign=True)}), "
            f"p={_p(self.p_value)}, n={self.n_champion}/{self.n_challenger} (champion/challenger)"
        )

    def table(self) -> str:
        """The task log's report (markdown): the arms, then the test and the decision."""
        better = "higher" if self.metric in HIGHER_IS_BETTER else "lower"
        level = f"{100 * (1 - self.significance):g}%"
        lines = [
            f"| A/B test | {_named('champion', self.champion_version)} | {_named('challenger', self.challenger_version)} |",
            "|---|---|---|",
            f"| answered requests | {self.answered.get('champion', '-')} | {self.answered.get('challenger', '-')} |",
            f"| labelled outcomes (of {self.samples_per_arm} wanted) | {self.n_champion} | {self.n_challenger} |",
            f"| {self.metric} ({better} is better) | {_num(self.champion_value)} | {_num(self.challenger_value)} |",
            "",
            f"| effect (challenger's gain) | {level} CI | p-value | test | significance | min effect | decision |",
            "|---|---|---|---|---|---|---|",
            f"| {_num(self.effect, sign=True)} | [{_num(self.ci_low, sign=True)}, {_num(self.ci_high, sign=True)}] "
            f"| {_p(self.p_value)} | {self.test or '-'} | {self.significance:g} | {self.min_effect:g} "
            f"| **{self.decision}** |",
        ]
        return "\n".join([*lines, "", *(f"- {r}" for r in self.reasons)])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (XCom, the ledger, `deployment/ab_test.json`); NaN becomes None."""
        out = asdict(self)
        for k, v in out.items():
            if isinstance(v, float) and math.isnan(v):
                out[k] = None
        return {**out, "promote": self.promote, "winner_version": self.winner_version, "summary": self.summary()}

    def mlflow_metrics(self) -> dict[str, float]:
        """Numeric fields as run metrics (`ab_<name>`); missing ones left out."""
        fields = {
            "n_champion": self.n_champion,
            "n_challenger": self.n_challenger,
            "champion_value": self.champion_value,
            "challenger_value": self.challenger_value,
            "effect": self.effect,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "p_value": self.p_value,
            "promoted": float(self.promote),
        }
        return {f"ab_{k}": float(v) for k, v in fields.items() if v is not None and not math.isnan(float(v))}


# -- the decision ---------------------------------------------------------------------------------------
def _verdict(t: _Test, cfg: ABTestSpec, short: list[str]) -> tuple[str, list[str]]:
    level = f"{100 * (1 - cfg.significance):g}%"
    where = f"effect {t.effect:+.4f}, {level} CI [{t.ci_low:+.4f}, {t.ci_high:+.4f}], p={_p(t.p_value)}"
    if short:
        return INCONCLUSIVE, [*short, f"not decided on the smaller sample ({where})"]
    if t.p_value >= cfg.significance:
        return INCONCLUSIVE, [f"no significant difference at {cfg.significance:g} ({where})"]
    if t.effect < 0:
        return CHAMPION_WINS, [f"the champion is significantly better ({where})"]
    if t.effect < cfg.min_effect:
        return INCONCLUSIVE, [
            f"the challenger is significantly better but by less than ab_test.min_effect {cfg.min_effect:g} ({where})"
        ]
    return CHALLENGER_WINS, [f"the challenger is significantly better by at least {cfg.min_effect:g} ({where})"]


def _version(outcomes: ABOutcomes, arm: str) -> str | None:
    seen = outcomes.versions.get(arm) or []
    return ",".join(seen) if seen else None


def decide(outcomes: ABOutcomes, cfg: ABTestSpec, spec: DatasetSpec) -> ABResult:
    """The test on the two arms' outcomes and the decision (see the module docstring). Called
    once: when both arms have `cfg.samples_per_arm` outcomes, or when the period has ended."""
    import numpy as np

    metric = outcome_metric(cfg.model_copy(update={"metric": outcomes.metric}), spec)  # fits the task
    champion = np.asarray(outcomes.champion, dtype=np.float64)
    challenger = np.asarray(outcomes.challenger, dtype=np.float64)
    n1, n2 = len(champion), len(challenger)
    base: dict[str, Any] = {
        "metric": metric,
        "n_champion": n1,
        "n_challenger": n2,
        "champion_value": float(champion.mean()) if n1 else None,
        "challenger_value": float(challenger.mean()) if n2 else None,
        "significance": cfg.significance,
        "min_effect": cfg.min_effect,
        "samples_per_arm": cfg.samples_per_arm,
        "champion_version": _version(outcomes, "champion"),
        "challenger_version": _version(outcomes, "challenger"),
        "answered": dict(outcomes.answered),
        "since": outcomes.since,
        "until": outcomes.until,
    }
    short = [
        f"only {n} labelled outcomes for the {arm} of the {cfg.samples_per_arm} ab_test.samples_per_arm "
        f"when the period ended"
        for arm, n in (("champion", n1), ("challenger", n2))
        if n < cfg.samples_per_arm
    ]
    if min(n1, n2) < 2:
        return ABResult(
            decision=INCONCLUSIVE,
            reasons=[*short, "too few outcomes in an arm for any test"],
            effect=None,
            ci_low=None,
            ci_high=None,
            p_value=None,
            test=None,
            **base,
        )
    run = _two_proportions if metric == "accuracy" else _welch
    t = run(champion, challenger, cfg.significance)
    decision, reasons = _verdict(t, cfg, short)
    return ABResult(
        decision=decision,
        reasons=reasons,
        effect=t.effect,
        ci_low=t.ci_low,
        ci_high=t.ci_high,
        p_value=t.p_value,
        test=t.name,
        **base,
    )
