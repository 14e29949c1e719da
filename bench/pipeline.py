"""ml_training at scale: per-task times, peak RSS and overhead over the bare compute.

For N rows: daily batches of N/5 rows; the final day's run trains on a 5-day labelled window
(N rows). Phases run in fresh processes so each has its own imports and peak RSS:
  ingest  - days 1..8 through the pipeline steps (not measured)
  dag     - `ml_training` for day 9 with dag.test(): wall time, per-task times, peak RSS. The
            scoring service runs beside it, started before the timed run and still waiting for
            its first champion, as `make up` and the compose stack run it: deploy checks that
            service (MLOPS_SERVE_URL) instead of starting one of its own. Its peak RSS is
            reported apart (`service_peak_rss_mb`)
  bare    - the same work without the platform: read the parquet, the same search with the
            same budget and folds, fit, predict the holdout
    python -m bench.pipeline 10000 100000 1000000
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from bench.common import local_env, machine, merge_results, peak_rss_mb, run_json

START = date(2026, 10, 1)
WINDOW, INGEST_DAYS = 5, 8
DEPLOY_KEYS = ("promoted", "checked", "service_url", "deploy_rps", "deploy_p99_ms", "deploy_errors")


def process_peak_rss_mb(pid: int) -> float | None:
    """Peak RSS of another process so far (VmHWM), None where /proc does not say."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def bench_spec(home: Path, rows: int) -> str:
    import yaml

    from bench.common import ROOT

    raw = yaml.safe_load((ROOT / "include" / "specs" / "churn.yaml").read_text())
    raw["training"].update({"window_days": WINDOW, "holdout_days": 1, "min_rows": 100})
    raw["demo"]["rows_per_day"] = rows // WINDOW
    raw["deployment"]["load_test"] = {"requests": 100, "concurrency": 4}
    if os.environ.get("BENCH_SCALE") == "small":  # the quick pass: two candidates, a 15 s budget
        raw["model"]["search"].update({"n_iter": 2, "budget_seconds": 15})
    (home / "specs").mkdir(parents=True, exist_ok=True)
    (home / "specs" / "churn.yaml").write_text(yaml.safe_dump(raw))
    return "churn"  # steps take specs by name, from the home's spec directory


def phase_ingest(spec_path: str) -> dict:
    from include.mlops import pipeline as P
    from include.mlops.context import context
    from include.mlops.data.generator import write_days
    from include.mlops.storage import ensure_bucket

    ctx = context(spec_path)
    spec, store = ctx.spec, ctx.store
    ensure_bucket(store)
    write_days(store, spec, START, INGEST_DAYS + 1)
    for i in range(INGEST_DAYS):
        d = START + timedelta(days=i)
        iv = P.Interval(
            datetime(d.year, d.month, d.day, tzinfo=UTC),
            datetime(d.year, d.month, d.day, tzinfo=UTC) + timedelta(days=1),
        )
        P.extract(iv, spec_path)
        P.validate(iv, spec_path)
        P.prepare(iv, spec_path)
    return {"ok": True}


