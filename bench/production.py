"""The production stack, natively, and what it costs next to the embedded default.

The stack is tests/support/production_stack.py's `ProductionStack` (docker-compose.yaml's
configuration without Docker, on this machine's PostgreSQL and Redis: Airflow 3 with the
CeleryExecutor, MLflow's tracking server on PostgreSQL with artifacts in S3, Feast on PostgreSQL
and Redis); tests/integration/test_production.py drives the same stack. This benchmark:

    PYTHONPATH=. .venv/bin/python -m bench.production [--rows 300] [--keep] [--note TEXT]

It writes the same demo days (DEMO_START, --rows a day, the tests' small spec) to both stacks,
ingests days 1-8 (production: one 8-day `ml_training` run with train=false through Celery;
embedded: the pipeline steps in-process, as bench.pipeline does), then measures the full
`ml_training` run of day 9:

- production: the run triggered over REST with its real data interval; wall time from the
  POST to the run's end, and per task its duration, its wait in the queue (queued -> start)
  and the worker that ran it, from the REST API's task instances;
- embedded: `dag.test()` on SQLite and local files (bench.pipeline's `dag` phase, own process).

Figures go to stdout as a table and to bench/results_production.json, with the 1-minute load
average around each phase (the machine may be shared: read the figures with it). `--note`
stores a remark with them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from bench.common import out_path  # noqa: E402
from tests.support.production_stack import (  # noqa: E402  (the stack lives with the tests that own it)
    DEMO_START,
    ProductionStack,
    services_unavailable,
)

INGEST_DAYS = 8  # day 9 is the first full run: labels (3 days late) cover days 1-6
RESULTS = out_path("production")


def small_spec(path: Path, rows_per_day: int) -> Path:
    """The shipped churn spec with the tests' tiny search budget (tests/conftest.py small_spec)."""
    import yaml

    raw = yaml.safe_load((ROOT / "include" / "specs" / "churn.yaml").read_text())
    raw["model"]["search"].update({"n_iter": 2, "cv_folds": 2, "budget_seconds": 30})
    raw["training"]["window_days"] = 6
    raw["training"]["min_rows"] = 200
    raw["gate"]["minimums"] = {k: round(v * 0.8, 3) for k, v in raw["gate"]["minimums"].items()}
    raw["demo"]["rows_per_day"] = rows_per_day
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw))
    return path


# -- benchmark -------------------------------------------------------------------------------------
def _parse(ts: str | None) -> datetime | None:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")) if ts else None


