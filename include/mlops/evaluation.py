"""Evaluation: holdout metrics, per-slice metrics, and the promotion gate."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from include.mlops.spec import DatasetSpec

from include.mlops.constants import LOWER_IS_BETTER


def predict_scores(model: Any, X: pd.DataFrame, spec: DatasetSpec) -> Any:
    """Positive-class probability (classification) or the prediction (regression)."""
    if spec.is_classification:
        return model.predict_proba(X)[:, 1]
    return model.predict(X)


def metrics(y_true: Any, scores: Any, spec: DatasetSpec) -> dict[str, float]:
    import numpy as np
    from sklearn import metrics as m

    y_true = np.asarray(y_true)
    scores = np.asarray(scores, dtype=float)
    if spec.is_classification:
        pred = (scores >= 0.5).astype(int)
        out = {
            "accuracy": m.accuracy_score(y_true, pred),
            "precision": m.precision_score(y_true, pred, zero_division=0),
            "recall": m.recall_score(y_true, pred, zero_division=0),
            "f1": m.f1_score(y_true, pred, zero_division=0),
        }
        both = len(np.unique(y_true)) == 2
        out["roc_auc"] = m.roc_auc_score(y_true, scores) if both else float("nan")
        out["log_loss"] = m.log_loss(y_true, np.clip(scores, 1e-7, 1 - 1e-7), labels=[0, 1])
    else:
        out = {
            "rmse": float(np.sqrt(m.mean_squared_error(y_true, scores))),
            "mae": m.mean_absolute_error(y_true, scores),
            "r2": m.r2_score(y_true, scores) if len(y_true) > 1 else float("nan"),
        }
    return {k: float(v) for k, v in out.items()}


def slice_metrics(df: pd.DataFrame, scores: Any, spec: DatasetSpec) -> dict[str, dict[str, float]]:
    """Metrics for each value of each slice column the spec names ("plan=basic": {...})."""
    import numpy as np

    min_rows = spec.gate.slice_min_rows
    scores = np.asarray(scores)
    out: dict[str, dict[str, float]] = {}
    for col in spec.gate.slices:
        for value, idx in df.groupby(col, dropna=False).indices.items():
            if len(idx) < min_rows:
                continue
            out[f"{col}={value}"] = {
                **metrics(df[spec.label].to_numpy()[idx], scores[idx], spec),
                "rows": float(len(idx)),
            }
    return out


@dataclass
class GateCheck:
    check: str
    value: float | None
    threshold: float | None
    passed: bool
    note: str = ""


@dataclass
class GateDecision:
    passed: bool
    checks: list[GateCheck] = field(default_factory=list)

    @property
    def reasons(self) -> list[str]:
        return [f"{c.check}: {c.note}" for c in self.checks if not c.passed]

    def table(self) -> str:
        """A fixed-width table for the task log and the run."""
        head = f"{'check':<44} {'value':>10} {'threshold':>10}  result"
        lines = [head, "-" * len(head)]
        for c in self.checks:
            v = "" if c.value is None else f"{c.value:.4f}"
            t = "" if c.threshold is None else f"{c.threshold:.4f}"
            lines.append(f"{c.check:<44} {v:>10} {t:>10}  {'pass' if c.passed else 'FAIL'} {c.note}".rstrip())
        lines.append(f"decision: {'PROMOTE' if self.passed else 'KEEP CHAMPION'}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "reasons": self.reasons, "checks": [asdict(c) for c in self.checks]}


def _worse_by(metric: str, challenger: float, champion: float) -> float:
    """How much worse the challenger is (positive = worse), whatever the metric's direction."""
    return challenger - champion if metric.split(".")[-1] in LOWER_IS_BETTER else champion - challenger


def gate(
    spec: DatasetSpec,
    challenger: dict[str, float],
    challenger_slices: dict[str, dict[str, float]],
    nan_predictions: int,
    champion: dict[str, float] | None = None,
    champion_slices: dict[str, dict[str, float]] | None = None,
) -> GateDecision:
    """Absolute minimums, no NaN predictions, no regression against the champion overall or per slice."""
    primary = spec.primary_metric
    checks = [
        GateCheck(
            "no NaN predictions",
            float(nan_predictions),
            0.0,
            nan_predictions == 0,
            "" if nan_predictions == 0 else f"{nan_predictions} NaN predictions",
        )
    ]
    for metric, minimum in (spec.gate.minimums).items():
        v = challenger.get(metric, float("nan"))
        ok = not math.isnan(v) and (v <= minimum if metric in LOWER_IS_BETTER else v >= minimum)
        checks.append(
            GateCheck(f"minimum {metric}", v, float(minimum), ok, "" if ok else f"{v:.4f} vs minimum {minimum}")
        )
    if champion is None:
        checks.append(GateCheck("vs champion", None, None, True, "no champion yet"))
    else:
        tol = spec.gate.max_regression
        worse = _worse_by(primary, challenger[primary], champion[primary])
        checks.append(
            GateCheck(
                f"regression of {primary} vs champion",
                worse,
                tol,
                worse <= tol,
                f"champion {champion[primary]:.4f}, challenger {challenger[primary]:.4f}",
            )
        )
        stol = float(spec.gate.slice_max_regression or tol)
        for name, m in sorted(challenger_slices.items()):
            ref = (champion_slices or {}).get(name)
            if ref is None or math.isnan(ref.get(primary, float("nan"))) or math.isnan(m.get(primary, float("nan"))):
                continue
            worse = _worse_by(primary, m[primary], ref[primary])
            checks.append(
                GateCheck(
                    f"slice {name} {primary} regression",
                    worse,
                    stol,
                    worse <= stol,
                    "" if worse <= stol else f"champion {ref[primary]:.4f}, challenger {m[primary]:.4f}",
                )
            )
    return GateDecision(all(c.passed for c in checks), checks)