def phase_dag(spec_path: str) -> dict:
    from include.mlops.config import get_settings
    from include.mlops.local.airflow_env import apply_airflow_env, migrate_db
    from include.mlops.results import TrainResult
    from include.mlops.spec import load_spec

    env = apply_airflow_env(get_settings().home)
    migrate_db(env)
    from airflow.dag_processing.dagbag import DagBag

    from bench.common import ROOT
    from include.mlops.delivery.service import start_service

    dag = DagBag(dag_folder=str(ROOT / "dags")).get_dag("ml_training")
    day = START + timedelta(days=INGEST_DAYS)
    service = start_service({"MLOPS_DATASET": spec_path}, until_ready=False)
    os.environ["MLOPS_SERVE_URL"], os.environ["MLOPS_ADMIN_TOKEN"] = service.url, service.token or ""
    try:
        t = time.perf_counter()
        run = dag.test(
            logical_date=datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1),
            run_conf={"dataset": spec_path, "train": True},
        )
        wall = time.perf_counter() - t
        service_rss = process_peak_rss_mb(service.proc.pid)
    finally:
        service.close()
        service.cleanup()
    tis = {ti.task_id: ti for ti in run.get_task_instances()}
    train_out = TrainResult.from_xcom(tis["train"].xcom_pull(task_ids="train"))
    return {
        "state": str(run.state),
        "wall_s": round(wall, 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "service_peak_rss_mb": service_rss,
        "service_url": service.url,
        "deploy": {k: v for k, v in (tis["deploy"].xcom_pull(task_ids="deploy") or {}).items() if k in DEPLOY_KEYS},
        "task_s": {k: round(v.duration or 0, 2) for k, v in sorted(tis.items())},
        "task_state": {k: str(v.state) for k, v in sorted(tis.items())},
        "train_rows": train_out.rows,
        "candidates": train_out.candidates,
        "search": {k: v for k, v in load_spec(spec_path).model.search.model_dump().items() if k != "space"},
        "train_uri": train_out.train_uri,
        "holdout_uri": train_out.holdout_uri,
    }


def phase_bare(spec_path: str, train_uri: str, holdout_uri: str) -> dict:
    """The same work with no platform: parquet in, same search (budget, folds), fit, predict."""
    t = time.perf_counter()
    import pandas as pd

    from include.mlops.features.build import model_features
    from include.mlops.spec import load_spec
    from include.mlops.training import fit as T

    spec = load_spec(spec_path)
    train = pd.read_parquet(train_uri.removeprefix("file://"))
    hold = pd.read_parquet(holdout_uri.removeprefix("file://"))
    model, result = T.fit(spec, train)
    model.predict_proba(hold[model_features(spec)])
    return {
        "bare_s": round(time.perf_counter() - t, 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "candidates": len(result.candidates),
    }


def run(rows: int) -> dict:
    home = Path(tempfile.mkdtemp(prefix=f"bench-pipeline-{rows}-"))
    env = local_env(home)
    spec_path = bench_spec(home, rows)
    log = home / "bench.log"
    t = time.perf_counter()
    run_json(["-m", "bench.pipeline", "--phase", "ingest", spec_path], env, log)
    ingest_s = time.perf_counter() - t
    dag = run_json(["-m", "bench.pipeline", "--phase", "dag", spec_path], env, log)
    bare = run_json(
        ["-m", "bench.pipeline", "--phase", "bare", spec_path, dag["train_uri"], dag["holdout_uri"]], env, log
    )
    result = {
        "task_s": dag["task_s"],
        "wall_s": dag["wall_s"],
        "peak_rss_mb": dag["peak_rss_mb"],
        "service_peak_rss_mb": dag["service_peak_rss_mb"],
        "deploy": dag["deploy"],
        # deploy checked the service running beside the DAG, not one it started for itself
        "deploy_on_running_service": dag["deploy"].get("service_url") == dag["service_url"],
        "bare_s": bare["bare_s"],
        "overhead_ratio": round(dag["wall_s"] / bare["bare_s"], 2),
        "train_rows": dag["train_rows"],
        # the budget stops both searches the same way unless load differs a lot between them
        "candidates": {"dag": dag["candidates"], "bare": bare["candidates"]},
        "daily_batch_rows": rows // WINDOW,
        "search": dag["search"],
        "ingest_8_days_s": round(ingest_s, 1),
        "state": dag["state"],
        "home": str(home),
    }
    print(f"[bench.pipeline] {rows}: {json.dumps(result)}", file=sys.stderr, flush=True)
    return result


def main(argv: list[str]) -> None:
    if argv and argv[0] == "--phase":
        fn = {"ingest": phase_ingest, "dag": phase_dag, "bare": phase_bare}[argv[1]]
        print(json.dumps(fn(*argv[2:])))
        return
    sizes = [int(a) for a in argv] or [10_000, 100_000, 1_000_000]
    results = {str(n): run(n) for n in sizes}
    merge_results(
        {
            "pipeline": results,
            "machine": machine(),
            "commands": {"pipeline": "python -m bench.pipeline " + " ".join(map(str, sizes))},
        }
    )
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
