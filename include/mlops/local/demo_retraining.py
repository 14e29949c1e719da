"""The demo's drift step: a real scheduler (`airflow standalone`) runs `ml_retraining` for the
queued drift event, and the demo waits until the running service answers with the new champion;
in the control, the evidence that nothing was queued or retrained."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from include.mlops.local.demo_summary import Timeline
from include.mlops.waits import Wait, seconds


def run_retraining_on_scheduler(
    env: dict[str, str], service: Any, timeline: Timeline, logs: Path
) -> tuple[dict[str, Any], Path]:
    """(the finished ml_retraining run, the scheduler's log): `airflow standalone` runs the queued
    asset-triggered run and is stopped again; a run it gave up on is marked failed."""
    from include.mlops.local.airflow_standalone import AirflowStandalone

    airflow = AirflowStandalone(
        {**os.environ, **env, "MLOPS_SERVE_URL": service.url, "MLOPS_ADMIN_TOKEN": service.token or ""},
        logs / "airflow-standalone.log",
    )
    try:
        took = airflow.start(hold=("ml_retraining",))
        timeline.add("airflow standalone ready (scheduler, LocalExecutor)", url=airflow.url, seconds=took)
        try:  # bounded by MLOPS_AIRFLOW_RUN_TIMEOUT, with progress lines while the run goes on
            done = airflow.wait_for_run("ml_retraining", run_type="asset_triggered")
        except Exception:
            _fail_unfinished(airflow, "ml_retraining")
            raise
    finally:
        airflow.stop()
    return done, airflow.log


def wait_for_champion(service: Any, probe: dict[str, Any], before: Any, after: Any) -> Any:
    """The model version the service answers `probe` with, asking (and reloading it) until that is
    `after` or MLOPS_DEPLOY_WAIT_TIMEOUT passes; None when the champion did not change."""
    import httpx

    answering = None
    wait = Wait(
        f"the service at {service.url} to answer with v{after}",
        seconds("MLOPS_DEPLOY_WAIT_TIMEOUT"),
        say=lambda m: print(f"[demo] {m}", flush=True),
        log_hint=service.log_path,
    )
    while after and after != before and not wait.expired():
        try:  # a slow answer is not a failure: ask again until the deadline
            r = httpx.post(f"{service.url}/predict", json={"records": [probe]}, timeout=60)
            if r.status_code == 200:
                answering = r.json()["predictions"][0]["model_version"]
                if str(answering) == str(after):
                    break
            httpx.post(f"{service.url}/admin/reload", headers=service.headers(), timeout=130)
        except httpx.HTTPError as exc:
            print(f"[demo] the service did not answer ({type(exc).__name__}); asking again", flush=True)
        wait.tick(f"it answers with v{answering}")
        time.sleep(1)
    return answering


def retrain_on_the_scheduler(
    env: dict[str, str], settings: Any, spec: Any, service: Any, probe: dict[str, Any], timeline: Timeline, logs: Path
) -> dict[str, Any]:
    """Start a real scheduler, let it run `ml_retraining` for the queued drift event, and wait until
    the service answers with the champion it promoted."""
    from include.mlops.constants import CHAMPION
    from include.mlops.registry import alias_version, setup_mlflow

    client = setup_mlflow(settings)
    before = alias_version(client, spec.model_name, CHAMPION)
    queued = queued_retraining()
    timeline.add("drift Asset event queued", consumers=",".join(queued) or "none")
    done, airflow_log = run_retraining_on_scheduler(env, service, timeline, logs)
    tasks = {t["task_id"]: t for t in done["task_instances"]}
    timeline.add(
        "ml_retraining (asset_triggered)",
        run_id=done["dag_run_id"],
        state=done["state"],
        tasks=",".join(f"{t}:{v['state']}" for t, v in sorted(tasks.items())),
    )
    after = alias_version(client, spec.model_name, CHAMPION)
    answering = wait_for_champion(service, probe, before, after)
    ok = answering is not None and str(answering) == str(after) and after != before
    t = timeline.add(
        "new champion answering" if ok else "champion unchanged",
        champion=f"v{before} -> v{after}",
        service_answers=f"v{answering}",
    )
    return {
        "run_id": done["dag_run_id"],
        "state": done["state"],
        "tasks": tasks,
        "champion_before": before,
        "champion_after": after,
        "service_answers": answering,
        "new_champion_answering": ok,
        "answering_at_s": t,
        "log": str(airflow_log),
    }


def _fail_unfinished(airflow: Any, dag_id: str) -> None:
    """Mark the newest unfinished run of `dag_id` failed (the scheduler is about to stop: a run
    left "running" would never finish)."""
    try:
        for run in airflow.runs(dag_id):
            if run["state"] in ("queued", "running"):
                airflow._call("PATCH", f"/api/v2/dags/{dag_id}/dagRuns/{run['dag_run_id']}", {"state": "failed"})
                print(f"[demo] marked {dag_id} {run['dag_run_id']} failed (the demo gave up waiting)", flush=True)
    except Exception as exc:
        print(f"[demo] could not mark the unfinished {dag_id} run failed: {exc}", flush=True)


def queued_retraining() -> list[str]:
    """DAGs queued by Asset events, waiting for a scheduler."""
    from airflow.models.asset import AssetDagRunQueue
    from airflow.utils.session import create_session

    with create_session() as s:
        return sorted({q.target_dag_id for q in s.query(AssetDagRunQueue).all()})


def no_retraining_evidence() -> dict[str, Any]:
    """What shows the control retrained nothing: ml_monitoring's drift events, queued DAGs, ml_retraining runs."""
    from airflow.models.asset import AssetEvent
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as s:
        return {
            "drift_events": s.query(AssetEvent).filter(AssetEvent.source_dag_id == "ml_monitoring").count(),
            "queued": ",".join(queued_retraining()) or "none",
            "ml_retraining_runs": s.query(DagRun).filter(DagRun.dag_id == "ml_retraining").count(),
        }
