"""Training: a time-based split, an sklearn Pipeline built from the spec, and a budgeted search."""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from include.mlops.spec import DatasetSpec

from include.mlops.constants import CLASSIFIERS, REGRESSORS

log = logging.getLogger(__name__)


class TrainingDataError(Exception):
    """Too little or malformed training data; the message says how much there was."""


@dataclass
class SearchResult:
    best_params: dict[str, Any]
    best_score: float
    scoring: str
    candidates: list[dict[str, Any]] = field(default_factory=list)
    stopped_by_budget: bool = False
    seconds: float = 0.0


def data_hash(df: pd.DataFrame) -> str:
    """A content hash of a frame (order-sensitive, dtype-aware): the data half of idempotency keys."""
    import pandas as pd

    h = hashlib.sha256()
    h.update(",".join(map(str, df.columns)).encode())
    h.update(pd.util.hash_pandas_object(df, index=False).values.tobytes())
    return h.hexdigest()[:16]


def time_split(df: pd.DataFrame, spec: DatasetSpec, holdout_days: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The newest `holdout_days` of event dates are the holdout; everything before trains."""
    import pandas as pd

    ts = pd.to_datetime(df[spec.timestamp], utc=True)
    days = sorted(ts.dt.normalize().unique())
    if len(days) <= holdout_days:
        raise TrainingDataError(
            f"need more than {holdout_days} days of labelled data for a time-based split, got {len(days)}"
        )
    cut = days[-holdout_days]
    train, holdout = df[ts < cut], df[ts >= cut]
    return train.reset_index(drop=True), holdout.reset_index(drop=True)


def build_pipeline(spec: DatasetSpec, params: dict[str, Any] | None = None) -> Any:
    """Preprocessing + estimator, both from the spec; the Pipeline takes raw-typed features."""
    import importlib

    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

    from include.mlops.features.build import derived_features

    family = spec.model.family
    table = CLASSIFIERS if spec.is_classification else REGRESSORS
    if family not in table:
        raise ValueError(f"model.family {family!r} is not available for {spec.task} (choose from {sorted(table)})")
    module, cls, defaults = table[family]
    fixed = dict(spec.model.params)
    estimator = getattr(importlib.import_module(module), cls)(**{**defaults, **fixed, **(params or {})})

    numeric = [*spec.numeric_features, *derived_features(spec)]
    categorical = list(spec.categorical_features)
    tree = family != "logistic_regression" and family != "ridge"
    num_steps = [("impute", SimpleImputer(strategy="median"))] + ([] if tree else [("scale", StandardScaler())])
    if family == "hist_gradient_boosting":
        cat_enc = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-1)
    else:
        cat_enc = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
    pre = ColumnTransformer(
        [
            ("num", Pipeline(num_steps), numeric),
            (
                "cat",
                Pipeline(
                    [("impute", SimpleImputer(strategy="constant", fill_value="__missing__")), ("encode", cat_enc)]
                ),
                categorical,
            ),
        ],
        verbose_feature_names_out=False,
    )
    if family == "hist_gradient_boosting":
        n_num = len(numeric)
        estimator.set_params(categorical_features=list(range(n_num, n_num + len(categorical))))
    return Pipeline([("preprocess", pre), ("model", estimator)])


def scoring_name(spec: DatasetSpec) -> str:
    """The search's scoring as scikit-learn names it (lower-is-better metrics negated)."""
    metric = spec.primary_metric
    return {
        "rmse": "neg_root_mean_squared_error",
        "mae": "neg_mean_absolute_error",
        "log_loss": "neg_log_loss",
    }.get(metric, metric)


def scorer(spec: DatasetSpec) -> Any:
    """What cross-validation scores: for a classifier, the primary metric computed by
    `evaluation.metrics.metrics` (the same positive class, threshold and class list as the gate);
    for a regressor, scikit-learn's own scorer of the same name."""
    if not spec.is_classification:
        return scoring_name(spec)
    from include.mlops.evaluation.metrics import metric_scorer

    return metric_scorer(spec)


def search(spec: DatasetSpec, X: pd.DataFrame, y: pd.Series, seed: int = 0) -> SearchResult:
    """Random search over the spec's space with k-fold time-ordered CV, stopped by a time budget.

    Candidates are tried in a seeded order; once the budget is spent no new one starts, so the
    result is reproducible for a given budget unless the machine is much slower.
    """
    from sklearn.model_selection import ParameterSampler, TimeSeriesSplit, cross_val_score

    cfg = spec.model.search
    space = {k: list(v) for k, v in cfg.space.items()}
    n_iter, folds, budget = cfg.n_iter, cfg.cv_folds, cfg.budget_seconds
    scoring = scoring_name(spec)
    score_fn = scorer(spec)
    candidates = list(ParameterSampler(space, n_iter=n_iter, random_state=seed)) if space else [{}]
    cv = TimeSeriesSplit(n_splits=folds)  # rows are time-ordered: never validate on the past
    t0 = time.perf_counter()
    tried, stopped = [], False
    n = len(candidates)
    log.info("search: %d candidate(s), %d-fold time-ordered CV on %d rows, budget %ss", n, folds, len(X), budget)
    for i, params in enumerate(candidates, 1):
        if tried and time.perf_counter() - t0 > budget:
            stopped = True
            log.info("search: budget of %ss spent after %d of %d candidates; no new one starts", budget, len(tried), n)
            break
        t_c = time.perf_counter()
        scores = cross_val_score(build_pipeline(spec, params), X, y, cv=cv, scoring=score_fn, n_jobs=1)
        elapsed = time.perf_counter() - t0
        log.info(
            "search: candidate %d of %d %s: CV %s %.4f (+/- %.4f) in %.1fs; %.1fs elapsed, %.1fs of budget left",
            i,
            n,
            params,
            scoring,
            scores.mean(),
            scores.std(),
            time.perf_counter() - t_c,
            elapsed,
            max(0.0, budget - elapsed),
        )
        tried.append(
            {
                "params": params,
                "mean": float(scores.mean()),
                "std": float(scores.std()),
                "folds": [float(s) for s in scores],
            }
        )
    best = max(tried, key=lambda c: c["mean"])
    log.info("search: best %s %.4f with %s", scoring, best["mean"], best["params"])
    return SearchResult(best["params"], best["mean"], scoring, tried, stopped, time.perf_counter() - t0)


def fit(spec: DatasetSpec, train: pd.DataFrame, seed: int = 0) -> tuple[Any, SearchResult]:
    """Search, then refit the best candidate on the whole training split."""
    from include.mlops.features.build import model_features

    train = train.sort_values(spec.timestamp)
    X, y = train[model_features(spec)], train[spec.label]
    if spec.is_classification:
        check_labels(spec, y)
    result = search(spec, X, y, seed=seed)
    model = build_pipeline(spec, result.best_params).fit(X, y)
    return model, result


def check_labels(spec: DatasetSpec, y: pd.Series) -> list[Any]:
    """The training labels' classes, checked against the spec's label section before any fit:
    more than two need `label.classes`, and a binary label's positive class must be one of them."""
    from include.mlops.scores import LabelError, training_classes

    try:
        return training_classes(y, spec)
    except LabelError as exc:
        raise TrainingDataError(f"{spec.path or spec.name}: {exc}") from None
