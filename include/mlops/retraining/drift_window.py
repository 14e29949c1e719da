"""The drift policy on one monitoring window, with its I/O: the decisions of earlier windows
(`read_history`) and the deployment ledger in, the decision out (stored, overwriting a re-run's),
the window quarantined when its data failed the quality check, and what the drift Asset event
carries when it fires (`event_extra`). The decision itself is `drift_policy.decide`.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from include.mlops.layout import drift_decision_key, monitoring_quarantine_prefix
from include.mlops.retraining.drift_policy import QUARANTINE, DriftDecision, DriftPolicy, Observation, as_utc, decide

if TYPE_CHECKING:
    from include.mlops.spec import DatasetSpec
    from include.mlops.storage import ObjectStore


def read_history(store: ObjectStore, dataset: str, day: date, lookback_days: int) -> list[dict[str, Any]]:
    """Decisions of the `lookback_days` windows before `day` (missing windows are simply absent)."""
    out = []
    for i in range(1, lookback_days + 1):
        key = drift_decision_key(dataset, day - timedelta(days=i))
        if store.exists(key):
            out.append(store.get_json(key))
    return out


def event_extra(summary: dict[str, Any], decision: DriftDecision, spec_ref: str) -> dict[str, Any]:
    """What the drift Asset event carries: enough for `ml_retraining` and a human, no secrets."""
    return {
        "dataset": summary["dataset"],
        "spec": spec_ref,
        "window_start": summary["window"]["start"],
        "window_end": summary["window"]["end"],
        "window_day": summary["window"]["day"],
        "drift_share": summary.get("drift_share"),
        "drifted_features": list(summary.get("drifted_features") or []),
        "performance_drop": decision.performance_drop,
        "reason": decision.reason,
        "report_uri": summary.get("report_html"),
        "summary_uri": summary.get("summary_uri"),
        "champion_version": (summary.get("champion") or {}).get("version"),
        "monitoring_run_id": summary.get("run_id"),
    }


def quarantine_window(store: ObjectStore, spec: DatasetSpec, summary: dict[str, Any], decision: DriftDecision) -> str:
    """Copy the window's prediction log and its data-quality result under quarantine/ (overwrite)."""
    from include.mlops.monitoring.reading import prediction_keys
    from include.mlops.pipeline import Interval

    day = summary["window"]["day"]
    iv = Interval(as_utc(summary["window"]["start"]), as_utc(summary["window"]["end"]))
    prefix = monitoring_quarantine_prefix(spec, day).rstrip("/")
    store.delete_prefix(f"{prefix}/")
    for i, (source, key) in enumerate(prediction_keys(store, spec, iv.days)):
        store.copy(key, f"{prefix}/{source}-{i:03d}.parquet")
    store.put_json(
        f"{prefix}/data_quality.json",
        {
            "data_quality": summary.get("data_quality"),
            "decision": decision.to_dict(),
            "report_uri": (summary.get("reports") or {}).get("data_quality"),
        },
    )
    return store.uri(prefix)


def decide_window(summary: dict[str, Any], spec_name: str | None = None) -> dict[str, Any]:
    """The policy for a monitoring summary: reads history and ledger, writes the decision (overwrite).

    Returns the decision dict plus `event_extra` (when it fires) and the summary's links.
    """
    from include.mlops.context import context
    from include.mlops.ledger import read_ledger

    ctx = context(spec_name)
    spec, store = ctx.spec, ctx.store
    policy = DriftPolicy.from_spec(spec)
    obs = Observation.from_summary(summary, policy.primary_metric)
    lookback = max(policy.consecutive_windows, math.ceil(policy.cooldown_days)) + 1
    history = read_history(store, spec.name, obs.day, lookback)
    ledger = read_ledger(store, spec.model_name)
    decision = decide(obs, policy, history, ledger, as_utc(summary["window"]["end"]))
    out: dict[str, Any] = {
        **decision.to_dict(),
        "dataset": spec.name,
        "spec": spec_name or spec.name,
        "policy": asdict(policy),
        "table": decision.table(),
        "report_html": summary.get("report_html"),
        "summary_uri": summary.get("summary_uri"),
        "run_id": summary.get("run_id"),
        "experiment_id": summary.get("experiment_id"),
        "model": spec.model_name,
        "champion_version": (summary.get("champion") or {}).get("version"),
        "drift_share": obs.drift_share,
        "drifted_features": list(obs.drifted_features),
        "rows": obs.rows,
        "labelled_rows": obs.labelled_rows,
        # what the rows above are: the champion's answers; the rest is in the summary's `variants`
        "answered_rows": summary.get("answered_rows", obs.rows),
        "shadow_rows": summary.get("shadow_rows", 0),
        "window": summary["window"],
    }
    if decision.action == QUARANTINE:
        out["quarantine_uri"] = quarantine_window(store, spec, summary, decision)
    if decision.fire:
        out["event_extra"] = event_extra(summary, decision, spec_name or spec.name)
    out["decision_uri"] = store.put_json(
        drift_decision_key(spec.name, obs.day), {k: v for k, v in out.items() if k != "table"}
    )
    return out
