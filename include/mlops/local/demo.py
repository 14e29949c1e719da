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

import os
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from include.mlops.config import get_settings
from include.mlops.local.airflow_env import apply_airflow_env, migrate_db, pause_all_but, reserialize_dags
from include.mlops.local.day_runs import run_day
from include.mlops.local.demo_retraining import no_retraining_evidence, retrain_on_the_scheduler
from include.mlops.local.demo_summary import Timeline, finish, monitoring_window

SCORE_CHUNK = 500  # records per /predict request


def demo_plan(spec: Any) -> dict[str, Any]:
    """Days and scenario of the story, from the spec's `demo` section and the environment
    (`config.DemoOverrides`: DEMO_SCENARIO, DEMO_HISTORY_DAYS, ...)."""
    from include.mlops.config import get_demo_overrides
    from include.mlops.spec_sections import DemoSpec

    base = spec.demo or DemoSpec()
    demo = base.model_copy(update=get_demo_overrides().model_dump(exclude_none=True))
    window = spec.training.window_days
    scenario = demo.scenario
    history = int(demo.history_days or window + spec.label_delay_days)
    monitor = int(demo.monitor_days)
    drift = int(demo.drift_days)
    start = date.fromisoformat(str(demo.start))
    train_day = start + timedelta(days=history)
    return {
        "start": start,
        "train_day": train_day,
        "scenario": scenario,
        "drift_start": train_day + timedelta(days=monitor + 1),
        "last_day": train_day + timedelta(days=monitor + drift),
        "rows": int(demo.rows_per_day),
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
        from include.mlops.local.airflow_env import set_paused

        set_paused(paused, False)
        print(f"[demo] unpaused again: {','.join(paused)}", flush=True)


@dataclass
class Story:
    """What the story works with, and what it has gathered so far (kept when a later step fails)."""

    settings: Any
    env: dict[str, str]
    timeline: Timeline
    spec: Any
    store: Any
    plan: dict[str, Any]
    runs: list[dict[str, Any]] = field(default_factory=list)
    windows: list[dict[str, Any]] = field(default_factory=list)
    retraining: dict[str, Any] = field(default_factory=dict)
    first_drift_t: float | None = None

    @property
    def logs(self) -> Path:
        return self.settings.home / "logs"

    def run(self, dag: Any, day: date, **conf: Any) -> dict[str, Any]:
        """One DAG run for the day, recorded; stops the story unless it succeeded."""
        r = run_day(dag, day, {"dataset": self.spec.name, **conf}, self.logs / f"{dag.dag_id}-{day}.log")
        self.runs.append(r)
        if r["state"] != "success":
            raise SystemExit(f"{dag.dag_id} for {day} ended {r['state']}: see {r['log']}")
        return r


def generate_demo_data(story: Story) -> None:
    """Every day of the story written to the landing area, drifted from the plan's drift start."""
    from include.mlops.data.generator import Scenario, write_days
    from include.mlops.storage import ensure_bucket

    plan, store, spec = story.plan, story.store, story.spec
    ensure_bucket(store)
    days_total = (plan["last_day"] - plan["start"]).days + 1
    write_days(
        store, spec, plan["start"], days_total, Scenario(plan["scenario"], plan["drift_start"]), rows=plan["rows"]
    )
    story.timeline.add(
        "demo data generated",
        days=days_total,
        rows_per_day=plan["rows"],
        scenario=plan["scenario"],
        drift_from=plan["drift_start"] if plan["scenario"] != "none" else "-",
        landing=store.uri(spec.landing_prefix),
    )


def load_story_dags() -> tuple[Any, Any]:
    """(ml_training, ml_monitoring) parsed from the project's dags folder; stops on import errors."""
    from airflow.dag_processing.dagbag import DagBag

    from include.mlops.config import PROJECT_ROOT

    bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags"))
    if bag.import_errors:
        raise SystemExit(f"DAG import errors: {bag.import_errors}")
    return bag.get_dag("ml_training"), bag.get_dag("ml_monitoring")


def ingest_history(story: Story, training: Any) -> None:
    """Step 1: the history days through ml_training without training, as a backfill would."""
    for i in range(story.plan["history_days"]):
        r = story.run(training, story.plan["start"] + timedelta(days=i), train=False)
        print(f"  ingested {r['day']} in {r['seconds']} s", flush=True)
    story.timeline.add(
        "history ingested (ml_training, train=false)",
        days=story.plan["history_days"],
        seconds=round(sum(r["seconds"] for r in story.runs), 1),
    )


def train_first_champion(story: Story, training: Any, service: Any) -> None:
    """Step 3: a full ml_training day whose deploy step must load and check v1 in the running service."""
    from include.mlops.results import PromoteResult

    r = story.run(training, story.plan["train_day"], train=True)
    pushed = r["outputs"].get("deploy")
    deploy = PromoteResult.from_xcom(pushed) if pushed else None
    story.timeline.add(
        "ml_training",
        day=r["day"],
        seconds=r["seconds"],
        tasks=",".join(f"{t}:{v['state']}" for t, v in r["tasks"].items()),
        deployed=deploy.message if deploy else "",
    )
    checked_on = deploy.service_url if deploy else None
    if checked_on != service.url:
        raise SystemExit(f"the first champion was checked on {checked_on}, not on {service.url}")
    story.timeline.add("scoring service ready", url=service.url)


def production_day(story: Story, day: date, dags: tuple[Any, Any], service: Any) -> bool:
    """Step 4 for one day: ingest, score through the service, monitor; retrains and returns True if it fires."""
    training, monitoring = dags
    plan = story.plan
    drifted = plan["scenario"] != "none" and day >= plan["drift_start"]
    data = plan["scenario"] if drifted else "normal"
    t_day = story.timeline.add("day", day=day, data=data)
    if drifted and story.first_drift_t is None:
        story.first_drift_t = t_day
    story.run(training, day, train=False)
    scored = score_day(service, story.store, story.spec, day)
    story.timeline.add("scored through the service", day=day, rows=scored["rows"], versions=scored["versions"])
    m = story.run(monitoring, day)
    window = monitoring_window(day, data, scored, m)
    story.windows.append(window)
    story.timeline.add(
        "ml_monitoring",
        day=day,
        action=window["action"],
        drift_share=window["drift_share"],
        report=(m["outputs"].get("monitor") or {}).get("report_html"),
    )
    if not (m["outputs"].get("decide") or {}).get("fire"):
        return False
    story.retraining = retrain_on_the_scheduler(
        story.env, story.settings, story.spec, service, scored["probe"], story.timeline, story.logs
    )
    return True


def run_with_service(story: Story, dags: tuple[Any, Any]) -> str | None:
    """Steps 2 to 4 around one scoring service; returns why they failed, or None."""
    from include.mlops.delivery.service import start_service

    # 2. the scoring service, up before any champion exists, as `make up` and compose run it
    service = start_service({"MLOPS_SERVE_SPEC": story.spec.name}, until_ready=False)
    os.environ["MLOPS_SERVE_URL"], os.environ["MLOPS_ADMIN_TOKEN"] = service.url, service.token or ""
    story.timeline.add("scoring service up, no champion yet", url=service.url)
    try:
        train_first_champion(story, dags[0], service)
        day = story.plan["train_day"]
        while day < story.plan["last_day"]:
            day += timedelta(days=1)
            if production_day(story, day, dags, service):
                break
        if story.plan["scenario"] == "none":
            story.timeline.add("control: no drift event, no ml_retraining run", **no_retraining_evidence())
    except (Exception, SystemExit) as exc:  # the summary is written whatever failed, with why
        failure = str(exc) or type(exc).__name__
        story.timeline.add("FAILED", reason=failure)
        return failure
    finally:
        service.close()
    return None


def _story(settings: Any, env: dict[str, str], timeline: Timeline) -> int:
    """Days 1 to N of the story; the summary is written whatever happens after the history."""
    from include.mlops.context import context

    ctx = context(settings.dataset, settings)
    story = Story(settings, env, timeline, ctx.spec, ctx.store, demo_plan(ctx.spec))
    generate_demo_data(story)
    dags = load_story_dags()
    ingest_history(story, dags[0])
    return finish(story, run_with_service(story, dags))


if __name__ == "__main__":
    raise SystemExit(main())
