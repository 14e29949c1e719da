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

    python -m include.mlops.local_stack up            # run until Ctrl-C / SIGTERM
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

from include.mlops.airflow_env import airflow_env, bind_address, migrate_db
from include.mlops.config import Settings, get_ports, get_settings, get_timeouts
from include.mlops.waits import Wait, WaitTimeout


class Stopped(BaseException):  # not an Exception: no `except Exception` may swallow it
    """SIGTERM or SIGINT arrived: stop what was started."""


def _raise_stopped(signum: int, _frame: object) -> None:
    raise Stopped(signal.Signals(signum).name)


@dataclass
class Service:
    name: str
    cmd: list[str]
    ready_url: str
    env: dict[str, str] = field(default_factory=dict)
    optional: bool = False
    proc: subprocess.Popen | None = None
    # an Airflow part with no port of its own: ready once the api-server's health endpoint
    # reports this component healthy (its heartbeat is recent)
    component: str | None = None

    def ready(self) -> bool:
        return _ready(self.ready_url, self.component)

    @property
    def where(self) -> str:
        if self.component:
            return f"heartbeat healthy at {self.ready_url}"
        return self.ready_url.rsplit("/", 1)[0]


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def _ready(url: str, component: str | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            if component is None:
                return r.status < 500
            return (json.loads(r.read()).get(component) or {}).get("status") == "healthy"
    except Exception:
        return False


def services(ports: dict[str, int]) -> tuple[list[Service], dict[str, str]]:
    """The local stack's processes in start order, and the environment they share."""
    s = get_settings()
    host = bind_address()
    env = _stack_env(s.home, host, ports)
    health = f"http://127.0.0.1:{ports['airflow']}/api/v2/monitor/health"
    airflow = _bin("airflow")
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
            [_bin("evidently"), "ui", "--workspace", str(s.home / "evidently"), "--host", host]
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
        [_bin("mlflow"), "server", "--backend-store-uri", s.tracking_uri, "--default-artifact-root", artifacts]
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
    previous = {sig: signal.signal(sig, _raise_stopped) for sig in (signal.SIGTERM, signal.SIGINT)}
    result: dict = {"ready": [], "not_ready": [], "seconds": 0.0}
    pending: set[str] = set()
    try:
        migrate_db(env)
        init_mlflow_db(s.tracking_uri, s.mlflow_artifacts or f"file://{s.home / 'mlartifacts'}")
        t0 = time.perf_counter()
        for svc in svcs:
            fh = (logs / f"{svc.name}.log").open("ab")
            # its own session and process group: a signal to `make up` reaches it only through
            # `stop`, which signals the whole group (the service's children included)
            svc.proc = subprocess.Popen(
                svc.cmd, env={**os.environ, **svc.env}, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
            )
        pending, failed = _wait_ready(svcs, logs, timeout, t0)
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
            _serve(svcs, pending, logs)
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


def _wait_ready(svcs: list[Service], logs: Path, timeout: float, t0: float) -> tuple[set[str], set[str]]:
    """Until every service is ready or has exited, or the deadline; returns (still pending, exited)."""
    pending = {svc.name for svc in svcs}
    failed: set[str] = set()
    wait = Wait("the services to be ready", timeout, say=lambda m: print(f"[up] {m}", flush=True), log_hint=str(logs))
    while pending and not wait.expired():
        for svc in svcs:
            if svc.name not in pending:
                continue
            if svc.ready():
                pending.discard(svc.name)
                print(f"[up {time.perf_counter() - t0:5.1f}s] {svc.name:<9} ready: {svc.where}", flush=True)
            elif svc.proc is not None and svc.proc.poll() is not None:
                pending.discard(svc.name)
                failed.add(svc.name)
                print(f"[up] {svc.name} exited ({svc.proc.returncode}); see {logs / (svc.name + '.log')}", flush=True)
        wait.tick("pending: " + ", ".join(sorted(pending)))
        time.sleep(1)
    for name in sorted(pending):
        print(
            f"[up] {name} not ready after {timeout:.0f}s (MLOPS_UP_TIMEOUT): left running, the ready services "
            f"keep serving; see {logs / (name + '.log')}",
            flush=True,
        )
    return pending, failed


def _serve(svcs: list[Service], pending: set[str], logs: Path) -> None:
    """Until a signal: say when a late service becomes ready, or when one exits (the others stay)."""
    exited: set[str] = set()
    while True:
        for svc in svcs:
            if svc.name in pending and svc.ready():
                pending.discard(svc.name)
                print(f"[up] {svc.name} ready (late): {svc.where}", flush=True)
            if svc.name not in exited and svc.proc is not None and svc.proc.poll() is not None:
                exited.add(svc.name)
                print(
                    f"[up] {svc.name} exited ({svc.proc.returncode}); the others keep serving; "
                    f"see {logs / (svc.name + '.log')}",
                    flush=True,
                )
        if len(exited) == len(svcs):
            print("[up] every service has exited", flush=True)
            return
        time.sleep(2)


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


def _say(msg: str) -> None:
    print(f"[airflow] {msg}", flush=True)


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

    def start(self, timeout: float | None = None, hold: tuple[str, ...] = ()) -> float:
        """Start and wait until the API answers and a token is issued; returns the seconds taken.

        `hold`: DAGs paused until the API is up, then unpaused through it. The scheduler starts
        before the api-server, and a task it starts meanwhile fails to reach the execution API
        (a wasted try and a retry delay); runs queued for these DAGs wait instead.
        """
        timeout = timeout if timeout is not None else get_timeouts().airflow_start
        if hold:
            from include.mlops.airflow_env import set_paused

            set_paused(hold, True)
        t0 = time.perf_counter()
        wait = Wait(f"airflow standalone at {self.url} to answer", timeout, say=_say, log_hint=str(self.log))
        self.log.parent.mkdir(parents=True, exist_ok=True)
        fh = self.log.open("ab")
        self.proc = subprocess.Popen(
            [_bin("airflow"), "standalone"], env=self.env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )
        status = "no answer yet"
        while not wait.expired():
            if self.proc.poll() is not None:
                raise RuntimeError(f"airflow standalone exited ({self.proc.returncode}); see {self.log}")
            if _ready(f"{self.url}/api/v2/monitor/health"):
                try:
                    self.token()
                    for dag_id in hold:
                        self._call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
                    return round(time.perf_counter() - t0, 1)
                except Exception as exc:  # slow or not quite up: try again until the deadline
                    status = f"API up, token or unpause failed ({type(exc).__name__}: {exc})"
            else:
                status = "health endpoint not answering"
            wait.tick(status)
            time.sleep(1)
        self.stop()
        raise wait.give_up(status)

    def token(self) -> str:
        if self._token is None:
            pw_file = Path(self.env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
            password = json.loads(pw_file.read_text())["admin"]
            self._token = self._call("POST", "/auth/token", {"username": "admin", "password": password}, auth=False)[
                "access_token"
            ]
        return self._token

    def _call(self, method: str, path: str, body: dict | None = None, auth: bool = True) -> dict:
        """One REST call, retried while it times out, cannot connect or answers 5xx (a busy
        api-server), for up to MLOPS_API_CALL_TIMEOUT x 3; a 4xx is an answer and raises."""
        import urllib.error

        per_call = get_timeouts().api_call
        wait = Wait(f"{method} {path} on {self.url}", per_call * 3, say=_say, log_hint=str(self.log))
        while True:
            headers = {"Content-Type": "application/json"}
            if auth:
                headers["Authorization"] = f"Bearer {self.token()}"
            data = json.dumps(body).encode() if body is not None else None
            req = urllib.request.Request(f"{self.url}{path}", data=data, headers=headers, method=method)
            try:
                with urllib.request.urlopen(req, timeout=per_call) as r:
                    return json.loads(r.read() or b"{}")
            except urllib.error.HTTPError as exc:
                if exc.code < 500 or wait.expired():
                    raise
                why = f"HTTP {exc.code}"
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                if wait.expired():
                    raise WaitTimeout(str(wait.give_up(f"{type(exc).__name__}: {exc}"))) from exc
                why = f"{type(exc).__name__}: {exc}"
            _say(f"{method} {path} did not answer ({why}): retrying ({wait.elapsed:.0f}s)")
            time.sleep(2)

    def api(self, path: str) -> dict:
        """GET a REST path (`/api/v2/...`) with the admin's token."""
        return self._call("GET", path)

    def runs(self, dag_id: str, run_type: str | None = None) -> list[dict]:
        out = self.api(f"/api/v2/dags/{dag_id}/dagRuns?order_by=-run_after&limit=50")["dag_runs"]
        return [r for r in out if run_type is None or r["run_type"] == run_type]

    def wait_for_run(self, dag_id: str, run_type: str | None = None, timeout: float | None = None) -> dict:
        """The newest run of `dag_id` (of `run_type`) once it has finished, with its task instances.

        Waits at most `timeout` s (MLOPS_AIRFLOW_RUN_TIMEOUT); a slow or failed API call is retried,
        not a failure; progress says which tasks are where."""
        timeout = timeout if timeout is not None else get_timeouts().airflow_run
        wait = Wait(f"a finished {run_type or ''} run of {dag_id}", timeout, say=_say, log_hint=str(self.log))
        seen = None
        status = "no run yet"
        while not wait.expired():
            try:
                runs = self.runs(dag_id, run_type)
            except Exception as exc:  # the api-server is busy: ask again
                status = f"API call failed ({type(exc).__name__}: {exc}); retrying"
                wait.tick(status)
                time.sleep(3)
                continue
            if runs:
                run = runs[0]
                if seen != (run["dag_run_id"], run["state"]):
                    seen = (run["dag_run_id"], run["state"])
                    print(f"[scheduler] {dag_id} {run['dag_run_id']} ({run['run_type']}): {run['state']}", flush=True)
                status = f"{run['dag_run_id']} is {run['state']}"
                try:
                    tis = self.api(f"/api/v2/dags/{dag_id}/dagRuns/{run['dag_run_id']}/taskInstances")
                except Exception as exc:
                    wait.tick(f"{status}; task list not available ({type(exc).__name__})")
                    time.sleep(3)
                    continue
                if run["state"] in ("success", "failed"):
                    run["task_instances"] = [
                        {k: ti.get(k) for k in ("task_id", "state", "duration", "start_date", "end_date", "try_number")}
                        for ti in tis["task_instances"]
                    ]
                    return run
                status += "; " + ", ".join(
                    f"{ti['task_id']}:{ti.get('state') or 'none'}"
                    + (f" (try {ti['try_number']})" if ti.get("try_number", 1) > 1 else "")
                    for ti in tis["task_instances"]
                )
            wait.tick(status)
            time.sleep(3)
        raise wait.give_up(f"{status}; task logs under {Path(self.env['AIRFLOW_HOME']) / 'logs'}")

    def stop(self) -> None:
        """SIGTERM to the process group, then SIGKILL to whatever of it is left."""
        if self.proc:
            _signal_group(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
            _signal_group(self.proc.pid, signal.SIGKILL)
            if self.proc.poll() is None:
                self.proc.wait(timeout=10)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop(svcs: list[Service]) -> None:
    """SIGTERM to every started service's process group, then SIGKILL to any group still there."""
    saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for svc in svcs:
            if svc.proc:
                _signal_group(svc.proc.pid, signal.SIGTERM)
        for svc in svcs:
            if svc.proc:
                try:
                    svc.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    pass
                _signal_group(svc.proc.pid, signal.SIGKILL)  # children left behind by a leader that exited
                if svc.proc.poll() is None:
                    svc.proc.wait(timeout=10)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


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
