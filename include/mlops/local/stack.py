"""`make up`: the embedded default as services on one laptop, no Docker.

Airflow (api-server on :8080, scheduler, dag-processor, triggerer; SQLite, LocalExecutor) with
the project's DAGs unpaused, the MLflow UI on :5000, the scoring service on :8000 and the
Evidently UI on :8001. Every listening socket is bound to MLOPS_BIND_ADDRESS (127.0.0.1 unless
told otherwise). That is why Airflow's parts are started one by one instead of through
`airflow standalone`: its scheduler and triggerer start log servers bound to every interface
(Airflow has no setting for their address). Here they run with `--skip-serve-logs`; the
api-server reads task and trigger logs from the log folder on this machine. Logs go to
`$MLOPS_HOME/logs/`. Ctrl-C or SIGTERM stops every service it started (each runs in its own
process group, children included).

Each service gets MLOPS_UP_TIMEOUT seconds (600 by default) to become ready, with a progress line
while it starts. One that is slow is reported with its log, and never takes the ready ones down.

    python -m include.mlops.local.stack up            # run until Ctrl-C / SIGTERM
    python -m include.mlops.local.stack up --check    # start, wait until ready, report, stop
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import urllib.request
from pathlib import Path

from include.mlops.config import Settings, get_ports, get_settings, get_timeouts
from include.mlops.local.airflow_env import airflow_env, bind_address, migrate_db
from include.mlops.local.supervision import Service, Stopped, bin_path, raise_stopped, serve, start, stop, wait_ready


def services(ports: dict[str, int]) -> tuple[list[Service], dict[str, str]]:
    """The local stack's processes in start order, and the environment they share."""
    s = get_settings()
    host = bind_address()
    env = _stack_env(s.home, host, ports)
    health = f"http://127.0.0.1:{ports['airflow']}/api/v2/monitor/health"
    airflow = bin_path("airflow")
    out = [
        # the api-server writes the admin's generated password file on its first start
        Service("airflow", [airflow, "api-server"], health, env),
        Service("scheduler", [airflow, "scheduler", "--skip-serve-logs"], health, env, component="scheduler"),
        Service("dag-processor", [airflow, "dag-processor"], health, env, component="dag_processor"),
        Service("triggerer", [airflow, "triggerer", "--skip-serve-logs"], health, env, component="triggerer"),
        _mlflow_service(s, host, ports["mlflow"], env),
        Service(
            "scoring",
            [sys.executable, "-m", "include.mlops.serving"],
            f"http://127.0.0.1:{ports['serve']}/health",
            {**env, "MLOPS_SERVE_HOST": host, "MLOPS_SERVE_PORT": str(ports["serve"])},
            optional=True,
        ),
        Service(
            "evidently",
            [bin_path("evidently"), "ui", "--workspace", str(s.home / "evidently"), "--host", host]
            + ["--port", str(ports["evidently"])],
            f"http://127.0.0.1:{ports['evidently']}/",
            env,
            optional=True,
        ),
    ]
    return out, env


def _stack_env(home: Path, host: str, ports: dict[str, int]) -> dict[str, str]:
    """Airflow's environment for `home`, its API on `host`, with the URLs of the stack's UIs."""
    return airflow_env(
        home,
        AIRFLOW__API__HOST=host,
        AIRFLOW__API__PORT=str(ports["airflow"]),
        AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{ports['airflow']}",
        # what `airflow standalone` would choose: tasks run as local subprocesses
        AIRFLOW__CORE__EXECUTOR="LocalExecutor",
        MLOPS_MLFLOW_UI_URL=f"http://127.0.0.1:{ports['mlflow']}",
        MLOPS_SERVE_URL=f"http://127.0.0.1:{ports['serve']}",
        PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    )


def _mlflow_service(s: Settings, host: str, port: int, env: dict[str, str]) -> Service:
    """The MLflow tracking server on the settings' store, one worker."""
    artifacts = s.mlflow_artifacts or f"file://{s.home / 'mlartifacts'}"
    return Service(
        "mlflow",
        [bin_path("mlflow"), "server", "--backend-store-uri", s.tracking_uri, "--default-artifact-root", artifacts]
        + ["--host", host, "--port", str(port), "--workers", "1"],
        f"http://127.0.0.1:{port}/health",
        env,
    )


