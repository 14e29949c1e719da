"""The monitoring task: one window of the prediction log against the champion's own training data.

One window (a day by default) is read from the prediction log (online requests and batch scores,
`monitoring.reading`), joined to the ground truth that has arrived by the window's end (labels
come days late, so the labelled part reaches back `label_lookback_days` before the window), and
compared with the champion's reference (`monitoring.window`). The four Evidently reports
(`monitoring.reports`) are saved as HTML and JSON under `layout.monitoring_report_prefix`, every
variant and version gets its own row (`monitoring.variants`), and the key numbers go to the
history (`monitoring.history`). Windows larger than `monitoring.sample_rows` are sampled with
`monitoring.sample_seed`; both are recorded.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from include.mlops import layout
from include.mlops.monitoring.history import add_to_workspace, log_history
from include.mlops.monitoring.reading import join_labels, judged_rows, read_labels, read_predictions, split_answers
from include.mlops.monitoring.variants import variant_numbers, variants_table
from include.mlops.monitoring.window import Champion, WindowAnalysis, analyse, champion_info, reference_frame

if TYPE_CHECKING:
    from datetime import date

    import pandas as pd

    from include.mlops.context import Context
    from include.mlops.pipeline import Interval
    from include.mlops.spec import DatasetSpec
    from include.mlops.storage import ObjectStore

log = logging.getLogger(__name__)

JUDGED = "the champion's answers (variant champion); every version's and the shadow's own numbers are in `variants`"


@dataclass(frozen=True)
class MonitoringConfig:
    window_days: int = 1
    sample_rows: int = 100_000
    sample_seed: int = 7
    num_method: str = "wasserstein"
    num_threshold: float = 0.1
    cat_method: str = "jensenshannon"
    cat_threshold: float = 0.1
    prediction_method: str = "wasserstein"
    prediction_threshold: float = 0.1
    drift_share: float = 0.25
    max_bad_fraction: float = 0.01
    label_lookback_days: int = 3

    @classmethod
    def from_spec(cls, spec: DatasetSpec) -> MonitoringConfig:
        mon, drift, pol = spec.monitoring, spec.monitoring.drift, spec.monitoring.policy
        return cls(
            window_days=mon.window_days,
            sample_rows=mon.sample_rows,
            sample_seed=mon.sample_seed,
            num_method=drift.num_method,
            num_threshold=drift.num_threshold,
            cat_method=drift.cat_method,
            cat_threshold=drift.cat_threshold,
            prediction_method=str(drift.prediction_method),
            prediction_threshold=float(drift.prediction_threshold or drift.num_threshold),
            drift_share=pol.drift_share,
            max_bad_fraction=float(pol.max_bad_fraction if pol.max_bad_fraction is not None else cls.max_bad_fraction),
            label_lookback_days=int(mon.label_lookback_days or 0),
        )


def window_of(interval: Interval) -> dict[str, str]:
    return {
        "start": interval.start.isoformat(),
        "end": interval.end.isoformat(),
        "day": interval.days[-1].isoformat(),
        "key": interval.key,
    }


def _save(store: ObjectStore, prefix: str, kind: str, snap: Any) -> dict[str, str]:
    html = snap.get_html_str(as_iframe=False)
    return {
        "html": store.put_text(f"{prefix}{kind}.html", html),
        "json": store.put_text(f"{prefix}{kind}.json", snap.json()),
    }


@dataclass
class _Rows:
    """The window's log rows, split the ways the reports, the variants and the summary count them."""

    logged: pd.DataFrame  # every row of the window, shadow included
    keys: list[str]  # the prediction-log objects read
    answered: pd.DataFrame  # what callers got (every variant but shadow)
    shadow: pd.DataFrame
    judged: pd.DataFrame  # the champion's answers: what the reports and the drift policy judge
    labelled_all: pd.DataFrame  # the lookback's log joined to its labels, every variant
    labelled: pd.DataFrame  # the judged part of it
    label_days: list[date]  # the event days the labelled part covers


