"""Evaluation: holdout metrics, per-slice metrics, and the paired bootstrap of a regression.

What the promotion gate (`gate`) decides on: the challenger's metrics on its holdout, overall
and per slice, computed as `metrics` does for every model compared; on small holdouts a
regression against another model is judged by a paired bootstrap of the metric difference
(`paired_bootstrap`), not by the bare difference.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from include.mlops.spec import DatasetSpec

from include.mlops.constants import worse_by
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
        proba = proba / proba.sum(axis=1, keepdims=True)
        if len(classes) == 2:  # sklearn takes two classes as a binary task: one score column
            # (with two classes both one-vs-rest AUCs are this one, so their mean is too)
            out["roc_auc_ovr"] = m.roc_auc_score((y == labels[1]).astype(np.int64), proba[:, 1])
        else:
            out["roc_auc_ovr"] = m.roc_auc_score(y, proba, multi_class="ovr", labels=labels)
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


# -- paired bootstrap ---------------------------------------------------------------------------
BOOTSTRAP_SEED = 20261201  # fixed: the same holdout and models give the same interval
# Above this many holdout rows the bare difference decides: the interval is then narrower than
# any tolerance worth setting (ROC AUC's standard error at 50,000 rows is about 0.003), and the
# resamples would cost seconds per comparison on the 1M-row benchmark's holdout.
BOOTSTRAP_MAX_ROWS = 50_000


def _worse_by(metric: str, challenger: float, champion: float) -> float:
    """How much worse the challenger is than the champion (positive = worse)."""
    return worse_by(metric, champion, challenger)


@dataclass
class RegressionCI:
    """How much worse the challenger is than another model (positive = worse), on the whole
    holdout and as one-sided bounds at `confidence` from a paired bootstrap of the rows."""

    worse: float
    low: float  # P(regression < low) = 1 - confidence
    high: float  # P(regression > high) = 1 - confidence
    confidence: float
    resamples: int  # usable resamples (a resample with one class only has no ROC AUC)

    def describe(self) -> str:
        return (
            f"regression {self.worse:+.4f}, one-sided {self.confidence:.0%} bounds "
            f"[{self.low:+.4f}, {self.high:+.4f}] ({self.resamples} paired bootstrap resamples)"
        )


def _rank_auc(y: Any, s: Any) -> float:
    """ROC AUC from ranks (ties averaged): the value roc_auc_score gives, without its checks."""
    from scipy.stats import rankdata

    n1 = int(y.sum())
    n0 = len(y) - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def primary_on_rows(y_true: Any, scored: Scored, spec: DatasetSpec) -> Callable[[Any], float]:
    """A function of row positions giving the primary metric on those rows, as `metrics` computes
    it (fast paths for binary ROC AUC and accuracy and for the regression metrics)."""
    import numpy as np

    metric = spec.primary_metric
    y_arr = np.asarray(y_true)
    if spec.is_classification and not spec.is_multiclass and metric in ("roc_auc", "accuracy"):
        classes = scored.classes if scored.classes is not None else _label_classes(y_arr, spec)
        y01 = np.asarray(is_positive(y_arr, classes, spec), dtype=np.int64)
        s = np.nan_to_num(np.asarray(scored.score, dtype=float), nan=DECISION_THRESHOLD)
        if metric == "roc_auc":
            return lambda idx: _rank_auc(y01[idx], s[idx])
        pred = (s >= DECISION_THRESHOLD).astype(np.int64)
        return lambda idx: float((pred[idx] == y01[idx]).mean())
    if not spec.is_classification and metric in ("rmse", "mae"):
        p = np.nan_to_num(np.asarray(scored.score, dtype=float), nan=0.0)
        yf = y_arr.astype(float)
        if metric == "rmse":
            return lambda idx: float(np.sqrt(np.mean((yf[idx] - p[idx]) ** 2)))
        return lambda idx: float(np.mean(np.abs(yf[idx] - p[idx])))
    return lambda idx: metrics(y_arr[idx], scored.take(idx), spec)[metric]


def paired_bootstrap(
    y_true: Any, challenger: Scored, other: Scored, spec: DatasetSpec, resamples: int, confidence: float
) -> RegressionCI | None:
    """The challenger's regression against `other` on the same rows, resampled with replacement
    `resamples` times (the same rows for both models: a paired bootstrap, seeded). None when
    `resamples` is 0, the holdout is larger than BOOTSTRAP_MAX_ROWS or fewer than half the
    resamples give a value (then the bare difference decides). Cost: 2 x resamples metric
    evaluations on the holdout."""
    import numpy as np

    n = len(y_true)
    if resamples <= 0 or n < 2 or n > BOOTSTRAP_MAX_ROWS:
        return None
    metric = spec.primary_metric
    f_ch, f_other = primary_on_rows(y_true, challenger, spec), primary_on_rows(y_true, other, spec)
    everything = np.arange(n)
    worse = _worse_by(metric, f_ch(everything), f_other(everything))
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    diffs = np.empty(resamples)
    for i in range(resamples):
        idx = rng.integers(0, n, n)
        diffs[i] = _worse_by(metric, f_ch(idx), f_other(idx))
    diffs = diffs[~np.isnan(diffs)]
    if len(diffs) < resamples / 2 or math.isnan(worse):
        return None
    return RegressionCI(
        worse=float(worse),
        low=float(np.quantile(diffs, 1 - confidence)),
        high=float(np.quantile(diffs, confidence)),
        confidence=confidence,
        resamples=len(diffs),
    )
