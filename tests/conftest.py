"""Shared fixtures: an isolated MLOPS_HOME per test session, and a small trained lifecycle.

Nothing is mocked: the fixtures run the real pipeline steps (GX, Feast, MLflow) on small data.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "plugins"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

# Airflow reads its configuration (AIRFLOW_HOME, the DAGs folder) when first imported, whichever
# test imports it first: give the whole session its own home and point it at the project now.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="airflow-test-"))
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(ROOT / "dags"))
os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(ROOT / "plugins"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

DEMO_START = date(2026, 10, 1)


def small_spec(where: Path, name: str = "churn", **model_search) -> Path:
    """The shipped spec with a tiny search budget, installed where the steps find it by name.

    `where` is a home (the spec goes to `where/specs/<name>.yaml`, found once MLOPS_HOME is that
    home) or a spec directory itself (a folder named `specs`, or one listed in MLOPS_SPEC_DIRS).
    Steps take the name (`path.stem`), never the path."""
    import yaml

    raw = yaml.safe_load((ROOT / "include" / "specs" / f"{name}.yaml").read_text())
    raw["model"]["search"].update({"n_iter": 2, "cv_folds": 2, "budget_seconds": 30, **model_search})
    raw["training"]["window_days"] = 6
    raw["training"]["min_rows"] = 200
    raw["gate"]["minimums"] = {k: round(v * 0.8, 3) for k, v in raw["gate"]["minimums"].items()}
    raw["deployment"]["load_test"] = {"requests": 60, "concurrency": 4}
    spec_dir = where if where.name == "specs" else where / "specs"
    spec_dir.mkdir(parents=True, exist_ok=True)
    path = spec_dir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def write_spec(where: Path, raw: dict[str, Any]) -> Path:
    """Install a spec mapping as `<spec dir>/<raw['name']>.yaml` (`where` as for small_spec)."""
    import yaml

    spec_dir = where if where.name == "specs" else where / "specs"
    spec_dir.mkdir(parents=True, exist_ok=True)
    path = spec_dir / f"{raw['name']}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def day_interval(day: date):
    from include.mlops.pipeline import Interval

    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return Interval(start, start + timedelta(days=1))


def use_home(monkeypatch_or_env, home: Path, **extra: str) -> None:
    """The embedded default's variables for `home` (plus `extra`), on a monkeypatch or a mapping."""
    from include.mlops.config import embedded_env

    env = {**embedded_env(home), **extra}
    for k, v in env.items():
        monkeypatch_or_env.setenv(k, v) if hasattr(monkeypatch_or_env, "setenv") else os.environ.__setitem__(k, v)


@pytest.fixture(scope="session")
def lifecycle(tmp_path_factory):
    """A home with 10 ingested days of churn data (400 rows/day) and a promoted champion.

    Returns a dict: home, spec_path (installed as home/specs/churn.yaml), spec_name, env, the
    interval of the champion's run, the step outputs.
    """
    from dataclasses import replace

    from include.mlops import pipeline as P
    from include.mlops.data.generator import write_days
    from include.mlops.spec import load_spec
    from include.mlops.storage import ObjectStore, ensure_bucket

    home = tmp_path_factory.mktemp("lifecycle")
    saved = dict(os.environ)
    use_home(os.environ, home)
    spec_path = small_spec(home)
    name = spec_path.stem
    spec = load_spec(name)
    store = ObjectStore(f"file://{home / 'store'}")
    ensure_bucket(store)
    write_days(store, spec, DEMO_START, 10, rows=400)
    outs = {}
    for i in range(10):
        iv = day_interval(DEMO_START + timedelta(days=i))
        P.extract(iv, name)
        outs["validate"] = P.validate(iv, name)
        P.prepare(iv, name)
    lineage = {"dag_id": "fixture", "run_id": "fixture"}
    iv = day_interval(DEMO_START + timedelta(days=9))
    tr = P.train(iv, lineage, name)
    ev = P.evaluate(tr, name)
    ev_forced = replace(ev, passed=True, reasons=[])  # the fixture needs a champion whatever the gate says
    rg = P.register(tr, ev_forced, outs["validate"], lineage, iv, name)
    pr = P.promote(rg, ev_forced, "fixture", "fixture", spec_name=name)
    env = {k: os.environ[k] for k in os.environ if k.startswith(("MLOPS_", "MLFLOW_", "FEAST_"))}
    os.environ.clear()
    os.environ.update(saved)
    return {
        "home": home,
        "spec_path": spec_path,
        "spec_name": name,
        "spec": spec,
        "env": env,
        "interval": iv,
        "train": tr,
        "evaluate": ev,
        "register": rg,
        "promote": pr,
    }