def read_window(store: ObjectStore, spec: DatasetSpec, interval: Interval, lookback_days: int) -> _Rows:
    """The window's log, and the log of the lookback joined to the labels that arrived by its end."""
    logged, keys = read_predictions(store, spec, interval.days, rows="all")
    answered, shadow = split_answers(logged)
    first_event, last = interval.days[0] - timedelta(days=lookback_days), interval.days[-1]
    label_days = [first_event + timedelta(days=i) for i in range((last - first_event).days + 1)]
    lab_preds, _ = read_predictions(store, spec, label_days, rows="all")
    labelled_all = join_labels(lab_preds, read_labels(store, spec, first_event, last), spec)
    labelled = judged_rows(split_answers(labelled_all)[0])
    return _Rows(logged, keys, answered, shadow, judged_rows(answered), labelled_all, labelled, label_days)


def monitor(interval: Interval, spec_name: str | None = None, *, history: bool = True) -> dict[str, Any]:
    """Monitor one window: reports to the store, numbers to the history, a summary for the policy.

    Idempotent: reports and the summary are overwritten at window-keyed paths, the MLflow run and
    the workspace snapshots of the window are replaced, not added.
    """
    from include.mlops.config import quiet_telemetry
    from include.mlops.context import context

    quiet_telemetry()
    ctx = context(spec_name)
    spec, store, cfg = ctx.spec, ctx.store, MonitoringConfig.from_spec(ctx.spec)
    champ = champion_info(ctx.client, spec)
    prefix = layout.monitoring_report_prefix(spec, interval.days[-1])
    summary_key = f"{prefix}summary.json"
    rows = read_window(store, spec, interval, cfg.label_lookback_days)
    base = _base_summary(spec_name or spec.name, spec, interval, cfg, champ, rows)
    store.delete_prefix(prefix)
    ref, ref_uri = reference_frame(store, spec, champ) if len(rows.logged) else (None, "")
    day = base["window"]["day"]
    if rows.judged.empty:
        _per_version(store, prefix, spec, cfg, interval, rows, ref, base)
        log.warning(
            "no answers of the champion logged for %s in window %s (%d rows in the log)",
            spec.name,
            day,
            len(rows.logged),
        )
        summary = _empty_summary(base, ref_uri, rows)
        summary["summary_uri"] = store.put_json(summary_key, summary)
        return summary
    analysis = analyse(ref, rows.judged, rows.labelled, spec, cfg, timestamp=interval.end, day=day)
    _per_version(store, prefix, spec, cfg, interval, rows, ref, base, analysis)
    reports = {kind: _save(store, prefix, kind, snap) for kind, snap in analysis.snapshots.items()}
    summary = _window_summary(base, analysis, reports, ref_uri)
    summary["summary_uri"] = store.uri(summary_key)
    summary["run_id"], summary["experiment_id"] = (None, None)
    if history:
        _record_history(ctx, interval, cfg, summary, analysis)
    store.put_json(summary_key, summary)
    _log_window(day, cfg, analysis)
    return summary


def _base_summary(
    spec_name: str, spec: DatasetSpec, interval: Interval, cfg: MonitoringConfig, champ: Champion, rows: _Rows
) -> dict[str, Any]:
    """The summary's fields every window has, whatever was logged in it."""
    return {
        "dataset": spec.name,
        "spec": spec_name,
        "window": window_of(interval),
        "champion": asdict(champ),
        "rows": len(rows.judged),
        "answered_rows": len(rows.answered),
        "shadow_rows": len(rows.shadow),
        "judged": JUDGED,
        "labelled_rows": len(rows.labelled),
        "prediction_objects": len(rows.keys),
        "sample": {"rows": cfg.sample_rows, "seed": cfg.sample_seed},
        "labelled_event_days": [rows.label_days[0].isoformat(), rows.label_days[-1].isoformat()],
    }