def task_table(tis: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {}
    for k, t in tis.items():
        queued, start = _parse(t.get("queued_when")), _parse(t.get("start_date"))
        out[k] = {
            "state": t["state"],
            "duration_s": round(t["duration"] or 0, 2),
            "hostname": t.get("hostname"),
            "queue_wait_s": round((start - queued).total_seconds(), 2) if queued and start else None,
        }
    return out


def bench_production(root: Path, spec_path: str, rows: int, keep: bool) -> dict[str, Any]:
    stack = ProductionStack(root, worker_concurrency=2)
    try:
        stack.start()
        spec_name = stack.install_spec(spec_path)
        stack.write_days(spec_name, INGEST_DAYS + 1, rows)
        t = time.perf_counter()
        rid = stack.trigger(
            DEMO_START, DEMO_START + timedelta(days=INGEST_DAYS), {"dataset": spec_name, "train": False}
        )
        r = stack.wait_runs([rid], 900)[rid]
        ingest_s = time.perf_counter() - t
        if r["state"] != "success":
            raise RuntimeError(f"ingest run {r['state']}:\n{stack.failure_report([rid])}")
        day = DEMO_START + timedelta(days=INGEST_DAYS)
        t = time.perf_counter()
        rid = stack.trigger(day, day + timedelta(days=1), {"dataset": spec_name, "train": True})
        r = stack.wait_runs([rid], 900)[rid]
        wall = time.perf_counter() - t
        if r["state"] != "success":
            raise RuntimeError(f"full run {r['state']}:\n{stack.failure_report([rid])}")
        tasks = task_table(stack.task_instances(rid))
        busy = sum(v["duration_s"] for v in tasks.values())
        run_s = (_parse(r["end_date"]) - _parse(r["start_date"])).total_seconds()
        result = {
            "wall_s": round(wall, 2),
            "run_s": round(run_s, 2),
            "sum_task_s": round(busy, 2),
            "between_tasks_s": round(run_s - busy, 2),
            "tasks": tasks,
            "state": r["state"],
            "ingest_8_days_run_s": round(ingest_s, 1),
            "worker_concurrency": 2,
        }
    finally:
        stack.stop()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    result["stack"] = dict(stack.timings)
    return result


def bench_embedded(root: Path, spec_path: str) -> dict[str, Any]:
    from bench.common import local_env, run_json

    root.mkdir(parents=True, exist_ok=True)
    env = local_env(root)
    # specs are found by name in MLOPS_HOME/specs: install this one there, as for the stack
    spec_name = Path(spec_path).stem
    (Path(env["MLOPS_HOME"]) / "specs").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(spec_path, Path(env["MLOPS_HOME"]) / "specs" / f"{spec_name}.yaml")
    log = root / "bench.log"
    t = time.perf_counter()
    run_json(["-m", "bench.pipeline", "--phase", "ingest", spec_name], env, log)
    ingest_s = time.perf_counter() - t
    dag = run_json(["-m", "bench.pipeline", "--phase", "dag", spec_name], env, log)
    tasks = {
        k: {"state": dag["task_state"][k].split(".")[-1].lower(), "duration_s": v} for k, v in dag["task_s"].items()
    }
    busy = sum(v["duration_s"] for v in tasks.values())
    return {
        "wall_s": dag["wall_s"],
        "sum_task_s": round(busy, 2),
        "between_tasks_s": round(dag["wall_s"] - busy, 2),
        "tasks": tasks,
        "state": dag["state"],
        "peak_rss_mb": dag["peak_rss_mb"],
        "ingest_8_days_inprocess_s": round(ingest_s, 1),
    }


def print_table(res: dict[str, Any]) -> None:
    prod, emb = res["celery_postgres"], res["embedded_sqlite"]
    order = ["extract", "validate", "prepare", "train", "evaluate", "register", "deploy"]
    print(f"\nml_training, full day run (day {INGEST_DAYS + 1}), {res['rows_per_day']} rows/day, small spec")
    print(f"{'task':<10} {'production s':>13} {'queue wait s':>13} {'worker':>10} {'embedded s':>11}")
    for k in order:
        p, e = prod["tasks"].get(k, {}), emb["tasks"].get(k, {})
        qw = p.get("queue_wait_s")
        print(
            f"{k:<10} {p.get('duration_s', float('nan')):>13.2f} {qw if qw is not None else float('nan'):>13.2f} "
            f"{str(p.get('hostname')):>10} {e.get('duration_s', float('nan')):>11.2f}"
        )
    print(f"{'sum tasks':<10} {prod['sum_task_s']:>13.2f} {'':>13} {'':>10} {emb['sum_task_s']:>11.2f}")
    print(f"{'wall':<10} {prod['wall_s']:>13.2f} {'':>13} {'':>10} {emb['wall_s']:>11.2f}")
    print(
        f"production: run start->end {prod['run_s']} s, between tasks {prod['between_tasks_s']} s; "
        f"8-day ingest run {prod['ingest_8_days_run_s']} s; stack start {prod['stack'].get('start_s')} s"
    )
    print(
        f"embedded: between tasks {emb['between_tasks_s']} s; 8 days ingested in-process in "
        f"{emb['ingest_8_days_inprocess_s']} s"
    )
    if "loadavg_1m_before_after" in prod:
        print(
            f"1-minute load average around the phases: embedded {emb['loadavg_1m_before_after']}, "
            f"production {prod['loadavg_1m_before_after']} (2 cores)"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=300, help="rows per daily batch")
    ap.add_argument("--keep", action="store_true", help="keep the working directories (logs)")
    ap.add_argument("--note", default="", help="a remark stored with the figures")
    args = ap.parse_args(argv)
    reason = services_unavailable()
    if reason:
        print(f"[bench.production] cannot run: {reason}", file=sys.stderr)
        return 2
    from bench.common import machine

    base = Path(tempfile.mkdtemp(prefix="bench-production-"))
    spec_path = str(small_spec(base / "spec" / "churn.yaml", args.rows))
    # The machine may be shared: the 1-minute load average around each phase says how much.
    load0 = os.getloadavg()[0]
    embedded = bench_embedded(base / "embedded", spec_path)
    load1 = os.getloadavg()[0]
    production = bench_production(base / "production", spec_path, args.rows, args.keep)
    load2 = os.getloadavg()[0]
    embedded["loadavg_1m_before_after"] = [round(load0, 2), round(load1, 2)]
    production["loadavg_1m_before_after"] = [round(load1, 2), round(load2, 2)]
    res = {
        "command": "PYTHONPATH=. .venv/bin/python -m bench.production"
        + (f" --rows {args.rows}" if args.rows != 300 else ""),
        "rows_per_day": args.rows,
        "ingest_days": INGEST_DAYS,
        "celery_postgres": production,
        "embedded_sqlite": embedded,
        "ratio_wall": round(production["wall_s"] / embedded["wall_s"], 2),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
    }
    if args.note:
        res["note"] = args.note
    # One top-level key, so that `python -m bench` can merge the file into bench/results.json.
    RESULTS.write_text(json.dumps({"production": res}, indent=2, sort_keys=True))
    print_table(res)
    print(f"\nwritten to {RESULTS}")
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