@pytest.fixture
def lifecycle_env(lifecycle, monkeypatch):
    """Point the environment at the session's lifecycle home for one test."""
    for k, v in lifecycle["env"].items():
        monkeypatch.setenv(k, v)
    return lifecycle


@contextlib.contextmanager
def demo_home(home: Path, spec_path: Path, days: int, rows: int) -> Iterator[tuple[str, Any, Any]]:
    """The environment pointed at `home` with `days` demo days landed from DEMO_START; yields
    (spec name, spec, store) and restores the environment on exit. `spec_path` is an installed
    spec (see small_spec): the steps take its name."""
    from include.mlops.data.generator import write_days
    from include.mlops.spec import load_spec
    from include.mlops.storage import ensure_bucket, get_store

    mp = pytest.MonkeyPatch()
    use_home(mp, home)
    try:
        spec = load_spec(spec_path.stem)
        store = get_store()
        ensure_bucket(store)
        write_days(store, spec, DEMO_START, days, rows=rows)
        yield spec.name, spec, store
    finally:
        mp.undo()


def ti_state(ti) -> str:
    """A task instance's state as a plain word ("success", "failed", "skipped")."""
    return str(ti.state).split(".")[-1].lower()


@pytest.fixture(scope="session")
def moto_server():
    """A real S3 API on loopback (moto's server mode), in its own process."""
    import subprocess
    import time
    import urllib.request

    from include.mlops.delivery.service import free_port

    port = free_port()
    exe = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(url, timeout=1)
            break
        except Exception:
            time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError("moto_server did not start")
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def s3_env(endpoint: str, bucket: str) -> dict[str, str]:
    return {
        "MLOPS_STORE_URI": f"s3://{bucket}/store",
        "MLOPS_S3_ENDPOINT_URL": endpoint,
        "MLFLOW_S3_ENDPOINT_URL": endpoint,
        "MLOPS_MLFLOW_ARTIFACTS": f"s3://{bucket}/mlflow",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


@pytest.fixture(scope="session")
def airflow_db():
    """The session's Airflow metadata DB (SQLite in AIRFLOW_HOME), migrated once."""
    from include.mlops.local.airflow_env import apply_airflow_env, migrate_db

    env = apply_airflow_env(Path(tempfile.mkdtemp(prefix="mlops-test-home-")))
    migrate_db(env)
    return env


@pytest.fixture(scope="session")
def training_dag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert not bag.import_errors, bag.import_errors
    return bag.get_dag("ml_training")


def run_dag_day(dag, day: date, **conf):
    """`dag.test()` for the day-long interval starting at `day` (logical date = interval end)."""
    logical = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
    run = dag.test(logical_date=logical, run_conf=conf)
    assert run.data_interval_start.date() == day, (run.data_interval_start, day)
    return run, {ti.task_id: ti for ti in run.get_task_instances()}


BUSY_SECONDS = 900  # a busy loop ends by itself after this, even if a test run is killed


@pytest.fixture
def busy_cores():
    """Every core kept busy while the test runs: one spinning process per core (2 here), each
    ending by itself after BUSY_SECONDS and killed at teardown. What a user's loaded laptop does
    to the platform; a test that uses it must still pass."""
    import subprocess

    n = os.cpu_count() or 2
    code = f"import time\nend = time.monotonic() + {BUSY_SECONDS}\nwhile time.monotonic() < end:\n    pass\n"
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(n)]
    try:
        yield {"processes": n, "pids": [p.pid for p in procs]}
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait(timeout=30)


@pytest.fixture
def keep_mlflow_uris() -> Iterator[None]:
    """For tests that point MLflow's process-wide tracking and registry URIs at their own home
    (setup_mlflow, mlflow_client): the URIs are put back for the tests that follow."""
    import mlflow

    saved = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    yield
    mlflow.set_tracking_uri(saved[0])
    mlflow.set_registry_uri(saved[1])
