"""`make demo`: the lifecycle on the embedded default, headless, with progress lines.

Generates the demo dataset, ingests the early days through `ml_training` (train=false, as a
backfill would), then runs two full days: the first produces the champion, the second a
challenger that must beat it through the gate. Prints a summary and writes it as JSON to
`$MLOPS_HOME/demo-summary.json`. Airflow's own task logs go to `$MLOPS_HOME/logs/`.
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

from include.mlops.airflow_env import apply_airflow_env, migrate_db
from include.mlops.config import get_settings


class Timeline:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.events: list[dict[str, Any]] = []

    def add(self, step: str, **info: Any) -> None:
        elapsed = round(time.perf_counter() - self.t0, 1)
        self.events.append({"t_s": elapsed, "step": step, **info})
        detail = " ".join(f"{k}={v}" for k, v in info.items())
        print(f"[demo {elapsed:7.1f}s] {step} {detail}".rstrip(), flush=True)


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


def run_day(dag: Any, day: date, conf: dict[str, Any], log_file: Path) -> dict[str, Any]:
    """One `dag.test()` run for the day-long interval starting at `day`; per-task states and times."""
    logical = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
    t = time.perf_counter()
    with logs_to(log_file):
        run = dag.test(logical_date=logical, run_conf=conf)
    tis = {ti.task_id: ti for ti in run.get_task_instances()}
    xcom = {}
    for tid in ("deploy", "evaluate", "register", "validate"):
        ti = tis.get(tid)
        if ti is not None and ti.state == "success":
            xcom[tid] = ti.xcom_pull(task_ids=tid) if hasattr(ti, "xcom_pull") else None
    return {
        "day": day.isoformat(),
        "run_id": run.run_id,
        "state": str(run.state),
        "seconds": round(time.perf_counter() - t, 1),
        "tasks": {
            tid: {"state": str(ti.state), "seconds": round(ti.duration or 0, 2)} for tid, ti in sorted(tis.items())
        },
    }


def main() -> int:
    settings = get_settings()
    env = apply_airflow_env(settings.home)
    timeline = Timeline()
    timeline.add("start", home=str(settings.home), dataset=settings.dataset, store=settings.store_uri)
    migrate_db(env)
    timeline.add("airflow metadata db ready", airflow_home=env["AIRFLOW_HOME"])

    from include.mlops.data.generator import Scenario, write_days
    from include.mlops.spec import load_spec
    from include.mlops.storage import ObjectStore, ensure_bucket

    spec = load_spec(settings.dataset)
    store = ObjectStore(settings.store_uri, settings.s3_endpoint_url)
    ensure_bucket(store)
    demo = spec.section("demo")
    start = date.fromisoformat(str(demo["start"]))
    days = int(os.environ.get("DEMO_DAYS") or demo.get("days", 20))
    rows = int(os.environ.get("DEMO_ROWS_PER_DAY") or demo.get("rows_per_day", 1000))
    write_days(store, spec, start, days, Scenario(), rows=rows)
    timeline.add(
        "demo data generated", days=days, rows_per_day=rows, landing=store.uri(spec.section("source")["landing_prefix"])
    )

    from airflow.dag_processing.dagbag import DagBag

    from include.mlops.config import PROJECT_ROOT

    bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags"))
    if bag.import_errors:
        raise SystemExit(f"DAG import errors: {bag.import_errors}")
    dag = bag.get_dag("ml_training")
    log_dir = settings.home / "logs"
    runs = []
    for i in range(days - 2):
        day = start + timedelta(days=i)
        r = run_day(dag, day, {"dataset": spec.name, "train": False}, log_dir / f"ml_training-{day}.log")
        runs.append(r)
        if r["state"] != "success":
            raise SystemExit(f"ingest of {day} ended {r['state']}: see {log_dir / f'ml_training-{day}.log'}")
    timeline.add(
        "ingested (train=false)",
        first=runs[0]["day"],
        last=runs[-1]["day"],
        seconds=round(sum(r["seconds"] for r in runs), 1),
    )
    for i in (days - 2, days - 1):
        day = start + timedelta(days=i)
        r = run_day(dag, day, {"dataset": spec.name, "train": True}, log_dir / f"ml_training-{day}.log")
        runs.append(r)
        timeline.add(
            "ml_training",
            day=r["day"],
            state=r["state"],
            seconds=r["seconds"],
            tasks=",".join(f"{t}:{v['state'].split('.')[-1].lower()}" for t, v in r["tasks"].items()),
        )
        if r["state"].split(".")[-1].lower() != "success":
            raise SystemExit(f"ml_training for {day} ended {r['state']}: see {log_dir / f'ml_training-{day}.log'}")

    summary = build_summary(spec, store, settings, timeline, runs)
    out = settings.home / "demo-summary.json"
    out.write_text(json.dumps(summary, indent=2, default=str))
    print_summary(summary, out)
    return 0


def build_summary(
    spec: Any, store: Any, settings: Any, timeline: Timeline, runs: list[dict[str, Any]]
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
            lineage={k: v for k, v in mv.tags.items()},
            previous=alias_version(client, spec.model_name, PREVIOUS),
        )
    last_day = runs[-1]["day"]
    return {
        "dataset": spec.name,
        "champion": champ,
        "tracking_uri": settings.tracking_uri,
        "store_uri": settings.store_uri,
        "reports": {
            "validation": store.uri(f"reports/validation/{spec.name}/dt={last_day}/validation.html"),
            "validation_json": store.uri(f"reports/validation/{spec.name}/dt={last_day}/validation.json"),
        },
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
        print(f"  {k:<20}{v}")
    print(f"model uri     : {c.get('model_uri')}")
    print(f"artifacts     : {c.get('artifact_uri')}")
    print(f"tracking uri  : {s['tracking_uri']}  (make up: MLflow UI on http://127.0.0.1:5000)")
    print(f"validation    : {s['reports']['validation']}")
    for e in s["ledger"]:
        print(
            f"ledger        : {e['at']} {e['action']} v{e['from_version']} -> v{e['to_version']} ({e['reason'][:60]})"
        )
    print(f"total         : {s['total_seconds']} s; summary written to {path}")


if __name__ == "__main__":
    raise SystemExit(main())
