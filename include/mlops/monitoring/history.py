"""The history of the windows: one MLflow run per window and an Evidently workspace.

The MLflow run lives in the experiment `<dataset>-monitoring` (replaced on a re-run); the
workspace at `$MLOPS_HOME/evidently` holds one snapshot per report and window, with dashboard
panels (`evidently ui --workspace $MLOPS_HOME/evidently`).
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from include.mlops.monitoring.reading import SCORE

if TYPE_CHECKING:
    from include.mlops.config import Settings
    from include.mlops.monitoring.step import MonitoringConfig
    from include.mlops.monitoring.window import WindowAnalysis
    from include.mlops.pipeline import Interval
    from include.mlops.spec import DatasetSpec


def monitoring_experiment(spec: DatasetSpec) -> str:
    return f"{spec.name}-monitoring"


def _clean(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_./ " else "_" for ch in name)


def log_history(
    settings: Settings,
    spec: DatasetSpec,
    interval: Interval,
    cfg: MonitoringConfig,
    summary: dict[str, Any],
    analysis: WindowAnalysis,
) -> tuple[str, str]:
    """One MLflow run per window (found again by its tag on a re-run); returns (run_id, experiment_id)."""
    from include.mlops.registry import ensure_experiment, setup_mlflow
    from include.mlops.training.tracking import log_to_run

    client = setup_mlflow(settings)
    exp_id = ensure_experiment(client, monitoring_experiment(spec), settings)
    # A re-run replaces the window's run: MLflow keeps every logged value, and one logged again at
    # the same step and time would not be the one the UI shows.
    for old in client.search_runs([exp_id], f"tags.`mlops.window` = '{interval.key}'"):
        client.delete_run(old.info.run_id)
    ts = int(interval.end.timestamp() * 1000)
    run_id = client.create_run(exp_id, run_name=f"{spec.name}-{summary['window']['day']}", start_time=ts).info.run_id
    numbers = _history_numbers(spec, summary, analysis)
    log_to_run(
        client,
        run_id,
        files={"monitoring/summary.json": summary, "monitoring/variants.md": summary.get("variants_table") or ""},
        metrics={k: v for k, v in numbers.items() if v is not None and not (isinstance(v, float) and math.isnan(v))},
        params=_history_params(cfg, summary, analysis),
        tags=_history_tags(spec, interval, summary),
        at_ms=ts,
        step=interval.end.toordinal(),
    )
    client.set_terminated(run_id, "FINISHED", end_time=ts)
    return run_id, exp_id


def _history_numbers(spec: DatasetSpec, summary: dict[str, Any], analysis: WindowAnalysis) -> dict[str, float | None]:
    """The window's metrics: headline numbers, per-feature drift, performance, and per variant."""
    nums: dict[str, float | None] = {
        "rows": analysis.rows,
        "rows_used": analysis.rows_used,
        "labelled_rows": analysis.labelled_rows,
        "drift_share": analysis.drift["share"],
        "drifted_features": analysis.drift["count"],
        "prediction_drift_score": analysis.prediction_drift.get("score"),
        "prediction_mean": analysis.prediction_drift.get("mean"),
        "target_drift_score": (analysis.target_drift or {}).get("score"),
        "data_quality_failures": len(analysis.data_quality["failures"]),
        "data_quality_max_bad_share": analysis.data_quality["max_bad_share"],
        "champion_holdout_metric": summary["champion"]["holdout_metric"],
    }
    nums.update({f"drift_{_clean(c)}": v["score"] for c, v in analysis.drift["columns"].items()})
    nums.update({f"perf_{k}": v for k, v in analysis.performance.items()})
    nums.update({"answered_rows": summary.get("answered_rows"), "shadow_rows": summary.get("shadow_rows")})
    for v in summary.get("variants") or []:  # e.g. challenger_v3_rows, shadow_v3_roc_auc
        tag = _clean(f"{v['variant']}_v{v['version']}")
        nums[f"{tag}_rows"] = v["rows"]
        nums[f"{tag}_{spec.primary_metric}"] = v["performance"].get(spec.primary_metric)
        nums[f"{tag}_prediction_drift"] = v["prediction_drift"]
    return nums


def _history_params(cfg: MonitoringConfig, summary: dict[str, Any], analysis: WindowAnalysis) -> dict[str, Any]:
    """How the window was judged: sampling, drift methods and thresholds, the champion."""
    return {
        "sample_rows": cfg.sample_rows,
        "sample_seed": cfg.sample_seed,
        "num_method": cfg.num_method,
        "num_threshold": cfg.num_threshold,
        "cat_method": cfg.cat_method,
        "cat_threshold": cfg.cat_threshold,
        "prediction_method": cfg.prediction_method,
        "label_lookback_days": cfg.label_lookback_days,
        "champion_version": summary["champion"]["version"],
        "reference_rows": analysis.reference_rows,
    }


