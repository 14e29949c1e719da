"""The environment that points Airflow at this project (embedded default: SQLite, standalone)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from include.mlops.config import PROJECT_ROOT, get_settings, get_timeouts


def bind_address() -> str:
    """The address local services listen on: MLOPS_BIND_ADDRESS, loopback unless told otherwise."""
    return get_settings().bind_address


def airflow_env(home: Path | None = None, **overrides: str) -> dict[str, str]:
    """Variables for any Airflow process of the embedded default; production sets its own.

    On a busy laptop the execution API answers a task process slowly: Airflow's 5 s timeout made
    a try fail before its first line (an empty log). MLOPS_EXECUTION_API_TIMEOUT (60 s) and 10
    retries give it time; a try that still fails then says so in its own log. An AIRFLOW_HOME in
    the environment wins over `<home>/airflow`."""
    s = get_settings()
    mlops_home = home or s.home
    airflow_home = s.airflow_home or mlops_home / "airflow"
    env = {
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(
            airflow_home / "simple_auth_manager_passwords.json.generated"
        ),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "AIRFLOW__API__HOST": s.bind_address,  # the api-server listens on 0.0.0.0 by default
        # the scheduler's health server, should anyone turn it on ([scheduler] enable_health_check)
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": s.bind_address,
        "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": f"{get_timeouts().execution_api:g}",
        "AIRFLOW__WORKERS__EXECUTION_API_RETRIES": "10",
        "PYTHONPATH": os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p),
        "MLOPS_HOME": str(mlops_home),
        "DO_NOT_TRACK": "true",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "GX_ANALYTICS_ENABLED": "false",
    }
    env.update(overrides)
    return env


def apply_airflow_env(home: Path | None = None, **overrides: str) -> dict[str, str]:
    """Set the variables in this process (before `airflow` is imported) and return them."""
    env = airflow_env(home, **overrides)
    airflow_home_set = get_settings().airflow_home is not None
    for k, v in env.items():
        if k == "AIRFLOW_HOME" and airflow_home_set:
            continue
        os.environ.setdefault(k, v) if k.startswith("AIRFLOW__CORE__SIMPLE") else os.environ.__setitem__(k, v)
    plugins = str(PROJECT_ROOT / "plugins")
    for p in (str(PROJECT_ROOT), plugins):
        if p not in sys.path:
            sys.path.insert(0, p)
    return env


def airflow_cli(env: dict[str, str], *args: str) -> None:
    """`airflow <args>` in a subprocess with `env`; its stderr is in the error if it fails."""
    airflow = Path(sys.executable).with_name("airflow")
    try:
        subprocess.run(
            [str(airflow), *args],
            env={**os.environ, **env},
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"airflow {' '.join(args)} failed: {exc.stderr.decode(errors='replace')[-2000:]}") from exc


def migrate_db(env: dict[str, str]) -> None:
    """`airflow db migrate` (idempotent; ~10 s the first time)."""
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    airflow_cli(env, "db", "migrate")


def reserialize_dags(env: dict[str, str]) -> None:
    """`airflow dags reserialize`: every DAG in the metadata DB now, so an Asset event emitted by a
    `dag.test()` run finds its consumers (`ml_retraining`) and queues them for the scheduler."""
    airflow_cli(env, "dags", "reserialize")


def pause_all_but(keep: set[str]) -> list[str]:
    """Pause every DAG in the metadata DB except `keep` (and unpause those); returns the paused ids.

    For a scheduler started on simulated days: the daily DAGs would otherwise start runs for
    today's interval, which has no data. Call after Airflow is configured (`apply_airflow_env`).
    """
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    with create_session() as session:
        ids = [d for (d,) in session.query(DagModel.dag_id).all()]
    paused = sorted(set(ids) - keep)
    set_paused(paused, True)
    set_paused(keep, False)
    return paused


def set_paused(dag_ids: Iterable[str], paused: bool) -> None:
    """Pause or unpause DAGs in the metadata DB (this process's Airflow configuration)."""
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    with create_session() as session:
        session.query(DagModel).filter(DagModel.dag_id.in_(list(dag_ids))).update(
            {DagModel.is_paused: paused}, synchronize_session=False
        )
