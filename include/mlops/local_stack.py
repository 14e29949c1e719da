"""`make up`: the embedded default as services on one laptop, no Docker.

Airflow standalone (api-server + scheduler + dag-processor + triggerer, SQLite) on :8080 with
the project's DAGs unpaused, the MLflow UI on :5000, the scoring service on :8000 and the
Evidently UI on :8001. Logs go to `$MLOPS_HOME/logs/`. Ctrl-C stops everything.

    python -m include.mlops.local_stack up            # run until Ctrl-C
    python -m include.mlops.local_stack up --check    # start, wait until ready, report, stop
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from include.mlops.airflow_env import airflow_env, migrate_db
from include.mlops.config import get_settings


@dataclass
class Service:
    name: str
    cmd: list[str]
    ready_url: str
    env: dict[str, str] = field(default_factory=dict)
    optional: bool = False
    proc: subprocess.Popen | None = None


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status < 500
    except Exception:
        return False


def services(ports: dict[str, int]) -> tuple[list[Service], dict[str, str]]:
    s = get_settings()
    env = airflow_env(
        s.home,
        AIRFLOW__API__PORT=str(ports["airflow"]),
        AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{ports['airflow']}",
        MLOPS_MLFLOW_UI_URL=f"http://127.0.0.1:{ports['mlflow']}",
        MLOPS_SERVE_URL=f"http://127.0.0.1:{ports['serve']}",
        PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    )
    artifacts = s.mlflow_artifacts or f"file://{s.home / 'mlartifacts'}"
    out = [
        Service(
            "airflow",
            [_bin("airflow"), "standalone"],
            f"http://127.0.0.1:{ports['airflow']}/api/v2/monitor/health",
            env,
        ),
        Service(
            "mlflow",
            [
                _bin("mlflow"),
                "server",
                "--backend-store-uri",
                s.tracking_uri,
                "--default-artifact-root",
                artifacts,
                "--host",
                "127.0.0.1",
                "--port",
                str(ports["mlflow"]),
                "--workers",
                "1",
            ],
            f"http://127.0.0.1:{ports['mlflow']}/health",
            env,
        ),
        Service(
            "scoring",
            [sys.executable, "-m", "include.mlops.serving"],
            f"http://127.0.0.1:{ports['serve']}/health",
            {**env, "MLOPS_SERVE_PORT": str(ports["serve"])},
            optional=True,
        ),
        Service(
            "evidently",
            [
                _bin("evidently"),
                "ui",
                "--workspace",
                str(s.home / "evidently"),
                "--host",
                "127.0.0.1",
                "--port",
                str(ports["evidently"]),
            ],
            f"http://127.0.0.1:{ports['evidently']}/",
            env,
            optional=True,
        ),
    ]
    return out, env


def init_mlflow_db(tracking_uri: str, artifacts: str) -> None:
    """Create or upgrade MLflow's SQLite schema before anything opens the file. On a new home the
    MLflow server and the scoring service would otherwise both run MLflow's migrations at once;
    the one that loses the race meets a half-migrated schema (seen: the server exiting with
    alembic's `CircularDependencyError` while the service was creating the tables)."""
    if not tracking_uri.startswith("sqlite:"):
        return
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    SqlAlchemyStore(tracking_uri, artifacts).engine.dispose()


def up(check: bool, timeout: float) -> int:
    s = get_settings()
    ports = {
        "airflow": int(os.environ.get("AIRFLOW_PORT", 8080)),
        "mlflow": int(os.environ.get("MLFLOW_PORT", 5000)),
        "serve": int(os.environ.get("MLOPS_SERVE_PORT", 8000)),
        "evidently": int(os.environ.get("EVIDENTLY_PORT", 8001)),
    }
    svcs, env = services(ports)
    logs = s.home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    (s.home / "evidently").mkdir(parents=True, exist_ok=True)
    migrate_db(env)
    init_mlflow_db(s.tracking_uri, s.mlflow_artifacts or f"file://{s.home / 'mlartifacts'}")
    t0 = time.perf_counter()
    for svc in svcs:
        fh = (logs / f"{svc.name}.log").open("ab")
        svc.proc = subprocess.Popen(
            svc.cmd, env={**os.environ, **svc.env}, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )
    pending = {svc.name for svc in svcs}
    failed: set[str] = set()
    while pending and time.perf_counter() - t0 < timeout:
        for svc in svcs:
            if svc.name in pending and _ready(svc.ready_url):
                pending.discard(svc.name)
                print(
                    f"[up {time.perf_counter() - t0:5.1f}s] {svc.name:<9} ready: {svc.ready_url.rsplit('/', 1)[0]}",
                    flush=True,
                )
            elif svc.name in pending and svc.proc.poll() is not None:
                pending.discard(svc.name)
                failed.add(svc.name)
                print(f"[up] {svc.name} exited ({svc.proc.returncode}); see {logs / (svc.name + '.log')}", flush=True)
        time.sleep(1)
    pw_file = Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
    print(f"\nAirflow UI   http://127.0.0.1:{ports['airflow']}  user admin, password in {pw_file}")
    print(f"MLflow UI    http://127.0.0.1:{ports['mlflow']}")
    print(f"Scoring      http://127.0.0.1:{ports['serve']}  (POST /predict, /invocations; GET /metrics)")
    print(f"Evidently UI http://127.0.0.1:{ports['evidently']}")
    print(f"logs in {logs}")
    pending |= failed
    result = {
        "ready": sorted({s.name for s in svcs} - pending),
        "not_ready": sorted(pending),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if not check and not [n for n in pending if not next(x for x in svcs if x.name == n).optional]:
        try:
            while all(svc.proc.poll() is None for svc in svcs if not svc.optional):
                time.sleep(2)
        except KeyboardInterrupt:
            pass
    if "airflow" not in pending:
        result["dags"] = _list_dags(ports["airflow"], pw_file)
    stop(svcs)
    print(json.dumps(result))
    required = {"airflow", "mlflow"}
    return 0 if not (required & set(pending)) else 1


def _list_dags(port: int, pw_file: Path) -> list[dict]:
    """The DAGs the api-server lists, with their paused flag (proves the UI has them)."""
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            password = json.loads(pw_file.read_text())["admin"]
            req = urllib.request.Request(
                f"{base}/auth/token",
                data=json.dumps({"username": "admin", "password": password}).encode(),
                headers={"Content-Type": "application/json"},
            )
            token = json.loads(urllib.request.urlopen(req, timeout=5).read())["access_token"]
            req = urllib.request.Request(f"{base}/api/v2/dags", headers={"Authorization": f"Bearer {token}"})
            dags = json.loads(urllib.request.urlopen(req, timeout=5).read())["dags"]
            if dags:
                return [{"dag_id": d["dag_id"], "is_paused": d["is_paused"]} for d in dags]
        except Exception:
            pass
        time.sleep(2)
    return []


class AirflowStandalone:
    """`airflow standalone` (scheduler, dag-processor, api-server, triggerer) in the background,
    for scripts and tests that need a real scheduler: start, REST calls, wait for runs, stop.

    `env` is the whole environment of the process (the embedded default's from `airflow_env`);
    ports are chosen here unless given, so two of these never collide.
    """

    def __init__(self, env: dict[str, str], log: Path, port: int | None = None) -> None:
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **env,
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(_free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(_free_port()),
            # standalone starts its parts as `airflow ...` from PATH
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        }
        self.log = log
        self.proc: subprocess.Popen | None = None
        self._token: str | None = None

    def start(self, timeout: float = 240, hold: tuple[str, ...] = ()) -> float:
        """Start and wait until the API answers and a token is issued; returns the seconds taken.

        `hold`: DAGs paused until the API is up, then unpaused through it. The scheduler starts
        before the api-server, and a task it starts meanwhile fails to reach the execution API
        (a wasted try and a retry delay); runs queued for these DAGs wait instead.
        """
        if hold:
            from include.mlops.airflow_env import set_paused

            set_paused(hold, True)
        t0 = time.perf_counter()
        self.log.parent.mkdir(parents=True, exist_ok=True)
        fh = self.log.open("ab")
        self.proc = subprocess.Popen(
            [_bin("airflow"), "standalone"], env=self.env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )
        while time.perf_counter() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"airflow standalone exited ({self.proc.returncode}); see {self.log}")
            if _ready(f"{self.url}/api/v2/monitor/health"):
                try:
                    self.token()
                except Exception:
                    time.sleep(1)
                    continue
                for dag_id in hold:
                    self._call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
                return round(time.perf_counter() - t0, 1)
            time.sleep(1)
        self.stop()
        raise RuntimeError(f"airflow standalone not ready after {timeout}s; see {self.log}")

    def token(self) -> str:
        if self._token is None:
            pw_file = Path(self.env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
            password = json.loads(pw_file.read_text())["admin"]
            self._token = self._call("POST", "/auth/token", {"username": "admin", "password": password}, auth=False)[
                "access_token"
            ]
        return self._token

    def _call(self, method: str, path: str, body: dict | None = None, auth: bool = True) -> dict:
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.url}{path}", data=data, headers=headers, method=method)
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read() or b"{}")

    def api(self, path: str) -> dict:
        """GET a REST path (`/api/v2/...`) with the admin's token."""
        return self._call("GET", path)

    def runs(self, dag_id: str, run_type: str | None = None) -> list[dict]:
        out = self.api(f"/api/v2/dags/{dag_id}/dagRuns?order_by=-run_after&limit=50")["dag_runs"]
        return [r for r in out if run_type is None or r["run_type"] == run_type]

    def wait_for_run(self, dag_id: str, run_type: str | None = None, timeout: float = 900) -> dict:
        """The newest run of `dag_id` (of `run_type`) once it has finished, with its task instances."""
        deadline = time.monotonic() + timeout
        seen = None
        while time.monotonic() < deadline:
            runs = self.runs(dag_id, run_type)
            if runs:
                run = runs[0]
                if seen != (run["dag_run_id"], run["state"]):
                    seen = (run["dag_run_id"], run["state"])
                    print(f"[scheduler] {dag_id} {run['dag_run_id']} ({run['run_type']}): {run['state']}", flush=True)
                if run["state"] in ("success", "failed"):
                    tis = self.api(f"/api/v2/dags/{dag_id}/dagRuns/{run['dag_run_id']}/taskInstances")
                    run["task_instances"] = [
                        {k: ti.get(k) for k in ("task_id", "state", "duration", "start_date", "end_date", "try_number")}
                        for ti in tis["task_instances"]
                    ]
                    return run
            time.sleep(3)
        raise TimeoutError(f"no finished {run_type or ''} run of {dag_id} within {timeout}s (last: {seen})")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop(svcs: list[Service]) -> None:
    for svc in svcs:
        if svc.proc and svc.proc.poll() is None:
            os.killpg(svc.proc.pid, signal.SIGTERM)
    for svc in svcs:
        if svc.proc:
            try:
                svc.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(svc.proc.pid, signal.SIGKILL)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["up"])
    ap.add_argument("--check", action="store_true", help="start, wait until ready, list the DAGs, stop")
    ap.add_argument("--timeout", type=float, default=180)
    args = ap.parse_args()
    return up(args.check, args.timeout)


if __name__ == "__main__":
    raise SystemExit(main())
