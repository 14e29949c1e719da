"""`mlops run training`: `ml_training` for one day on the embedded default, from a terminal.

The training window needs features for each of its days, so the days before the requested one
that have landed data but no features yet are ingested first (`train=false`, as a backfill
would), then the day itself runs with training. Each run is Airflow's own `dag.test()`, with the
task logs written to `$MLOPS_HOME/logs/`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any


@dataclass
class TrainingReport:
    spec: str
    day: date
    ingested: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def last(self) -> dict[str, Any]:
        return self.runs[-1] if self.runs else {}

    @property
    def succeeded(self) -> bool:
        return bool(self.runs) and all(r["state"] == "success" for r in self.runs)


def days_to_ingest(spec: Any, store: Any, day: date) -> tuple[list[date], list[date]]:
    """(days of the window before `day` with landed data and no features yet, days with no data)."""
    from include.mlops import layout

    first = day - timedelta(days=spec.training.window_days + spec.label_delay_days)
    todo, empty = [], []
    d = first
    while d < day:
        if not store.list(layout.events_landing_prefix(spec, d)):
            empty.append(d)
        elif not store.exists(layout.features_key(spec, d)):
            todo.append(d)
        d += timedelta(days=1)
    return todo, empty


class NoLandedData(ValueError):
    """The day to run has no landed events: said before Airflow starts, with the days that have some."""


def check_landed(spec: Any, store: Any, day: date) -> None:
    from include.mlops import layout

    prefix = layout.events_landing_prefix(spec, day)
    if store.list(prefix):
        return
    root = prefix.rsplit("dt=", 1)[0]
    days = sorted({m.group(1) for k in store.list(root) if (m := re.search(r"dt=(\d{4}-\d\d-\d\d)/", k))})
    have = (
        f"days with landed events: {days[0]} to {days[-1]} ({len(days)} days)" if days else "no day has landed events"
    )
    raise NoLandedData(
        f"no landed events for {spec.name} on {day}: nothing in {store.uri(prefix)}; {have}. "
        f"Land the day first (mlops ingest FILE --spec {spec.name}) or pick a day that has data"
    )


def run_training(
    spec_name: str, day: date, *, backfill: bool = True, train: bool = True, say: Callable[[str], None] = print
) -> TrainingReport:
    from include.mlops.config import PROJECT_ROOT
    from include.mlops.context import context
    from include.mlops.local.airflow_env import apply_airflow_env, migrate_db
    from include.mlops.local.day_runs import run_day as dag_test_day
    from include.mlops.storage import ensure_bucket

    ctx = context(spec_name)
    settings, spec, store = ctx.settings, ctx.spec, ctx.store
    ensure_bucket(store)
    check_landed(spec, store, day)
    report = TrainingReport(spec.name, day)
    env = apply_airflow_env(settings.home)
    say(f"airflow metadata db: {env['AIRFLOW_HOME']} (migrating if needed)")
    migrate_db(env)
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags"))
    if bag.import_errors:
        raise RuntimeError(f"DAG import errors: {bag.import_errors}")
    dag = bag.get_dag("ml_training")
    logs = settings.home / "logs"
    todo, empty = days_to_ingest(spec, store, day) if backfill else ([], [])
    report.skipped = [d.isoformat() for d in empty]

    def run_day(dag: Any, d: date, conf: dict[str, Any], log_file: Path) -> dict[str, Any]:
        offset = log_file.stat().st_size if log_file.exists() else 0  # the log is appended to: this run's part
        return {**dag_test_day(dag, d, conf, log_file), "log_offset": offset}

    for d in todo:
        r = run_day(dag, d, {"dataset": spec.name, "train": False}, logs / f"ml_training-{spec.name}-{d}.log")
        report.runs.append(r)
        say(f"  ingested {d}: {r['state']} in {r['seconds']} s (log: {r['log']})")
        if r["state"] != "success":
            return report
        report.ingested.append(d.isoformat())
    say(f"ml_training {spec.name} {day} ({'train' if train else 'ingest only'}) ...")
    r = run_day(dag, day, {"dataset": spec.name, "train": train}, logs / f"ml_training-{spec.name}-{day}.log")
    report.runs.append(r)
    return report


TASK_ORDER = ("extract", "validate", "prepare", "train", "evaluate", "register", "deploy")


def describe(report: TrainingReport, home: Path) -> list[str]:
    """What a person wants to see after the run: task states, the decision, where logs and results are."""
    from include.mlops.config import get_settings
    from include.mlops.results import EvaluateResult, PromoteResult, RegisterResult, TrainResult

    r = report.last
    ran = r.get("day", report.day.isoformat())
    lines = [f"ml_training {report.spec} {ran}: {r.get('state', 'not run')} in {r.get('seconds', 0)} s"]
    if ran != report.day.isoformat():
        lines[0] += f" (ingesting a day of the window: {report.day} did not run; fix {ran} and run again)"
    tasks = r.get("tasks") or {}
    for tid in sorted(tasks, key=lambda t: TASK_ORDER.index(t) if t in TASK_ORDER else len(TASK_ORDER)):
        lines.append(f"  {tid:<10} {tasks[tid]['state']:<16} {tasks[tid]['seconds']:>7.2f} s")
    if not tasks:
        lines.append("  no task ran: is the day before the DAGs' start date (MLOPS_START_DATE)?")
    outs = r.get("outputs") or {}
    if outs.get("train"):
        tr = TrainResult.from_xcom(outs["train"])
        lines.append(f"  MLflow run: {tr.run_id} (rows: {tr.rows})")
    ev = EvaluateResult.from_xcom(outs["evaluate"]) if outs.get("evaluate") else None
    if ev is not None and ev.metrics:
        shown = ", ".join(f"{k} {v:.4g}" for k, v in ev.metrics.items() if isinstance(v, int | float))
        lines.append(f"  holdout: {shown}")
        verdict = "passed" if ev.passed else "failed: " + "; ".join(map(str, ev.reasons))
        lines.append(f"  gate: {verdict}")
    if outs.get("register"):
        registered = RegisterResult.from_xcom(outs["register"])
        lines.append(f"  model version: {registered.model} v{registered.version}")
    if outs.get("deploy"):
        lines.append(f"  deploy: {PromoteResult.from_xcom(outs['deploy']).message}")
    if r.get("state") not in (None, "success"):
        lines += [f"  why: {line}" for line in failure_lines(r.get("log"), r.get("log_offset", 0))]
    elif (tasks.get("train") or {}).get("state") == "skipped":
        why = skip_reason(r.get("log"), r.get("log_offset", 0))
        lines.append(f"  no model: training skipped{': ' + why if why else ''}")
    if report.skipped:
        lines.append(f"  days of the window with no landed data (skipped): {', '.join(report.skipped)}")
    settings = get_settings()
    lines += [
        f"task log: {r.get('log')}",
        f"MLflow: {settings.tracking_uri}  (browse: mlflow ui --backend-store-uri {settings.tracking_uri})",
        f"object store: {settings.store_uri}  (validation reports under reports/validation/{report.spec}/)",
    ]
    return lines


ERROR_LINE = re.compile(r"^[\w.]+(Error|Exception|Exit): ")


def failure_lines(log_file: str | None, offset: int = 0, limit: int = 8) -> list[str]:
    """The last exception a task raised, as its log has it from `offset` on (the message, not the traceback)."""
    if not log_file or not Path(log_file).exists():
        return []
    with Path(log_file).open("rb") as fh:
        fh.seek(offset)
        lines = fh.read().decode(errors="replace").splitlines()
    starts = [i for i, line in enumerate(lines) if ERROR_LINE.match(line)]
    if not starts:
        return []
    i = starts[-1]
    out = [lines[i].split(": ", 1)[1]]
    for line in lines[i + 1 : i + limit]:
        if not line.strip() or re.match(r"^\d{4}-\d\d-\d\dT", line) or line.startswith(("Traceback", "The above")):
            break
        out.append(line.rstrip())
    return out


SKIP_REASON = re.compile(r"Skipping task\..*reason='(.*)'")


def skip_reason(log_file: str | None, offset: int = 0) -> str:
    """Why the train task was skipped (too few labelled rows, `--no-train`), as its log says."""
    if not log_file or not Path(log_file).exists():
        return ""
    with Path(log_file).open("rb") as fh:
        fh.seek(offset)
        found = SKIP_REASON.findall(fh.read().decode(errors="replace"))
    return found[0] if found else ""
