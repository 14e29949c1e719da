"""`make demo`: the lifecycle on the embedded default, headless, with progress lines.

The story, on simulated days (the spec's `demo` section; `DEMO_SCENARIO` overrides its scenario):

1. history: the dataset's first days are generated and ingested through `ml_training`
   (`train=false`, as a backfill would);
2. first champion: the scoring service starts with no champion yet (as `make up` and compose
   start it), then a full `ml_training` day trains, evaluates, registers and promotes v1, which
   its deploy step loads into that service and checks there;
3. production: each following day is ingested, its events are scored
   through the service's `/predict` (with their event time, so late labels join), and
   `ml_monitoring` judges the day's prediction log;
4. drift: from `monitor_days` on, the days come from the drift scenario. When the policy fires,
   the drift Asset event is queued, `airflow standalone` (a real scheduler) starts and runs
   `ml_retraining` for it, the new version goes through the gate, and the demo waits until the
   running service answers with the new champion.

`DEMO_SCENARIO=none make demo` is the control: the same days without drift, so nothing fires and
nothing is retrained. `ml_training` and `ml_monitoring` run with `dag.test()`; only `ml_retraining`
is left unpaused, so the scheduler does not start runs for today's (empty) interval. Prints a
timeline and a summary, and writes both to `$MLOPS_HOME/demo-summary.json`; Airflow's task logs
go to `$MLOPS_HOME/logs/`.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from include.mlops.airflow_env import apply_airflow_env, migrate_db, pause_all_but, reserialize_dags
from include.mlops.config import get_settings
from include.mlops.waits import Wait, seconds

SCORE_CHUNK = 500  # records per /predict request


class Timeline:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.events: list[dict[str, Any]] = []

    def add(self, step: str, **info: Any) -> float:
        elapsed = round(time.perf_counter() - self.t0, 1)
        self.events.append({"t_s": elapsed, "step": step, **info})
        detail = " ".join(f"{k}={v}" for k, v in info.items())
        print(f"[demo {elapsed:7.1f}s] {step} {detail}".rstrip(), flush=True)
        return elapsed


@contextlib.contextmanager
def logs_to(path: Path) -> Iterator[None]:
    """Send everything written to fd 1 and 2 (Airflow's structlog included) to a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with path.open("ab") as fh:
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _state(s: Any) -> str:
    return str(s).split(".")[-1].lower()


def run_day(dag: Any, day: date, conf: dict[str, Any], log_file: Path) -> dict[str, Any]:
    """One `dag.test()` run for the day-long interval starting at `day`; per-task states, times, outputs."""
    logical = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
    t = time.perf_counter()
    with logs_to(log_file):
        run = dag.test(logical_date=logical, run_conf=conf)
    tis = {ti.task_id: ti for ti in run.get_task_instances()}
    out = {
        tid: ti.xcom_pull(task_ids=tid)
        for tid, ti in tis.items()
        if tid in ("decide", "monitor", "train", "evaluate", "register", "deploy") and _state(ti.state) == "success"
    }
    return {
        "dag_id": dag.dag_id,
        "day": day.isoformat(),
        "run_id": run.run_id,
        "state": _state(run.state),
        "seconds": round(time.perf_counter() - t, 1),
        "tasks": {
            tid: {"state": _state(ti.state), "seconds": round(ti.duration or 0, 2)} for tid, ti in sorted(tis.items())
        },
        "outputs": out,
        "log": str(log_file),
    }


def demo_plan(spec: Any) -> dict[str, Any]:
    """Days and scenario of the story, from the spec's `demo` section and the environment."""
    from include.mlops.spec import DemoSpec

    demo = spec.demo or DemoSpec()
    window = spec.training.window_days
    scenario = os.environ.get("DEMO_SCENARIO") or demo.scenario
    history = int(os.environ.get("DEMO_HISTORY_DAYS") or demo.history_days or window + spec.label_delay_days)
    monitor = int(os.environ.get("DEMO_MONITOR_DAYS") or demo.monitor_days)
    drift = int(os.environ.get("DEMO_DRIFT_DAYS") or demo.drift_days)
    start = date.fromisoformat(str(demo.start))
    train_day = start + timedelta(days=history)
    return {
        "start": start,
        "train_day": train_day,
        "scenario": scenario,
        "drift_start": train_day + timedelta(days=monitor + 1),
        "last_day": train_day + timedelta(days=monitor + drift),
        "rows": int(os.environ.get("DEMO_ROWS_PER_DAY") or demo.rows_per_day),
        "history_days": history,
        "monitor_days": monitor,
        "drift_days": drift,
    }


def score_day(service: Any, store: Any, spec: Any, day: date) -> dict[str, Any]:
    """The day's landed events through `/predict`, with their event time; flushes the prediction log."""
    import httpx
    import pandas as pd

    from include.mlops.data.generator import events_key

    raw = store.get_parquet(events_key(spec, day))
    cols = [spec.entity_key, spec.timestamp, *spec.feature_names]
    frame = raw[cols].astype(object).where(raw[cols].notna(), None)
    frame[spec.timestamp] = pd.to_datetime(raw[spec.timestamp], utc=True).map(lambda t: t.isoformat())
    records = frame.to_dict(orient="records")
    versions: dict[str, int] = {}
    t = time.perf_counter()
    with httpx.Client(base_url=service.url, timeout=60) as client:
        for i in range(0, len(records), SCORE_CHUNK):
            r = client.post("/predict", json={"records": records[i : i + SCORE_CHUNK]})
            if r.status_code != 200:
                raise RuntimeError(f"/predict answered {r.status_code} for {day}: {r.text[:500]}")
            for p in r.json()["predictions"]:
                versions[p["model_version"]] = versions.get(p["model_version"], 0) + 1
        flushed = client.post("/admin/flush", headers=service.headers()).json()
    took = round(time.perf_counter() - t, 1)
    return {"rows": len(records), "versions": versions, "seconds": took, "probe": records[0], **flushed}


def main() -> int:
    settings = get_settings()
    env = apply_airflow_env(settings.home)
    timeline = Timeline()
    timeline.add("start", home=str(settings.home), dataset=settings.dataset, store=settings.store_uri)
    migrate_db(env)
    reserialize_dags(env)  # ml_retraining in the DB before any drift event, so the event queues it
    # paused while the simulated days run (a scheduler would start runs for today's empty
    # interval), unpaused again at the end: `make up` afterwards finds them as the README says
    paused = pause_all_but({"ml_retraining"})
    timeline.add("airflow metadata db ready", airflow_home=env["AIRFLOW_HOME"], paused=",".join(paused))
    try:
        return _story(settings, env, timeline)
    finally:
        from include.mlops.airflow_env import set_paused

        set_paused(paused, False)
        print(f"[demo] unpaused again: {','.join(paused)}", flush=True)


def _story(settings: Any, env: dict[str, str], timeline: Timeline) -> int:
    """Days 1 to N of the story; the summary is written whatever happens after the history."""
    from include.mlops.data.generator import Scenario, write_days
    from include.mlops.spec import load_spec
    from include.mlops.storage import ObjectStore, ensure_bucket

    spec = load_spec(settings.dataset)
    store = ObjectStore(settings.store_uri, settings.s3_endpoint_url)
    ensure_bucket(store)
    plan = demo_plan(spec)
    days_total = (plan["last_day"] - plan["start"]).days + 1
    write_days(
        store, spec, plan["start"], days_total, Scenario(plan["scenario"], plan["drift_start"]), rows=plan["rows"]
    )
    timeline.add(
        "demo data generated",
        days=days_total,
        rows_per_day=plan["rows"],
        scenario=plan["scenario"],
        drift_from=plan["drift_start"] if plan["scenario"] != "none" else "-",
        landing=store.uri(spec.landing_prefix),
    )

    from airflow.dag_processing.dagbag import DagBag

    from include.mlops.config import PROJECT_ROOT

    bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags"))
    if bag.import_errors:
        raise SystemExit(f"DAG import errors: {bag.import_errors}")
    training, monitoring = bag.get_dag("ml_training"), bag.get_dag("ml_monitoring")
    logs = settings.home / "logs"
    runs: list[dict[str, Any]] = []

    def run(dag: Any, day: date, **conf: Any) -> dict[str, Any]:
        r = run_day(dag, day, {"dataset": spec.name, **conf}, logs / f"{dag.dag_id}-{day}.log")
        runs.append(r)
        if r["state"] != "success":
            raise SystemExit(f"{dag.dag_id} for {day} ended {r['state']}: see {r['log']}")
        return r

    # 1. history
    for i in range(plan["history_days"]):
        r = run(training, plan["start"] + timedelta(days=i), train=False)
        print(f"  ingested {r['day']} in {r['seconds']} s", flush=True)
    timeline.add(
        "history ingested (ml_training, train=false)",
        days=plan["history_days"],
        seconds=round(sum(r["seconds"] for r in runs), 1),
    )
    # 2. the scoring service, up before any champion exists, as `make up` and compose run it
    from include.mlops.deployment import start_service

    service = start_service({"MLOPS_SERVE_SPEC": spec.name}, until_ready=False)
    os.environ["MLOPS_SERVE_URL"], os.environ["MLOPS_ADMIN_TOKEN"] = service.url, service.token or ""
    timeline.add("scoring service up, no champion yet", url=service.url)
    windows: list[dict[str, Any]] = []
    retraining: dict[str, Any] = {}
    first_drift_t: float | None = None
    failure: str | None = None
    try:
        # 3. the first champion: deploy loads it into that service and checks it there
        r = run(training, plan["train_day"], train=True)
        deploy = r["outputs"].get("deploy") or {}
        timeline.add(
            "ml_training",
            day=r["day"],
            seconds=r["seconds"],
            tasks=",".join(f"{t}:{v['state']}" for t, v in r["tasks"].items()),
            deployed=deploy.get("message", ""),
        )
        if deploy.get("service_url") != service.url:
            raise SystemExit(f"the first champion was checked on {deploy.get('service_url')}, not on {service.url}")
        timeline.add("scoring service ready", url=service.url)

        # 4. production: each day is ingested, scored and monitored
        day = plan["train_day"]
        while day < plan["last_day"]:
            day += timedelta(days=1)
            drifted = plan["scenario"] != "none" and day >= plan["drift_start"]
            t_day = timeline.add("day", day=day, data=plan["scenario"] if drifted else "normal")
            if drifted and first_drift_t is None:
                first_drift_t = t_day
            run(training, day, train=False)
            scored = score_day(service, store, spec, day)
            timeline.add("scored through the service", day=day, rows=scored["rows"], versions=scored["versions"])
            m = run(monitoring, day)
            decision = m["outputs"].get("decide") or {}
            summary = m["outputs"].get("monitor") or {}
            window = {
                "day": day.isoformat(),
                "data": plan["scenario"] if drifted else "normal",
                "scored": {k: v for k, v in scored.items() if k != "probe"},
                "action": decision.get("action", "skipped"),
                "reason": decision.get("reason"),
                "drift_share": decision.get("drift_share"),
                "drifted_features": decision.get("drifted_features"),
                "performance": summary.get("performance"),
                "reports": summary.get("reports") or {"data_drift": summary.get("report_html")},
                "decision_uri": decision.get("decision_uri"),
            }
            windows.append(window)
            timeline.add(
                "ml_monitoring",
                day=day,
                action=window["action"],
                drift_share=window["drift_share"],
                report=summary.get("report_html"),
            )
            if decision.get("fire"):
                retraining = retrain_on_the_scheduler(env, settings, spec, service, scored["probe"], timeline, logs)
                break
        if plan["scenario"] == "none":
            timeline.add("control: no drift event, no ml_retraining run", **no_retraining_evidence())
    except (Exception, SystemExit) as exc:  # the summary is written whatever failed, with why
        failure = str(exc) or type(exc).__name__
        timeline.add("FAILED", reason=failure)
    finally:
        service.close()

    summary = build_summary(spec, store, settings, timeline, runs, windows, retraining, plan, first_drift_t)
    summary["failure"] = failure
    out = settings.home / "demo-summary.json"
    out.write_text(json.dumps(summary, indent=2, default=str))
    print_summary(summary, out)
    if failure:
        print(f"the demo failed: {failure}", file=sys.stderr)
        return 1
    if plan["scenario"] != "none" and not retraining.get("new_champion_answering"):
        print("the drift story did not complete: see the timeline above", file=sys.stderr)
        return 1
    return 0


def retrain_on_the_scheduler(
    env: dict[str, str], settings: Any, spec: Any, service: Any, probe: dict[str, Any], timeline: Timeline, logs: Path
) -> dict[str, Any]:
    """Start a real scheduler, let it run `ml_retraining` for the queued drift event, and wait until
    the service answers with the champion it promoted."""
    import httpx

    from include.mlops.local_stack import AirflowStandalone
    from include.mlops.registry import CHAMPION, alias_version, setup_mlflow

    client = setup_mlflow(settings)
    before = alias_version(client, spec.model_name, CHAMPION)
    queued = queued_retraining()
    timeline.add("drift Asset event queued", consumers=",".join(queued) or "none")
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
    tasks = {t["task_id"]: t for t in done["task_instances"]}
    timeline.add(
        "ml_retraining (asset_triggered)",
        run_id=done["dag_run_id"],
        state=done["state"],
        tasks=",".join(f"{t}:{v['state']}" for t, v in sorted(tasks.items())),
    )
    after = alias_version(client, spec.model_name, CHAMPION)
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
        "log": str(airflow.log),
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
    from airflow.models.asset import AssetEvent
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as s:
        return {
            "drift_events": s.query(AssetEvent).filter(AssetEvent.source_dag_id == "ml_monitoring").count(),
            "queued": ",".join(queued_retraining()) or "none",
            "ml_retraining_runs": s.query(DagRun).filter(DagRun.dag_id == "ml_retraining").count(),
        }


def build_summary(
    spec: Any,
    store: Any,
    settings: Any,
    timeline: Timeline,
    runs: list[dict[str, Any]],
    windows: list[dict[str, Any]],
    retraining: dict[str, Any],
    plan: dict[str, Any],
    first_drift_t: float | None,
) -> dict[str, Any]:
    from include.mlops.registry import CHAMPION, PREVIOUS, alias_version, read_ledger, setup_mlflow

    client = setup_mlflow(settings)
    version = alias_version(client, spec.model_name, CHAMPION)
    champ: dict[str, Any] = {"name": spec.model_name, "version": version}
    if version:
        mv = client.get_model_version(spec.model_name, version)
        run = client.get_run(mv.run_id)
        champ.update(
            run_id=mv.run_id,
            metrics={k: round(v, 4) for k, v in run.data.metrics.items() if k.startswith("holdout_")},
            model_uri=run.data.tags.get("mlops.model_uri"),
            artifact_uri=run.info.artifact_uri,
            lineage=dict(mv.tags.items()),
            previous=alias_version(client, spec.model_name, PREVIOUS),
        )
    train_day = plan["train_day"].isoformat()
    drift_to_answer = None
    if retraining.get("new_champion_answering") and first_drift_t is not None:
        drift_to_answer = round(retraining["answering_at_s"] - first_drift_t, 1)
    return {
        "dataset": spec.name,
        "scenario": plan["scenario"],
        "plan": {k: str(v) for k, v in plan.items()},
        "champion": champ,
        "tracking_uri": settings.tracking_uri,
        "store_uri": settings.store_uri,
        "reports": {
            "validation": store.uri(f"reports/validation/{spec.name}/dt={train_day}/validation.html"),
            "validation_json": store.uri(f"reports/validation/{spec.name}/dt={train_day}/validation.json"),
        },
        "monitoring": windows,
        "retraining": retraining,
        "drift_to_new_champion_answering_s": drift_to_answer,
        "ledger": read_ledger(store, spec.model_name),
        "runs": runs,
        "timeline": timeline.events,
        "total_seconds": round(time.perf_counter() - timeline.t0, 1),
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


if __name__ == "__main__":
    raise SystemExit(main())