def _per_version(
    store: ObjectStore,
    prefix: str,
    spec: DatasetSpec,
    cfg: MonitoringConfig,
    interval: Interval,
    rows: _Rows,
    ref: pd.DataFrame | None,
    base: dict[str, Any],
    headline: WindowAnalysis | None = None,
) -> None:
    """Every (variant, version)'s numbers into the summary, `variants.md` and the task log."""
    day = base["window"]["day"]
    variants: list[dict[str, Any]] = []
    if ref is not None:
        variants = variant_numbers(
            ref, rows.answered, rows.shadow, rows.labelled_all, spec, cfg, interval.end, day, headline=headline
        )
    base["variants"] = variants
    base["variants_table"] = variants_table(variants, spec.primary_metric)
    if variants:
        store.put_text(f"{prefix}variants.md", base["variants_table"] + "\n")
    log.info(
        "window %s per variant and version (%d answered, %d shadow rows, never counted as answers):\n%s",
        day,
        len(rows.answered),
        len(rows.shadow),
        base["variants_table"],
    )


def _empty_summary(base: dict[str, Any], ref_uri: str, rows: _Rows) -> dict[str, Any]:
    """The summary of a window without answers of the champion: nothing to judge."""
    return {
        **base,
        "rows_used": 0,
        "drift_share": 0.0,
        "drifted_features": [],
        "reports": {},
        "report_html": "",
        "data_quality": {"passed": True, "failures": []},
        "performance": {},
        "reference_uri": ref_uri,
        "run_id": None,
        "experiment_id": None,
        "note": "no predictions in the window" if rows.logged.empty else "no answers of the champion in the window",
    }


def _window_summary(
    base: dict[str, Any], analysis: WindowAnalysis, reports: dict[str, dict[str, str]], ref_uri: str
) -> dict[str, Any]:
    """The summary the drift policy reads: the analysis's numbers and where the reports are."""
    return {
        **base,
        "rows_used": analysis.rows_used,
        "reference_uri": ref_uri,
        "reference_rows": analysis.reference_rows,
        "reference_rows_used": analysis.reference_rows_used,
        "drift_share": analysis.drift["share"],
        "drifted_features": analysis.drifted_features,
        "feature_drift": {
            c: {
                "score": round(v["score"], 6),
                "drifted": v["drifted"],
                "method": v["method"],
                "threshold": v["threshold"],
            }
            for c, v in analysis.drift["columns"].items()
        },
        "prediction_drift": analysis.prediction_drift,
        "target_drift": analysis.target_drift,
        "performance": analysis.performance,
        "data_quality": {k: v for k, v in analysis.data_quality.items() if k != "shares"},
        "reports": {k: v["html"] for k, v in reports.items()},
        "report_html": reports["data_drift"]["html"],
    }


def _record_history(
    ctx: Context, interval: Interval, cfg: MonitoringConfig, summary: dict[str, Any], analysis: WindowAnalysis
) -> None:
    """The window's MLflow run (its ids into the summary) and its workspace snapshots."""
    summary["run_id"], summary["experiment_id"] = log_history(ctx.settings, ctx.spec, interval, cfg, summary, analysis)
    try:
        summary["evidently"] = add_to_workspace(ctx.settings, ctx.spec, summary["window"]["day"], analysis.snapshots)
    except Exception as exc:  # the dashboard is a view; the reports and MLflow hold the record
        log.warning("could not add snapshots to the Evidently workspace: %s", exc)


def _log_window(day: str, cfg: MonitoringConfig, analysis: WindowAnalysis) -> None:
    log.info(
        "window %s: %d rows (%d used, seed %d), drift share %.3f, drifted %s, labelled %d, perf %s, dq %s",
        day,
        analysis.rows,
        analysis.rows_used,
        cfg.sample_seed,
        analysis.drift["share"],
        analysis.drifted_features,
        analysis.labelled_rows,
        analysis.performance,
        "passed" if analysis.data_quality["passed"] else analysis.data_quality["failures"],
    )
