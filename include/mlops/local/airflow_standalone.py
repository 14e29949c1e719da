"""`airflow standalone` in the background for scripts and tests that need a real scheduler."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from include.mlops.config import get_timeouts
from include.mlops.delivery.service import free_port
from include.mlops.local.supervision import bin_path, http_ready, signal_group
from include.mlops.waits import Wait, WaitTimeout


def _say(msg: str) -> None:
    print(f"[airflow] {msg}", flush=True)


class AirflowStandalone:
    """`airflow standalone` (scheduler, dag-processor, api-server, triggerer) in the background,
    for scripts and tests that need a real scheduler: start, REST calls, wait for runs, stop.

    `env` is the whole environment of the process (the embedded default's from `airflow_env`);
    ports are chosen here unless given, so two of these never collide.
    """

    def __init__(self, env: dict[str, str], log: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **env,
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
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
            from include.mlops.local.airflow_env import set_paused

            set_paused(hold, True)
        t0 = time.perf_counter()
        wait = Wait(f"airflow standalone at {self.url} to answer", timeout, say=_say, log_hint=str(self.log))
        self.log.parent.mkdir(parents=True, exist_ok=True)
        fh = self.log.open("ab")
        self.proc = subprocess.Popen(
            [bin_path("airflow"), "standalone"],
            env=self.env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        status = "no answer yet"
        while not wait.expired():
            if self.proc.poll() is not None:
                raise RuntimeError(f"airflow standalone exited ({self.proc.returncode}); see {self.log}")
            if http_ready(f"{self.url}/api/v2/monitor/health"):
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
            signal_group(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
            signal_group(self.proc.pid, signal.SIGKILL)
            if self.proc.poll() is None:
                self.proc.wait(timeout=10)
