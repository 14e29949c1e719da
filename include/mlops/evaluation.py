"""Evaluation: holdout metrics, per-slice metrics, and the promotion gate."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from include.mlops.spec import DatasetSpec

from include.mlops.constants import LOWER_IS_BETTER
from include.mlops.scores import DECISION_THRESHOLD, Scored, is_positive, score_model


def predict_scores(model: Any, X: pd.DataFrame, spec: DatasetSpec) -> Any:
    """Positive-class probability (binary), predicted-class probability (multiclass) or the
    prediction (regression): `scores.score_model(...).score`."""
    return score_model(model, X, spec).score


def metrics(y_true: Any, scores: Any, spec: DatasetSpec, classes: Any = None) -> dict[str, float]:
    """The task's metrics (constants.BINARY_METRICS, MULTICLASS_METRICS, REGRESSION_METRICS).

    `scores` is a `Scored` (what `scores.score_model` returns) or, for binary and regression, the
    1-D scores alone (the positive class's probability, with the model's `classes`). A
    multiclass `Scored` without probabilities (a prediction log) gives NaN for roc_auc_ovr and
    log_loss."""
    import numpy as np

    y_true = np.asarray(y_true)
    if spec.is_multiclass:
        if not isinstance(scores, Scored):
            raise TypeError("multiclass metrics need the model's Scored output (classes and probabilities)")
        out = _multiclass(y_true, scores)
    elif spec.is_classification:
        if isinstance(scores, Scored):
            classes = scores.classes if classes is None else classes
            scores = scores.score
        out = _binary(y_true, np.asarray(scores, dtype=float), spec, classes)
    else:
        from sklearn import metrics as m

        scores = np.asarray(scores.score if isinstance(scores, Scored) else scores, dtype=float)
        scores = np.nan_to_num(scores, nan=0.0)  # NaN predictions fail the gate on their own count
        out = {
            "rmse": float(np.sqrt(m.mean_squared_error(y_true, scores))),
            "mae": m.mean_absolute_error(y_true, scores),
            "r2": m.r2_score(y_true, scores) if len(y_true) > 1 else float("nan"),
        }
    return {k: float(v) for k, v in out.items()}


def _label_classes(y_true: Any, spec: DatasetSpec) -> list[Any]:
    """The classes when the caller has no model at hand: the spec's list, else the labels seen
    (with the default's other class when only one was seen)."""
    import pandas as pd

    from include.mlops.scores import class_values

    if spec.label_spec.classes is not None:
        return list(spec.label_spec.classes)
    seen = class_values(pd.unique(pd.Series(y_true).dropna()))
    if len(seen) == 1 and spec.label_spec.positive_class is not None:
        return [*seen, spec.label_spec.positive_class]
    if len(seen) == 1:
        return [False, True] if isinstance(seen[0], bool) else [0, 1]
    return seen


def _binary(y_true: Any, scores: Any, spec: DatasetSpec, classes: Any) -> dict[str, float]:
    import numpy as np
    from sklearn import metrics as m

    y = is_positive(y_true, _label_classes(y_true, spec) if classes is None else classes, spec)
    scores = np.nan_to_num(scores, nan=DECISION_THRESHOLD)
    pred = (scores >= DECISION_THRESHOLD).astype(np.int64)
    both = len(np.unique(y)) == 2
    return {
        "accuracy": m.accuracy_score(y, pred),
        "precision": m.precision_score(y, pred, zero_division=0),
        "recall": m.recall_score(y, pred, zero_division=0),
        "f1": m.f1_score(y, pred, zero_division=0),
        "roc_auc": m.roc_auc_score(y, scores) if both else float("nan"),
        "average_precision": m.average_precision_score(y, scores) if y.any() else float("nan"),
        "log_loss": m.log_loss(y, np.clip(scores, 1e-7, 1 - 1e-7), labels=[0, 1]),
    }


def _multiclass(y_true: Any, scored: Scored) -> dict[str, float]:
    import numpy as np
    import pandas as pd
    from sklearn import metrics as m

    from include.mlops.scores import class_values, find_class

    classes = list(scored.classes or [])
    # labels as the model's own class values (a "2" label against a model trained on 2)
    labels_seen = pd.Series(np.asarray(y_true, dtype=object))
    same = {}
    for v in class_values(labels_seen.dropna().unique()):
        i = find_class(v, classes)
        same[v] = classes[i] if i is not None else v
    y = labels_seen.map(same).to_numpy(dtype=object)
    pred = np.asarray(class_values(scored.prediction), dtype=object)
    out = {
        "accuracy": m.accuracy_score(y, pred),
        "f1_macro": m.f1_score(y, pred, average="macro", zero_division=0),
        "f1_weighted": m.f1_score(y, pred, average="weighted", zero_division=0),
        "roc_auc_ovr": float("nan"),
        "log_loss": float("nan"),
    }
    if scored.proba is None or not len(y):
        return out
    proba = np.nan_to_num(np.asarray(scored.proba, dtype=float), nan=1.0 / max(len(classes), 1))
    unseen = [v for v in class_values(pd.unique(pd.Series(y))) if find_class(v, classes) is None]
    if unseen:  # a class the model never saw: it gave it probability 0
        proba = np.hstack([proba, np.zeros((len(proba), len(unseen)))])
        classes = [*classes, *unseen]
        order = sorted(range(len(classes)), key=lambda i: (type(classes[i]).__name__, classes[i]))
        proba, classes = proba[:, order], [classes[i] for i in order]  # roc_auc_score wants them sorted
    labels = np.asarray(classes, dtype=object)
    out["log_loss"] = m.log_loss(y, proba, labels=labels)
    if len(pd.unique(pd.Series(y))) == len(classes):  # defined only when every class occurs
        out["roc_auc_ovr"] = m.roc_auc_score(
            y, proba / proba.sum(axis=1, keepdims=True), multi_class="ovr", labels=labels
        )
    return out


def metric_scorer(spec: DatasetSpec, metric: str | None = None) -> Any:
    """A scikit-learn scorer (estimator, X, y) -> float, higher is better, computing `metric`
    (default: the primary) exactly as `metrics` does: the search and the gate agree."""
    from include.mlops.constants import lower_is_better

    name = metric or spec.primary_metric
    sign = -1.0 if lower_is_better(name) else 1.0

    def scorer(estimator: Any, X: Any, y: Any) -> float:
        return sign * metrics(y, score_model(estimator, X, spec), spec)[name]

    return scorer


def slice_metrics(df: pd.DataFrame, scores: Any, spec: DatasetSpec, classes: Any = None) -> dict[str, dict[str, float]]:
    """Metrics for each value of each slice column the spec names ("plan=basic": {...}).

    `scores` as for `metrics`: a `Scored` or the 1-D scores, one per row of `df`."""
    import numpy as np

    min_rows = spec.gate.slice_min_rows
    scores = scores if isinstance(scores, Scored) else np.asarray(scores)
    out: dict[str, dict[str, float]] = {}
    for col in spec.gate.slices:
        for value, idx in df.groupby(col, dropna=False).indices.items():
            if len(idx) < min_rows:
                continue
            part = scores.take(idx) if isinstance(scores, Scored) else scores[idx]
            out[f"{col}={value}"] = {
                **metrics(df[spec.label].to_numpy()[idx], part, spec, classes),
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
