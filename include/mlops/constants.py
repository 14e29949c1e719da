"""What the DAGs, the library and the service share, written once.

Light on purpose: DAG files import this at parse time, so nothing here imports more than the
standard library.
"""

from __future__ import annotations

from pathlib import Path

SPEC_DIR = Path(__file__).resolve().parent.parent / "specs"

# Registry aliases
CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"

# Deployment strategies and the retraining data strategies
STRATEGIES = ("direct", "canary", "shadow", "blue_green", "ab_test")
DATA_STRATEGIES = ("sliding_window", "all_history", "new_data_only")

# Tasks and the metrics that fit each (the gate, the search and monitoring read these)
TASKS = ("classification", "regression")
BINARY_METRICS = ("roc_auc", "average_precision", "f1", "precision", "recall", "accuracy", "log_loss")
MULTICLASS_METRICS = ("accuracy", "f1_macro", "f1_weighted", "roc_auc_ovr", "log_loss")
REGRESSION_METRICS = ("r2", "rmse", "mae")
LOWER_IS_BETTER = frozenset({"rmse", "mae", "log_loss"})
# The A/B test's per-row outcomes, by task (spec `deployment.ab_test.metric`)
AB_TEST_METRICS = {"classification": ("accuracy", "log_loss"), "regression": ("abs_error", "squared_error")}
DEFAULT_PRIMARY_METRIC = {"binary": "roc_auc", "multiclass": "f1_macro", "regression": "r2"}

# Model families per task: (module, class, default arguments)
CLASSIFIERS = {
    "logistic_regression": ("sklearn.linear_model", "LogisticRegression", {"max_iter": 1000}),
    "random_forest": ("sklearn.ensemble", "RandomForestClassifier", {"n_jobs": 1, "random_state": 0}),
    "hist_gradient_boosting": ("sklearn.ensemble", "HistGradientBoostingClassifier", {"random_state": 0}),
}
REGRESSORS = {
    "ridge": ("sklearn.linear_model", "Ridge", {}),
    "random_forest": ("sklearn.ensemble", "RandomForestRegressor", {"n_jobs": 1, "random_state": 0}),
    "hist_gradient_boosting": ("sklearn.ensemble", "HistGradientBoostingRegressor", {"random_state": 0}),
}


def lower_is_better(metric: str) -> bool:
    """Whether a smaller value of `metric` is better (`slice.rmse` reads as `rmse`)."""
    return metric.split(".")[-1] in LOWER_IS_BETTER


def worse_by(metric: str, reference: float, value: float) -> float:
    """How much worse `value` is than `reference` on `metric` (positive = worse), whatever the
    metric's direction: the gate, the drift policy and the canary analysis all judge drops so."""
    return value - reference if lower_is_better(metric) else reference - value


def known_datasets() -> list[str]:
    """Dataset specs that ship with the project (cheap: file names only, nothing parsed)."""
    return sorted(p.stem for p in SPEC_DIR.glob("*.yaml"))


# A spec's name (and what the `dataset` param and MLOPS_DATASET take): a slug, never a path.
SPEC_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
