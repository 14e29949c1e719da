"""Evaluation plots logged to the MLflow run (matplotlib, headless)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from include.mlops.spec import DatasetSpec


def log_evaluation_plots(
    client: Any, run_id: str, spec: DatasetSpec, model: Any, holdout: pd.DataFrame, scores: Any, max_rows: int = 1000
) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn.inspection import permutation_importance
    from threadpoolctl import threadpool_limits

    from include.mlops.features import model_features

    y = holdout[spec.label].to_numpy()
    scores = np.nan_to_num(np.asarray(scores, dtype=float), nan=0.5)
    names = []

    def save(fig: Any, name: str) -> None:
        client.log_figure(run_id, fig, f"plots/{name}")
        plt.close(fig)
        names.append(name)

    if spec.is_classification:
        from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay, RocCurveDisplay

        fig, ax = plt.subplots(figsize=(4, 4))
        ConfusionMatrixDisplay.from_predictions(y, (scores >= 0.5).astype(int), ax=ax, colorbar=False)
        save(fig, "confusion_matrix.png")
        fig, ax = plt.subplots(figsize=(4, 4))
        RocCurveDisplay.from_predictions(y, scores, ax=ax)
        save(fig, "roc_curve.png")
        fig, ax = plt.subplots(figsize=(4, 4))
        PrecisionRecallDisplay.from_predictions(y, scores, ax=ax)
        save(fig, "pr_curve.png")
        scoring = "roc_auc"
    else:
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.scatter(scores, y - scores, s=4, alpha=0.5)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("residual")
        save(fig, "residuals.png")
        scoring = "r2"

    sample = holdout.sample(n=min(max_rows, len(holdout)), random_state=0)
    feats = model_features(spec)
    # ~40 predictions of 1,000 rows each: on one OpenMP thread, as the results are the same and
    # a thread pool's start-up per tree costs more than the rows (6.7 s vs 1.1 s on 2 busy cores)
    with threadpool_limits(1, user_api="openmp"):
        imp = permutation_importance(
            model, sample[feats], sample[spec.label], scoring=scoring, n_repeats=2, random_state=0, n_jobs=1
        )
    order = np.argsort(imp.importances_mean)
    fig, ax = plt.subplots(figsize=(6, max(3, 0.25 * len(feats))))
    ax.barh(np.array(feats)[order], imp.importances_mean[order], xerr=imp.importances_std[order])
    ax.set_xlabel(f"permutation importance ({scoring} drop)")
    fig.tight_layout()
    save(fig, "feature_importance.png")
    client.log_dict(
        run_id,
        {f: float(v) for f, v in zip(feats, imp.importances_mean, strict=False)},
        "evaluation/feature_importance.json",
    )
    return names
