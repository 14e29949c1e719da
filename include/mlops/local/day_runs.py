"""One `dag.test()` run of a DAG for a simulated day, with everything it prints sent to a log file;
what `make demo` and `mlops run training` run their days with."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any


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
