"""The production stack, natively: docker-compose.yaml's configuration without Docker.

`ProductionStack` runs, on this machine's PostgreSQL and Redis, Airflow 3 with the
CeleryExecutor (api-server with the execution API, scheduler, dag-processor, `airflow celery
worker`s), its metadata and Celery results in PostgreSQL, Redis as the Celery broker, the MLflow
tracking server on PostgreSQL with artifacts proxied to S3 (moto's server mode standing in for
MinIO), and Feast with its registry in PostgreSQL and its online store in Redis. Every stack gets
fresh databases (`mlops_test_<random>_{airflow,mlflow,feast}`) and two empty Redis database
numbers; `stop()` ends every process it started (process groups), drops the databases and
flushes the Redis databases.

Used by tests/integration/test_production.py and by the benchmark `python -m bench.production`.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from include.mlops.delivery.service import free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
REDIS_PREFERRED_DBS = (5, 6)  # Celery broker, Feast online store; any other empty numbers otherwise
REDIS_CLAIM_KEY = "mlops-test:claimed-by"
DEMO_START = date(2026, 10, 1)
DAG_ID = "ml_training"


# A module the workers import as [core] hostname_callable: each worker reports its own name in
# the task instances, as separate machines (compose replicas) would; on one host they all
# would otherwise report the same FQDN.
_HOSTNAME_MODULE = """import os
import socket


def hostname():
    return os.environ.get("MLOPS_WORKER_HOSTNAME") or socket.getfqdn()
"""


# -- small helpers -------------------------------------------------------------------------------
def _tcp_open(host: str, port: int, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def services_unavailable() -> str | None:
    """Why the stack cannot run here (PostgreSQL or Redis not answering), or None."""
    if not _tcp_open(PG_HOST, PG_PORT):
        return f"PostgreSQL does not answer on {PG_HOST}:{PG_PORT}"
    if not _tcp_open(REDIS_HOST, REDIS_PORT):
        return f"Redis does not answer on {REDIS_HOST}:{REDIS_PORT}"
    try:
        pg("select 1")
    except Exception as exc:
        return f"PostgreSQL on {PG_HOST}:{PG_PORT} refuses user {PG_USER} without a password: {exc}"
    try:
        import redis

        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=2).ping()
    except Exception as exc:
        return f"Redis on {REDIS_HOST}:{REDIS_PORT} does not answer PING: {exc}"
    return None


def pg(sql: str, params: tuple = (), db: str = "postgres") -> list[tuple]:
    """One statement in autocommit (CREATE/DROP DATABASE need it); rows if it returns any."""
    import psycopg2

    conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=db, connect_timeout=5)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def pg_url(db: str, driver: str = "postgresql+psycopg2") -> str:
    return f"{driver}://{PG_USER}@{PG_HOST}:{PG_PORT}/{db}"


def tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"({path}: {exc})"


def wait_until(
    check: Any,
    timeout: float,
    what: str,
    interval: float = 1.0,
    proc: subprocess.Popen | None = None,
    log: Path | None = None,
) -> float:
    """Poll `check()` until truthy; seconds taken. Fails early if `proc` exits."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        try:
            if check():
                return time.perf_counter() - t0
        except Exception:
            pass
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"{what}: process exited ({proc.returncode})" + (f"; log tail:\n{tail(log)}" if log else "")
            )
        time.sleep(interval)
    raise TimeoutError(f"{what}: not within {timeout:.0f}s" + (f"; log tail:\n{tail(log)}" if log else ""))


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of a process group, from /proc."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            # after "pid (comm)": state, ppid, pgrp, ...; comm may contain spaces and parentheses
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(d.name))
    return pids


def http_ok(url: str, timeout: float = 3.0) -> bool:
    import requests

    try:
        return requests.get(url, timeout=timeout).status_code == 200
    except requests.RequestException:
        return False


def iso(d: date | datetime) -> str:
    if not isinstance(d, datetime):
        d = datetime(d.year, d.month, d.day, tzinfo=UTC)
    return d.isoformat()


