"""A real Airflow (`airflow standalone`: api-server, scheduler, dag-processor, triggerer; SQLite) on
the project's DAGs and plugins, for the clients people use: the official REST client and a browser.

One stack per test session, shared by tests/integration/test_rest_client.py and test_browser.py,
and stopped as soon as the last test that uses it has run (see conftest.py), so it does not load
the machine while the rest of the suite runs. Its MLOPS_HOME holds small churn data for the ten
days up to yesterday (UTC); the days before yesterday are ingested in-process while Airflow
starts, so a run triggered with `"logical_date": null` (yesterday) trains at once.

The spec's gate is strict (`roc_auc >= 0.999`): every challenger is rejected, so deploy ends in
its documented "not promoted: ..." state without a scoring service, and the runs stay short.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from include.mlops.delivery.service import free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DAYS = 10
ROWS = 300
STRICT_GATE = {"roc_auc": 0.999}


def log(msg: str) -> None:
    print(f"[airflow-stack {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _get(url: str, timeout: float = 5) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except Exception:
        return 0


@dataclass
class Stack:
    home: Path
    spec_name: str  # installed in home/specs; the DAGs take the name
    model_name: str
    day: date
    url: str
    mlflow_url: str
    password: str
    env: dict[str, str]
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    logs: Path | None = None

    # -- the official client ----------------------------------------------------------------
    def token(self) -> str:
        req = urllib.request.Request(
            f"{self.url}/auth/token",
            data=json.dumps({"username": "admin", "password": self.password}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())["access_token"]

    def client(self):
        """An `airflow_client.client.ApiClient` logged in with a token from POST /auth/token."""
        import airflow_client.client as ac

        return ac.ApiClient(ac.Configuration(host=self.url, access_token=self.token()))

    def wait_for_run(self, dag_id: str, run_id: str, deadline_s: float, until=("success", "failed")) -> dict:
        """Poll the run (official client) until its state is in `until`; prints each change (progress)."""
        import airflow_client.client as ac

        api = ac.DagRunApi(self.client())
        ti_api = ac.TaskInstanceApi(api.api_client)
        deadline = time.monotonic() + deadline_s
        seen: tuple = ()
        while True:
            run = api.get_dag_run(dag_id, run_id)
            tis = ti_api.get_task_instances(dag_id, run_id).task_instances
            now = (str(run.state.value if run.state else None), tuple(sorted((t.task_id, str(t.state)) for t in tis)))
            if now != seen:
                seen = now
                states = ", ".join(f"{t}={s.split('.')[-1].lower()}" for t, s in now[1])
                log(f"{dag_id} {run_id}: {now[0]} [{states}]")
            if now[0] in until:
                return {"run": run, "tis": {t.task_id: t for t in tis}}
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{dag_id} {run_id} not {until} after {deadline_s:.0f}s; last {seen}; see {self.logs}"
                )
            time.sleep(3)

    def task_value(self, dag_id: str, run_id: str, task_id: str) -> dict:
        """A task's return value (XCom `return_value`), through the client."""
        import airflow_client.client as ac

        entry = ac.XComApi(self.client()).get_xcom_entry(dag_id, task_id, run_id, "return_value")
        value = getattr(entry, "actual_instance", entry).value
        return json.loads(value) if isinstance(value, str) else value

    def wait_for_task(self, dag_id: str, run_id: str, task_id: str, deadline_s: float) -> str:
        import airflow_client.client as ac

        api = ac.TaskInstanceApi(self.client())
        deadline = time.monotonic() + deadline_s
        last = None
        while True:
            state = api.get_task_instance(dag_id, run_id, task_id).state
            state = str(state.value) if state is not None else None
            if state != last:
                last = state
                log(f"{dag_id} {run_id} {task_id}: {state}")
            if state in ("success", "failed", "skipped", "upstream_failed"):
                return state
            if time.monotonic() > deadline:
                raise TimeoutError(f"{dag_id}.{task_id} in {run_id} still {state} after {deadline_s:.0f}s")
            time.sleep(2)

    # -- the MLflow UI the extra links point at ------------------------------------------------
    def start_mlflow_ui(self, deadline_s: float = 180) -> str:
        if "mlflow" in self.procs:
            return self.mlflow_url
        port = self.mlflow_url.rsplit(":", 1)[1]
        cmd = [
            str(BIN / "mlflow"),
            "server",
            "--backend-store-uri",
            self.env["MLFLOW_TRACKING_URI"],
            "--default-artifact-root",
            self.env["MLOPS_MLFLOW_ARTIFACTS"],
            "--host",
            "127.0.0.1",
            "--port",
            port,
            "--workers",
            "1",
        ]
        self._spawn("mlflow", cmd)
        self._wait_ready("mlflow", f"{self.mlflow_url}/health", deadline_s)
        return self.mlflow_url

    # -- processes -----------------------------------------------------------------------------
    def _spawn(self, name: str, cmd: list[str]) -> None:
        fh = (self.logs / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            cmd, env=self.env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True, cwd=str(self.home)
        )

    def _wait_ready(self, name: str, url: str, deadline_s: float) -> None:
        t0 = time.monotonic()
        while _get(url) != 200:
            proc = self.procs[name]
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited ({proc.returncode}); see {self.logs / (name + '.log')}")
            if time.monotonic() - t0 > deadline_s:
                raise TimeoutError(f"{name} not ready at {url} after {deadline_s:.0f}s; see {self.logs}")
            time.sleep(1)
        log(f"{name} ready at {url} ({time.monotonic() - t0:.0f}s)")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for name, proc in list(self.procs.items()):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            log(f"{name} stopped")
        self.procs.clear()


