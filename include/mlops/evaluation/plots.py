"""Evaluation plots logged to the MLflow run (matplotlib, headless)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from include.mlops.scores import Scored
    from include.mlops.spec import DatasetSpec


def _pyplot() -> Any:
    """matplotlib's pyplot on the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion_figure(spec: DatasetSpec, scored: Scored, y: np.ndarray) -> Any:
    """The confusion matrix over the model's classes (binary: at the decision threshold)."""
    from sklearn.metrics import ConfusionMatrixDisplay

    from include.mlops.scores import DECISION_THRESHOLD, class_values

    plt = _pyplot()
    classes = list(scored.classes or [])
    pred = class_values(scored.prediction)
    truth = class_values(y)
    text = [str(c) for c in classes]
    fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(classes)), max(4, 0.6 * len(classes))))
    ConfusionMatrixDisplay.from_predictions(
        [str(v) for v in truth], [str(v) for v in pred], labels=text, ax=ax, colorbar=False
    )
    ax.set_xlabel("predicted" if spec.is_multiclass else f"predicted (score >= {DECISION_THRESHOLD})")
    ax.set_ylabel(spec.label)
    return fig


def binary_curve_figures(spec: DatasetSpec, scored: Scored, y: np.ndarray) -> list[tuple[str, Any]]:
    """ROC and precision-recall of the positive class; none when the holdout has one class only."""
    import numpy as np
    from sklearn.metrics import PrecisionRecallDisplay, RocCurveDisplay

    from include.mlops.scores import DECISION_THRESHOLD, is_positive

    y01 = is_positive(y, list(scored.classes or []), spec)
    s = np.nan_to_num(np.asarray(scored.score, dtype=float), nan=DECISION_THRESHOLD)
    if len(np.unique(y01)) != 2:
        return []
    plt = _pyplot()
    fig_roc, ax = plt.subplots(figsize=(4, 4))
    RocCurveDisplay.from_predictions(y01, s, ax=ax, name="challenger")
    fig_pr, ax = plt.subplots(figsize=(4, 4))
    PrecisionRecallDisplay.from_predictions(y01, s, ax=ax, name="challenger")
    return [("roc_curve.png", fig_roc), ("pr_curve.png", fig_pr)]


def residuals_figure(scored: Scored, y: np.ndarray) -> Any:
    """Residuals against the prediction, for a regression."""
    import numpy as np

    scores = np.nan_to_num(np.asarray(scored.score, dtype=float))
    fig, ax = _pyplot().subplots(figsize=(5, 4))
    ax.scatter(scores, y - scores, s=4, alpha=0.5)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("residual")
    return fig


def permutation_importances(
    spec: DatasetSpec, model: Any, holdout: pd.DataFrame, metric: str, max_rows: int
) -> tuple[list[str], Any]:
    """(features, sklearn's importances): how much `metric` drops when each feature is shuffled."""
    from sklearn.inspection import permutation_importance
    from threadpoolctl import threadpool_limits

    from include.mlops.evaluation.metrics import metric_scorer
    from include.mlops.features.build import model_features

    sample = holdout.sample(n=min(max_rows, len(holdout)), random_state=0)
    feats = model_features(spec)
    # ~40 predictions of 1,000 rows each: on one OpenMP thread, as the results are the same and
    # a thread pool's start-up per tree costs more than the rows (6.7 s vs 1.1 s on 2 busy cores)
    with threadpool_limits(1, user_api="openmp"):
        imp = permutation_importance(
            model,
            sample[feats],
            sample[spec.label],
            scoring=metric_scorer(spec, metric),
            n_repeats=2,
            random_state=0,
            n_jobs=1,
        )
    return feats, imp


def importance_figure(feats: list[str], imp: Any, metric: str) -> Any:
    """Permutation importances as horizontal bars, the most important at the top."""
    import numpy as np

    order = np.argsort(imp.importances_mean)
    fig, ax = _pyplot().subplots(figsize=(6, max(3, 0.25 * len(feats))))
    ax.barh(np.array(feats)[order], imp.importances_mean[order], xerr=imp.importances_std[order])
    ax.set_xlabel(f"permutation importance ({metric} drop)")
    fig.tight_layout()
    return fig


def log_evaluation_plots(
    client: Any, run_id: str, spec: DatasetSpec, model: Any, holdout: pd.DataFrame, scored: Scored, max_rows: int = 1000
) -> list[str]:
    """Plots that fit the task, from the challenger's `scores.score_model` output on the holdout:
    binary: confusion matrix (class values, the decision threshold), ROC and precision-recall of
    the positive class; multiclass: the confusion matrix over the model's classes; regression:
    residuals. Then permutation importance on the primary metric."""
    plt = _pyplot()
    y = holdout[spec.label].to_numpy()
    names = []

    def save(fig: Any, name: str) -> None:
        client.log_figure(run_id, fig, f"plots/{name}")
        plt.close(fig)
        names.append(name)

    if spec.is_classification:
        save(confusion_figure(spec, scored, y), "confusion_matrix.png")
        if not spec.is_multiclass:
            for name, fig in binary_curve_figures(spec, scored, y):
                save(fig, name)
        metric = spec.primary_metric
    else:
        save(residuals_figure(scored, y), "residuals.png")
        metric = "r2"
    feats, imp = permutation_importances(spec, model, holdout, metric, max_rows)
    save(importance_figure(feats, imp, metric), "feature_importance.png")
    client.log_dict(
        run_id,
        {f: float(v) for f, v in zip(feats, imp.importances_mean, strict=False)},
        "evaluation/feature_importance.json",
    )
    return names