def _history_tags(spec: DatasetSpec, interval: Interval, summary: dict[str, Any]) -> dict[str, Any]:
    """What finds the run again (`mlops.window`) and where the window's records are."""
    return {
        "mlops.window": interval.key,
        "mlops.window_day": summary["window"]["day"],
        "mlops.dataset": spec.name,
        "mlops.champion_version": summary["champion"]["version"],
        "mlops.champion_run_id": summary["champion"]["run_id"],
        "mlops.report_uri": summary["report_html"],
        "mlops.summary_uri": summary["summary_uri"],
        "mlops.reference_uri": summary["reference_uri"],
    }


def _panels(spec: DatasetSpec) -> list[tuple[str, Any]]:
    """The dashboard: (tab, panel) for drift, performance and data quality, in that order."""
    from evidently.sdk.models import PanelMetric
    from evidently.sdk.panels import line_plot_panel

    return [
        *(("Drift", p) for p in _drift_panels(spec, PanelMetric, line_plot_panel)),
        *(("Performance", p) for p in _performance_panels(spec, PanelMetric, line_plot_panel)),
        *(("Data quality", p) for p in _quality_panels(spec, PanelMetric, line_plot_panel)),
    ]


def _drift_panels(spec: DatasetSpec, metric: Any, plot: Any) -> list[Any]:
    from include.mlops.features.build import model_features

    return [
        plot(
            title="Share of drifted features",
            values=[metric(legend="share", metric="DriftedColumnsCount", metric_labels={"value_type": "share"})],
        ),
        plot(
            title="Drift score per feature",
            values=[metric(legend=c, metric="ValueDrift", metric_labels={"column": c}) for c in model_features(spec)],
        ),
        plot(
            title="Prediction drift (score)",
            values=[metric(legend="drift score", metric="ValueDrift", metric_labels={"column": SCORE})],
            size="half",
        ),
        plot(
            title="Mean score",
            values=[metric(legend="mean", metric="MeanValue", metric_labels={"column": SCORE})],
            size="half",
        ),
    ]


def _performance_panels(spec: DatasetSpec, metric: Any, plot: Any) -> list[Any]:
    if spec.is_multiclass:  # from the predicted class: the log keeps no per-class probabilities
        quality = [("F1", "F1Score"), ("Accuracy", "Accuracy")]
    elif spec.is_classification:
        quality = [("ROC AUC", "RocAuc"), ("F1", "F1Score"), ("Accuracy", "Accuracy")]
    else:
        quality = [("RMSE", "RMSE"), ("MAE", "MAE"), ("R2", "R2Score")]
    return [
        plot(title="Model quality on the labelled part", values=[metric(legend=leg, metric=m) for leg, m in quality]),
        plot(
            title="Target drift",
            values=[metric(legend="drift score", metric="ValueDrift", metric_labels={"column": spec.label})],
            size="half",
        ),
    ]


def _quality_panels(spec: DatasetSpec, metric: Any, plot: Any) -> list[Any]:
    missing = [
        metric(legend=f.name, metric="MissingValueCount", metric_labels={"column": f.name, "value_type": "share"})
        for f in spec.features
        if f.required
    ]
    return [
        plot(title="Rows in the window", values=[metric(legend="rows", metric="RowCount")], size="half"),
        plot(title="Missing share per required feature", values=missing),
    ]


def add_to_workspace(settings: Settings, spec: DatasetSpec, day: str, snapshots: dict[str, Any]) -> dict[str, str]:
    """Add the window's snapshots to the Evidently workspace, replacing the window's earlier ones.

    Our own small index (a dot-file Evidently ignores) maps window -> snapshot ids, so a re-run
    replaces rather than duplicates, without reading every snapshot back.
    """
    from evidently.ui.workspace import Workspace

    path = settings.home / "evidently"
    path.mkdir(parents=True, exist_ok=True)
    ws = Workspace.create(str(path))
    name = monitoring_experiment(spec)
    found = ws.search_project(name)
    if found:
        project = found[0]
    else:
        project = ws.create_project(
            name, description=f"Monitoring of {spec.model_name}: one snapshot per report and window"
        )
        for tab, panel in _panels(spec):
            project.dashboard.add_panel(panel, tab=tab)
        _dedupe_dashboard(ws, project)
    index_path = path / f".mlops-index-{project.id}.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {}
    for sid in index.get(day, {}).values():
        try:
            ws.delete_run(project.id, sid)
        except Exception:  # already gone
            pass
    ids = {}
    for kind, snap in snapshots.items():
        ids[kind] = str(ws.add_run(project.id, snap).id)
    index[day] = ids
    tmp = index_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(index, indent=1, sort_keys=True))
    tmp.replace(index_path)
    return {"project_id": str(project.id), **ids}


def _dedupe_dashboard(ws: Any, project: Any) -> None:
    """Evidently 0.7 lists a panel twice when it is added to an existing tab; keep one of each."""
    model = project.dashboard.model()
    changed = False
    for tab in model.tabs:
        seen: list[Any] = []
        for p in tab.panels:
            if p not in seen:
                seen.append(p)
        if len(seen) != len(tab.panels):
            tab.panels, changed = seen, True
    if changed:
        ws.save_dashboard(project.id, model)