def _clean_environ() -> dict[str, str]:
    """This process's environment without the test session's Airflow/MLflow/Feast/MLOps settings."""
    drop = ("AIRFLOW", "MLOPS_", "MLFLOW_", "FEAST_", "AWS_")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


def _write_spec(home: Path) -> tuple[str, object]:
    import yaml

    from include.mlops.spec import load_spec_file
    from tests.conftest import small_spec

    path = small_spec(home)  # home/specs/churn.yaml: the stack's MLOPS_HOME, found by name
    raw = yaml.safe_load(path.read_text())
    raw["gate"]["minimums"] = dict(STRICT_GATE)
    path.write_text(yaml.safe_dump(raw))
    return path.stem, load_spec_file(path)


def _ingest(home: Path, spec_name: str, spec, first: date, days: int) -> None:
    """Land DAYS days of data and ingest all but the last (extract, validate, prepare), in-process."""
    from include.mlops import pipeline as P
    from include.mlops.data.generator import write_days
    from include.mlops.storage import ensure_bucket, get_store
    from tests.conftest import day_interval, use_home

    saved = dict(os.environ)
    try:
        use_home(os.environ, home)
        store = get_store()
        ensure_bucket(store)
        write_days(store, spec, first, days, rows=ROWS)
        for i in range(days - 1):
            iv = day_interval(first + timedelta(days=i))
            P.extract(iv, spec_name)
            P.validate(iv, spec_name)
            P.prepare(iv, spec_name)
        log(f"ingested {days - 1} days from {first}")
    finally:
        os.environ.clear()
        os.environ.update(saved)


def start_stack(home: Path, deadline_s: float = 420) -> Stack:
    from include.mlops.config import embedded_env
    from include.mlops.local.airflow_env import airflow_env, migrate_db

    t0 = time.monotonic()
    (home / "logs").mkdir(parents=True, exist_ok=True)
    spec_name, spec = _write_spec(home)
    today = datetime.now(UTC).date()
    day = today - timedelta(days=1)
    first = day - timedelta(days=DAYS - 1)

    port, mlflow_port = free_port(), free_port()
    airflow_home = home / "airflow"
    airflow_home.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(16)
    pw_file = airflow_home / "passwords.json"
    pw_file.write_text(json.dumps({"admin": password}))
    url = f"http://127.0.0.1:{port}"
    env = {
        **_clean_environ(),
        **embedded_env(home),
        **airflow_env(
            home,
            AIRFLOW_HOME=str(airflow_home),
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin",
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(pw_file),
            AIRFLOW__API__PORT=str(port),
            AIRFLOW__API__HOST="127.0.0.1",
            AIRFLOW__API__BASE_URL=url,
            AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(free_port()),
            AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=str(free_port()),
            # only the runs the tests trigger: no scheduled run for yesterday next to them
            AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE="False",
            AIRFLOW__CORE__PARALLELISM="4",
            MLOPS_DATASET=spec_name,
            MLOPS_MLFLOW_UI_URL=f"http://127.0.0.1:{mlflow_port}",
            PATH=os.pathsep.join([str(BIN), os.environ.get("PATH", "")]),
        ),
    }
    stack = Stack(
        home=home,
        spec_name=spec_name,
        model_name=spec.model_name,
        day=day,
        url=url,
        mlflow_url=f"http://127.0.0.1:{mlflow_port}",
        password=password,
        env=env,
        logs=home / "logs",
    )
    log(f"home {home}; airflow {url}; data {first}..{day}")
    migrate_db(env)
    log(f"airflow db migrated ({time.monotonic() - t0:.0f}s)")
    stack._spawn("airflow", [str(BIN / "airflow"), "standalone"])
    try:
        _ingest(home, spec_name, spec, first, DAYS)
        left = max(60.0, deadline_s - (time.monotonic() - t0))
        stack._wait_ready("airflow", f"{url}/api/v2/monitor/health", left)
        _wait_for_dags(stack, {"ml_training", "ml_retraining"}, max(60.0, deadline_s - (time.monotonic() - t0)))
    except BaseException:
        stack.stop()
        raise
    log(f"stack up in {time.monotonic() - t0:.0f}s")
    return stack


def _wait_for_dags(stack: Stack, dag_ids: set[str], deadline_s: float) -> None:
    import airflow_client.client as ac

    t0 = time.monotonic()
    while True:
        try:
            dags = {d.dag_id for d in ac.DAGApi(stack.client()).get_dags(limit=100).dags}
        except Exception as exc:  # the api-server answers health before its auth is ready
            dags = set()
            last_error = exc
        else:
            last_error = None
        if dag_ids <= dags:
            log(f"DAGs listed: {sorted(dags)}")
            return
        if time.monotonic() - t0 > deadline_s:
            raise TimeoutError(f"DAGs {sorted(dag_ids - dags)} not listed after {deadline_s:.0f}s ({last_error})")
        time.sleep(2)


def trigger_training(stack: Stack, deadline_s: float = 900) -> dict:
    """`ml_training` through the official client with `logical_date: None` (the client's default)."""
    import airflow_client.client as ac

    api = ac.DagRunApi(stack.client())
    body = ac.TriggerDAGRunPostBody(logical_date=None, conf={"dataset": stack.spec_name, "train": True})
    run = api.trigger_dag_run("ml_training", body)
    log(f"triggered ml_training {run.dag_run_id} (logical_date {run.logical_date}, run_after {run.run_after})")
    done = stack.wait_for_run("ml_training", run.dag_run_id, deadline_s)
    return {"run_id": run.dag_run_id, "trigger": run, **done}