def init_mlflow_db(tracking_uri: str, artifacts: str) -> None:
    """Create or upgrade MLflow's SQLite schema before anything opens the file. On a new home the
    MLflow server and the scoring service would otherwise both run MLflow's migrations at once;
    the one that loses the race meets a half-migrated schema (seen: the server exiting with
    alembic's `CircularDependencyError` while the service was creating the tables)."""
    if not tracking_uri.startswith("sqlite:"):
        return
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    SqlAlchemyStore(tracking_uri, artifacts).engine.dispose()


def up(check: bool, timeout: float | None = None) -> int:
    """Start every service, wait for each (bounded, with progress), then serve until a signal.

    A service that is not ready by the deadline is reported with its log and left running (it
    may still come up); the ready ones keep serving. `check`: report and stop everything."""
    timeout = timeout if timeout is not None else get_timeouts().up
    s = get_settings()
    ports = get_ports().model_dump()  # AIRFLOW_PORT, MLFLOW_PORT, MLOPS_SERVE_PORT, EVIDENTLY_PORT
    svcs, env = services(ports)
    logs = s.home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    (s.home / "evidently").mkdir(parents=True, exist_ok=True)
    previous = {sig: signal.signal(sig, raise_stopped) for sig in (signal.SIGTERM, signal.SIGINT)}
    result: dict = {"ready": [], "not_ready": [], "seconds": 0.0}
    pending: set[str] = set()
    try:
        migrate_db(env)
        init_mlflow_db(s.tracking_uri, s.mlflow_artifacts or f"file://{s.home / 'mlartifacts'}")
        t0 = time.perf_counter()
        start(svcs, logs)
        pending, failed = wait_ready(svcs, logs, timeout, t0)
        pw_file = Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
        host = bind_address()
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        print(f"\nAirflow UI   http://{shown}:{ports['airflow']}  user admin, password in {pw_file}")
        print(f"MLflow UI    http://{shown}:{ports['mlflow']}")
        print(f"Scoring      http://{shown}:{ports['serve']}  (POST /predict, /invocations; GET /metrics)")
        print(f"Evidently UI http://{shown}:{ports['evidently']}")
        print(f"logs in {logs}; bound to {host} (MLOPS_BIND_ADDRESS)", flush=True)
        result = {
            "ready": sorted({x.name for x in svcs} - pending - failed),
            "not_ready": sorted(pending | failed),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        if "airflow" not in pending | failed:
            result["dags"] = _list_dags(ports["airflow"], pw_file)
        if not check:
            print("serving; Ctrl-C or SIGTERM stops every service started here", flush=True)
            serve(svcs, pending, logs)
    except (Stopped, KeyboardInterrupt) as exc:
        print(f"\n[up] {exc or 'interrupted'}: stopping the services", flush=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        # a second signal while stopping must not leave processes behind: stop() ignores them
        stop(svcs)
    print(json.dumps(result), flush=True)
    required = {"airflow", "scheduler", "dag-processor", "triggerer", "mlflow"}
    return 0 if result["ready"] and not (required & set(result["not_ready"])) else 1


def _list_dags(port: int, pw_file: Path) -> list[dict]:
    """The DAGs the api-server lists, with their paused flag (proves the UI has them)."""
    base = f"http://127.0.0.1:{port}"
    t = get_timeouts()
    deadline, call = time.time() + t.up, t.api_call
    while time.time() < deadline:
        try:
            password = json.loads(pw_file.read_text())["admin"]
            req = urllib.request.Request(
                f"{base}/auth/token",
                data=json.dumps({"username": "admin", "password": password}).encode(),
                headers={"Content-Type": "application/json"},
            )
            token = json.loads(urllib.request.urlopen(req, timeout=call).read())["access_token"]
            req = urllib.request.Request(f"{base}/api/v2/dags", headers={"Authorization": f"Bearer {token}"})
            dags = json.loads(urllib.request.urlopen(req, timeout=call).read())["dags"]
            if dags:
                return [{"dag_id": d["dag_id"], "is_paused": d["is_paused"]} for d in dags]
        except Exception:
            pass
        time.sleep(2)
    return []


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["up"])
    ap.add_argument("--check", action="store_true", help="start, wait until ready, list the DAGs, stop")
    ap.add_argument(
        "--timeout", type=float, default=None, help="seconds for the services to be ready (MLOPS_UP_TIMEOUT, 600)"
    )
    args = ap.parse_args()
    return up(args.check, args.timeout)


if __name__ == "__main__":
    raise SystemExit(main())
