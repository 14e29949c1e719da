"""What `make demo` reports: the timeline's progress lines, one row per monitored day, and the
summary (champion, reports, retraining, ledger, runs) printed at the end and written to
`$MLOPS_HOME/demo-summary.json` whether the story completed or not."""

from __future__ import annotations

import json
import sys
import time
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from include.mlops.local.demo import Story


class Timeline:
    """The story's steps, each printed as a progress line and kept with its time since the start."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.events: list[dict[str, Any]] = []

    def add(self, step: str, **info: Any) -> float:
        elapsed = round(time.perf_counter() - self.t0, 1)
        self.events.append({"t_s": elapsed, "step": step, **info})
        detail = " ".join(f"{k}={v}" for k, v in info.items())
        print(f"[demo {elapsed:7.1f}s] {step} {detail}".rstrip(), flush=True)
        return elapsed


def monitoring_window(day: date, data: str, scored: dict[str, Any], monitoring_run: dict[str, Any]) -> dict[str, Any]:
    """One day's monitoring outcome as the summary lists it: what was scored, decided and reported."""
    decision = monitoring_run["outputs"].get("decide") or {}
    summary = monitoring_run["outputs"].get("monitor") or {}
    return {
        "day": day.isoformat(),
        "data": data,
        "scored": {k: v for k, v in scored.items() if k != "probe"},
        "action": decision.get("action", "skipped"),
        "reason": decision.get("reason"),
        "drift_share": decision.get("drift_share"),
        "drifted_features": decision.get("drifted_features"),
        "performance": summary.get("performance"),
        "reports": summary.get("reports") or {"data_drift": summary.get("report_html")},
        "decision_uri": decision.get("decision_uri"),
    }


def finish(story: Story, failure: str | None) -> int:
    """Writes and prints the summary; the exit code says whether the story completed."""
    summary = build_summary(story)
    summary["failure"] = failure
    out = story.settings.home / "demo-summary.json"
    out.write_text(json.dumps(summary, indent=2, default=str))
    print_summary(summary, out)
    if failure:
        print(f"the demo failed: {failure}", file=sys.stderr)
        return 1
    if story.plan["scenario"] != "none" and not story.retraining.get("new_champion_answering"):
        print("the drift story did not complete: see the timeline above", file=sys.stderr)
        return 1
    return 0


def champion_summary(client: Any, model_name: str) -> dict[str, Any]:
    """The current champion: version, holdout metrics, URIs, lineage tags and the previous version."""
    from include.mlops.constants import CHAMPION, PREVIOUS
    from include.mlops.registry import alias_version

    version = alias_version(client, model_name, CHAMPION)
    champ: dict[str, Any] = {"name": model_name, "version": version}
    if version:
        mv = client.get_model_version(model_name, version)
        run = client.get_run(mv.run_id)
        champ.update(
            run_id=mv.run_id,
            metrics={k: round(v, 4) for k, v in run.data.metrics.items() if k.startswith("holdout_")},
            model_uri=run.data.tags.get("mlops.model_uri"),
            artifact_uri=run.info.artifact_uri,
            lineage=dict(mv.tags.items()),
            previous=alias_version(client, model_name, PREVIOUS),
        )
    return champ


def build_summary(story: Story) -> dict[str, Any]:
    """Everything the story did and where its results are, as plain JSON-ready values."""
    from include.mlops.layout import validation_report_prefix
    from include.mlops.ledger import read_ledger
    from include.mlops.registry import setup_mlflow

    spec, store, settings, plan, retraining = story.spec, story.store, story.settings, story.plan, story.retraining
    champ = champion_summary(setup_mlflow(settings), spec.model_name)
    reports = validation_report_prefix(spec, plan["train_day"])
    drift_to_answer = None
    if retraining.get("new_champion_answering") and story.first_drift_t is not None:
        drift_to_answer = round(retraining["answering_at_s"] - story.first_drift_t, 1)
    return {
        "dataset": spec.name,
        "scenario": plan["scenario"],
        "plan": {k: str(v) for k, v in plan.items()},
        "champion": champ,
        "tracking_uri": settings.tracking_uri,
        "store_uri": settings.store_uri,
        "reports": {
            "validation": store.uri(f"{reports}validation.html"),
            "validation_json": store.uri(f"{reports}validation.json"),
        },
        "monitoring": story.windows,
        "retraining": retraining,
        "drift_to_new_champion_answering_s": drift_to_answer,
        "ledger": read_ledger(store, spec.model_name),
        "runs": story.runs,
        "timeline": story.timeline.events,
        "total_seconds": round(time.perf_counter() - story.timeline.t0, 1),
    }


def print_summary(s: dict[str, Any], path: Path) -> None:
    c = s["champion"]
    print("\n=== demo summary ===")
    print(f"champion      : {c['name']} v{c['version']} (previous: v{c.get('previous')})")
    for k, v in sorted((c.get("metrics") or {}).items()):
        print(f"  {k:<26} {v}")
    print(f"model uri     : {c.get('model_uri')}")
    print(f"artifacts     : {c.get('artifact_uri')}")
    print(f"tracking uri  : {s['tracking_uri']}  (make up: MLflow UI on http://127.0.0.1:5000)")
    print(f"validation    : {s['reports']['validation']}")
    print(f"scenario      : {s['scenario']}")
    for w in s["monitoring"]:
        share = "-" if w["drift_share"] is None else f"{w['drift_share']:.2f}"
        print(f"monitoring    : {w['day']} {w['data']:<16} drift share {share:<5} -> {w['action']}")
        for kind, uri in (w.get("reports") or {}).items():
            if uri and kind in ("data_drift", "performance"):
                print(f"                {kind}: {uri}")
    r = s["retraining"]
    if r:
        print(f"retraining    : {r['run_id']} {r['state']}; champion v{r['champion_before']} -> v{r['champion_after']}")
        print(f"service       : answers with v{r['service_answers']}")
        print(f"drift -> new champion answering: {s['drift_to_new_champion_answering_s']} s")
    else:
        print("retraining    : none (no drift event)")
    for e in s["ledger"]:
        print(
            f"ledger        : {e['at']} {e['action']} ({e.get('status', 'done')}) v{e['from_version']} -> "
            f"v{e['to_version']} ({e['reason'][:60]})"
        )
    print(f"total         : {s['total_seconds']} s; summary written to {path}")