# -- processes -----------------------------------------------------------------------------------
@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path


@dataclass
class ProductionStack:
    """Start with `start()` (or `with ProductionStack(...) as stack:`), always `stop()`."""

    root: Path
    s3_endpoint: str | None = None  # a running S3 API (moto); started here when None
    bucket: str = "mlops-prod"
    worker_concurrency: int = 1
    api_workers: int = 1
    tag: str = field(default_factory=lambda: secrets.token_hex(4))
    procs: list[Proc] = field(default_factory=list)
    databases: list[str] = field(default_factory=list)
    redis_dbs: list[int] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    # More Airflow settings for every Airflow process ({"AIRFLOW__SECTION__KEY": value}), e.g. a
    # shorter task heartbeat timeout for a test that kills a worker.
    airflow_overrides: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.logs = self.root / "logs"
        self.airflow_home = self.root / "airflow"
        self.mlops_home = self.root / "mlops"
        self.hostname_dir = self.root / "hostname"
        self.password = secrets.token_urlsafe(12)
        self.api_port = free_port()
        self.mlflow_port = free_port()
        self.db = {k: f"mlops_test_{self.tag}_{k}" for k in ("airflow", "mlflow", "feast")}
        self.workers: dict[str, Proc] = {}
        self._token: str | None = None
        self._session: Any = None

    # -- urls ------------------------------------------------------------------------------------
    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def broker_db(self) -> int:
        return self.redis_dbs[0]

    @property
    def feast_redis_db(self) -> int:
        return self.redis_dbs[1]

    # -- environments ------------------------------------------------------------------------------
    def platform_env(self) -> dict[str, str]:
        """What the platform code reads (x-mlops-env of docker-compose.yaml), pointed at this stack."""
        return {
            "MLOPS_HOME": str(self.mlops_home),
            "MLOPS_STORE_URI": f"s3://{self.bucket}/store",
            "MLOPS_S3_ENDPOINT_URL": self.s3_endpoint or "",
            "MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint or "",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "MLFLOW_TRACKING_URI": self.mlflow_url,
            "MLOPS_MLFLOW_ARTIFACTS": "",  # the tracking server decides (--serve-artifacts)
            "FEAST_REGISTRY_PATH": pg_url(self.db["feast"]),
            "FEAST_ONLINE_STORE": "redis",
            "FEAST_ONLINE_PATH": f"{REDIS_HOST}:{REDIS_PORT},db={self.feast_redis_db}",
            "MLOPS_MLFLOW_UI_URL": self.mlflow_url,
            "PYTHONPATH": str(ROOT),
            "DO_NOT_TRACK": "true",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "GX_ANALYTICS_ENABLED": "false",
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }

    def airflow_env(self) -> dict[str, str]:
        """x-airflow-common's environment, with this machine's addresses and fresh secrets."""
        from cryptography.fernet import Fernet

        if not hasattr(self, "_secrets"):
            self._secrets = {
                "fernet": Fernet.generate_key().decode(),
                "api": secrets.token_urlsafe(32),
                "jwt": secrets.token_urlsafe(48),
            }
        return {
            **self.platform_env(),
            "AIRFLOW_HOME": str(self.airflow_home),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__FERNET_KEY": self._secrets["fernet"],
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
            "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.root / "auth" / "passwords.json"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": pg_url(self.db["airflow"]),
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + pg_url(self.db["airflow"]),
            "AIRFLOW__CELERY__BROKER_URL": f"redis://{REDIS_HOST}:{REDIS_PORT}/{self.broker_db}",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.worker_concurrency),
            "AIRFLOW__API__SECRET_KEY": self._secrets["api"],
            "AIRFLOW__API_AUTH__JWT_SECRET": self._secrets["jwt"],
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API__BASE_URL": self.api_url,
            "AIRFLOW__API__WORKERS": str(self.api_workers),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            # Not in compose: the runs here simulate October 2026 days with explicit intervals;
            # the cron schedule would add a run for "yesterday" (no data for it: it fails after its
            # retries, and with max_active_runs=1 it holds our runs back for minutes), and
            # ml_monitoring's. Triggered runs are scheduled as usual.
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")]),
            **self.airflow_overrides,
        }

    @staticmethod
    def _base_env() -> dict[str, str]:
        """This process's environment minus anything that configures Airflow or the platform."""
        drop = ("AIRFLOW", "MLOPS_", "MLFLOW_", "FEAST_", "AWS_", "_AIRFLOW")
        return {k: v for k, v in os.environ.items() if not k.startswith(drop)}

    @contextmanager
    def applied(self) -> Iterator[dict[str, str]]:
        """The platform environment in this process (for in-process checks), restored after."""
        saved = dict(os.environ)
        env = self.platform_env()
        os.environ.update(env)
        try:
            yield env
        finally:
            os.environ.clear()
            os.environ.update(saved)

    # -- lifecycle ---------------------------------------------------------------------------------
    def __enter__(self) -> ProductionStack:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self, timeout: float = 240.0) -> None:
        """Databases, Redis numbers, S3, MLflow, Airflow (migrated), one Celery worker; waits for
        the DAG to be parsed and unpaused. Stops what it started if anything fails."""
        t0 = time.perf_counter()
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        self.timings["start_s"] = round(time.perf_counter() - t0, 1)

    def _start(self, timeout: float) -> None:
        for d in (self.logs, self.airflow_home, self.mlops_home, self.hostname_dir, self.root / "auth"):
            d.mkdir(parents=True, exist_ok=True)
        (self.hostname_dir / "mlops_worker_hostname.py").write_text(_HOSTNAME_MODULE)
        pw = self.root / "auth" / "passwords.json"
        pw.write_text(json.dumps({"admin": self.password}))
        pw.chmod(0o600)
        for name in self.db.values():
            pg(f'CREATE DATABASE "{name}"')
            self.databases.append(name)
        self._claim_redis_dbs(2)
        if self.s3_endpoint is None:
            port = free_port()
            self._spawn("moto", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], self._base_env())
            self.s3_endpoint = f"http://127.0.0.1:{port}"
            wait_until(lambda: http_ok(self.s3_endpoint), 60, "moto_server", 0.2, self._proc("moto").popen)
        import boto3

        s3 = boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )
        try:
            s3.head_bucket(Bucket=self.bucket)
        except Exception:
            s3.create_bucket(Bucket=self.bucket)

        base = self._base_env()
        mlflow_env = {
            **base,
            "MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "DO_NOT_TRACK": "true",
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }
        t = time.perf_counter()
        mlflow = self._spawn(
            "mlflow",
            [
                str(BIN / "mlflow"),
                "server",
                "--backend-store-uri",
                pg_url(self.db["mlflow"]),
                "--artifacts-destination",
                f"s3://{self.bucket}/mlflow",
                "--serve-artifacts",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.mlflow_port),
                "--workers",
                "1",
            ],
            mlflow_env,
        )
        env = {**base, **self.airflow_env()}
        self._run("airflow-db-migrate", [str(BIN / "airflow"), "db", "migrate"], env, timeout=180)
        self.timings["db_migrate_s"] = round(time.perf_counter() - t, 1)
        self._spawn(
            "api-server", [str(BIN / "airflow"), "api-server", "--host", "127.0.0.1", "--port", str(self.api_port)], env
        )
        self._spawn("scheduler", [str(BIN / "airflow"), "scheduler"], env)
        self._spawn("dag-processor", [str(BIN / "airflow"), "dag-processor"], env)
        self.add_worker("worker-1", self.worker_concurrency, wait=False)
        wait_until(lambda: http_ok(f"{self.mlflow_url}/health"), timeout, "mlflow server", 1, mlflow.popen, mlflow.log)
        api = self._proc("api-server")
        wait_until(
            lambda: http_ok(f"{self.api_url}/api/v2/monitor/health"),
            timeout,
            "airflow api-server",
            1,
            api.popen,
            api.log,
        )
        wait_until(self._scheduler_healthy, timeout, "scheduler and dag-processor heartbeats", 1, api.popen, api.log)
        wait_until(
            self._dag_ready,
            timeout,
            f"{DAG_ID} parsed and unpaused",
            2,
            self._proc("dag-processor").popen,
            self._proc("dag-processor").log,
        )
        self.wait_worker_ready("worker-1", timeout)
        self.timings["stack_ready_s"] = round(time.perf_counter() - t, 1)

    def _claim_redis_dbs(self, n: int) -> None:
        """Empty Redis database numbers (5 and 6 when free), claimed with a marker key."""
        import random

        import redis

        r = redis.Redis(host=REDIS_HOST, port=REDIS_PORT)
        try:
            count = int(r.config_get("databases").get("databases", 16))
        except Exception:
            count = 16
        others = [i for i in range(2, count) if i not in REDIS_PREFERRED_DBS]
        random.shuffle(others)
        for db in [*REDIS_PREFERRED_DBS, *others]:
            if len(self.redis_dbs) == n:
                break
            c = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db)
            if c.dbsize() == 0 and c.set(REDIS_CLAIM_KEY, self.tag, nx=True):
                self.redis_dbs.append(db)
        if len(self.redis_dbs) < n:
            raise RuntimeError(f"fewer than {n} empty Redis databases on {REDIS_HOST}:{REDIS_PORT}")

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str], extra_env: dict[str, str] | None = None) -> Proc:
        log = self.logs / f"{name}.log"
        fh = log.open("ab")
        popen = subprocess.Popen(
            cmd,
            env={**env, **(extra_env or {})},
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=str(self.root),
            start_new_session=True,
        )
        fh.close()
        p = Proc(name, popen, log)
        self.procs.append(p)
        return p

    def _run(self, name: str, cmd: list[str], env: dict[str, str], timeout: float) -> None:
        log = self.logs / f"{name}.log"
        with log.open("ab") as fh:
            rc = subprocess.run(
                cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=str(self.root), timeout=timeout
            ).returncode
        if rc != 0:
            raise RuntimeError(f"{' '.join(cmd[-2:])} exited {rc}; log tail:\n{tail(log)}")

    def _proc(self, name: str) -> Proc:
        return next(p for p in self.procs if p.name == name)

    def add_worker(self, name: str, concurrency: int, wait: bool = True, timeout: float = 120.0) -> Proc:
        """Another `airflow celery worker` (own Celery node name, log-server port, pid file, and the
        hostname its task instances report)."""
        env = {
            **self._base_env(),
            **self.airflow_env(),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "mlops_worker_hostname.hostname",
            "MLOPS_WORKER_HOSTNAME": name,
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(self.hostname_dir)]),
        }
        proc = self._spawn(
            name,
            [
                str(BIN / "airflow"),
                "celery",
                "worker",
                "--celery-hostname",
                f"{name}@%h",
                "--concurrency",
                str(concurrency),
                "--pid",
                str(self.root / f"{name}.pid"),
            ],
            env,
        )
        self.workers[name] = proc
        if wait:
            self.wait_worker_ready(name, timeout)
        return proc

    def wait_worker_ready(self, name: str, timeout: float = 120.0) -> float:
        proc = self.workers[name]
        return wait_until(
            lambda: (
                f"{name}@" in proc.log.read_text(errors="replace") and " ready." in proc.log.read_text(errors="replace")
            ),
            timeout,
            f"celery worker {name}",
            0.5,
            proc.popen,
            proc.log,
        )

    def stop_worker(self, name: str, timeout: float = 60.0) -> None:
        """Retire a worker as `docker compose stop` would: SIGTERM to its group (Celery's warm
        shutdown lets running tasks finish), SIGKILL for whatever is left after `timeout`."""
        proc = self.workers[name].popen
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        if group_members(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)

    def kill_worker(self, name: str, timeout: float = 30.0) -> None:
        """SIGKILL a worker's whole process group (the Celery parent, its pool, the task
        supervisors and task processes, its log server): a crashed node, nothing shuts down
        cleanly. Returns once no process of the group is left."""
        proc = self.workers[name].popen
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)

        wait_until(lambda: not group_members(proc.pid), timeout, f"every process of worker {name} to end", 0.2)

    def stop(self) -> None:
        """Every process (its whole group: TERM, then KILL), the databases, the Redis numbers."""
        if self._session is not None:
            self._session.close()
        for p in reversed(self.procs):
            if p.popen.poll() is None:
                try:
                    os.killpg(p.popen.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        t0 = time.time()
        deadline = t0 + 15  # graceful first (Celery warm shutdown, uvicorn), then KILL
        killed = []
        for p in reversed(self.procs):
            try:
                p.popen.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                killed.append(p.name)
            try:  # stragglers of the group (task runners, log servers) go too
                os.killpg(p.popen.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                p.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        if self.procs:
            self.timings["stop_s"] = round(time.time() - t0, 1)
            self.timings["stop_killed"] = killed  # did not end on SIGTERM within the grace time
        for name in self.databases:
            try:
                pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except Exception as exc:
                print(f"[production stack] could not drop database {name}: {exc}", file=sys.stderr)
        self.databases.clear()
        if self.redis_dbs:
            import redis

            for db in self.redis_dbs:
                try:
                    redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db).flushdb()
                except Exception as exc:
                    print(f"[production stack] could not flush Redis db {db}: {exc}", file=sys.stderr)
            self.redis_dbs.clear()

    def log_tails(self, lines: int = 40) -> str:
        return "\n".join(f"----- {p.name} ({p.log}) -----\n{tail(p.log, lines)}" for p in self.procs)

    # -- REST --------------------------------------------------------------------------------------
    def _auth(self) -> Any:
        import requests

        if self._session is None:
            self._session = requests.Session()
        if self._token is None:
            r = self._session.post(
                f"{self.api_url}/auth/token", json={"username": "admin", "password": self.password}, timeout=30
            )
            r.raise_for_status()
            self._token = r.json()["access_token"]
            self._session.headers["Authorization"] = f"Bearer {self._token}"
        return self._session

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        s = self._auth()
        r = s.request(method, f"{self.api_url}/api/v2{path}", timeout=kwargs.pop("timeout", 30), **kwargs)
        if r.status_code == 401:  # token expired: once more with a new one
            self._token = None
            s = self._auth()
            r = s.request(method, f"{self.api_url}/api/v2{path}", timeout=30, **kwargs)
        if r.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {r.status_code} {r.text[:500]}")
        return r.json() if r.content else None

    def _scheduler_healthy(self) -> bool:
        import requests

        h = requests.get(f"{self.api_url}/api/v2/monitor/health", timeout=5).json()
        return h.get("scheduler", {}).get("status") == "healthy" and h.get("dag_processor", {}).get("status") in (
            "healthy",
            None,
        )

    def _dag_ready(self) -> bool:
        d = self.api("GET", f"/dags/{DAG_ID}")
        return d is not None and not d["is_paused"]

    def trigger(
        self, start: date | datetime, end: date | datetime, conf: dict[str, Any], run_id: str | None = None
    ) -> str:
        """A manual run with a real data interval [start, end) (logical date = start)."""
        body = {
            "dag_run_id": run_id or f"prod__{iso(start)}__{iso(end)}",
            "logical_date": iso(start),
            "data_interval_start": iso(start),
            "data_interval_end": iso(end),
            "conf": conf,
        }
        return self.api("POST", f"/dags/{DAG_ID}/dagRuns", json=body)["dag_run_id"]

    def run(self, run_id: str) -> dict[str, Any]:
        return self.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}")

    def task_instances(self, run_id: str) -> dict[str, dict[str, Any]]:
        tis = self.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")["task_instances"]
        return {t["task_id"]: t for t in tis}

    def wait_runs(self, run_ids: list[str], timeout: float) -> dict[str, dict[str, Any]]:
        """Wait until every run is finished; their final records (raises on timeout)."""
        done: dict[str, dict[str, Any]] = {}

        def check() -> bool:
            for rid in run_ids:
                if rid not in done:
                    r = self.run(rid)
                    if r["state"] in ("success", "failed"):
                        done[rid] = r
            return len(done) == len(run_ids)

        try:
            wait_until(check, timeout, f"runs {run_ids}", 1)
        except TimeoutError as exc:
            states = {rid: self.run(rid)["state"] for rid in run_ids if rid not in done}
            tis = {rid: {k: v["state"] for k, v in self.task_instances(rid).items()} for rid in states}
            raise TimeoutError(f"{exc}; unfinished: {states}; task states: {tis}") from None
        return done

    def task_log(self, run_id: str, task_id: str, lines: int = 60) -> str:
        """The tail of a task's log files (the workers and the api-server share AIRFLOW_HOME/logs)."""
        d = self.airflow_home / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}" / f"task_id={task_id}"
        files = sorted(d.glob("**/*.log")) if d.exists() else []
        return "\n".join(f"--- {f}\n{tail(f, lines)}" for f in files) or f"(no log under {d})"

    def failure_report(self, run_ids: list[str]) -> str:
        parts = []
        for rid in run_ids:
            try:
                tis = self.task_instances(rid)
            except Exception as exc:
                parts.append(f"{rid}: {exc}")
                continue
            parts.append(f"{rid}: " + json.dumps({k: v["state"] for k, v in tis.items()}))
            for k, v in tis.items():
                if v["state"] in ("failed", "upstream_failed", "up_for_retry") and v["state"] != "upstream_failed":
                    parts.append(self.task_log(rid, k))
        return "\n".join(parts) + "\n" + self.log_tails()

    # -- scoring service -----------------------------------------------------------------------------
    def start_scoring(self, spec_name: str, poll_seconds: float = 2.0) -> str:
        """`python -m include.mlops.serving` with the platform environment (compose's `scoring`
        service); it follows the registry's aliases. Returns its URL; `stop()` ends it."""
        port = free_port()
        self.scoring_token = secrets.token_urlsafe(16)
        env = {
            **self._base_env(),
            **self.platform_env(),
            "MLOPS_SERVE_HOST": "127.0.0.1",
            "MLOPS_SERVE_PORT": str(port),
            "MLOPS_SERVE_SPEC": spec_name,
            "MLOPS_DATASET": spec_name,
            "MLOPS_SERVE_POLL_SECONDS": str(poll_seconds),
            "MLOPS_ADMIN_TOKEN": self.scoring_token,
            "OMP_NUM_THREADS": "1",
        }
        self._spawn("scoring", [sys.executable, "-m", "include.mlops.serving"], env)
        self.scoring_url = f"http://127.0.0.1:{port}"
        return self.scoring_url

    # -- data ----------------------------------------------------------------------------------------
    def install_spec(self, path: str | Path) -> str:
        """Copy a spec file into the stack's spec directory (MLOPS_HOME/specs, where every process
        of the stack looks specs up by name); returns the name to pass as the `dataset` param."""
        src = Path(path)
        dest = self.mlops_home / "specs" / src.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if src.resolve() != dest.resolve():
            shutil.copyfile(src, dest)
        return dest.stem

    def write_days(self, spec_name: str, days: int, rows: int) -> None:
        """Demo batches into the stack's S3 landing zone (the same generator as everywhere)."""
        with self.applied():
            from include.mlops.data.generator import write_days
            from include.mlops.spec import load_spec
            from include.mlops.storage import get_store

            write_days(get_store(), load_spec(spec_name), DEMO_START, days, rows=rows)
