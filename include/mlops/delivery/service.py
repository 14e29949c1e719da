"""The scoring service the deploy step talks to: its process (started on a free loopback port
when no running one can take the check) and the HTTP calls the rollout makes to it: readiness,
registry reloads, waiting for the versions it should serve, one metric from /metrics.

Heavy libraries (httpx, prometheus_client) are imported inside the functions."""

from __future__ import annotations

import logging
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SYNTHETIC = {"X-MLOps-Traffic": "synthetic"}  # check traffic stays out of the prediction log


# -- the service under test -----------------------------------------------------------------------
@dataclass
class ServiceHandle:
    url: str
    token: str | None = None
    proc: subprocess.Popen | None = None
    log_path: str | None = None
    started: bool = False

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def log_tail(self, n: int = 30) -> str:
        if not self.log_path or not os.path.exists(self.log_path):
            return ""
        return "\n".join(Path(self.log_path).read_text(errors="replace").splitlines()[-n:])

    def cleanup(self) -> None:
        """Remove the log of a service this module started (after `close`)."""
        if self.started and self.log_path and os.path.exists(self.log_path):
            os.unlink(self.log_path)

    def close(self) -> None:
        """Stop a service this module started (its own process only)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()  # uvicorn shuts down gracefully and flushes the prediction log
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service(
    env: dict[str, str] | None = None,
    timeout: float | None = None,
    port: int | None = None,
    until_ready: bool = True,
) -> ServiceHandle:
    """`python -m include.mlops.serving` on a free loopback port; returns once it is ready (serves
    a champion), or with `until_ready=False` once it answers at all (a service started before the
    first champion exists, as `make up` and the compose stack have it). Waits at most `timeout`
    seconds (default MLOPS_SERVICE_START_TIMEOUT), saying so while it waits."""
    from include.mlops.waits import seconds

    timeout = timeout if timeout is not None else seconds("MLOPS_SERVICE_START_TIMEOUT")
    port = port or free_port()
    token = secrets.token_urlsafe(16)
    proc, log_path = _spawn_service(_service_env(env, port, token))
    h = ServiceHandle(f"http://127.0.0.1:{port}", token, proc, log_path, started=True)
    return _await_service(h, proc, log_path, timeout, until_ready)


def _service_env(env: dict[str, str] | None, port: int, token: str) -> dict[str, str]:
    """This process's environment with `env` over it, bound to loopback:`port`, with the admin
    token and the project on PYTHONPATH."""
    from include.mlops.config import PROJECT_ROOT

    e = {**os.environ, **(env or {})}
    e.update(
        {
            "MLOPS_SERVE_HOST": "127.0.0.1",
            "MLOPS_SERVE_PORT": str(port),
            "MLOPS_ADMIN_TOKEN": token,
            "PYTHONPATH": os.pathsep.join(p for p in (str(PROJECT_ROOT), e.get("PYTHONPATH", "")) if p),
        }
    )
    e.setdefault("OMP_NUM_THREADS", "1")
    return e


def _spawn_service(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    """`python -m include.mlops.serving` with its output to a new temporary log: (process, log path)."""
    from include.mlops.config import PROJECT_ROOT

    fd, log_path = tempfile.mkstemp(prefix="mlops-serve-", suffix=".log")
    with os.fdopen(fd, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "include.mlops.serving"],
            cwd=str(PROJECT_ROOT),
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    return proc, log_path


def _await_service(
    h: ServiceHandle, proc: subprocess.Popen[bytes], log_path: str, timeout: float, until_ready: bool
) -> ServiceHandle:
    """Poll /ready until it answers 200 (or anything, without `until_ready`); close the service
    and raise if it exits, cannot load its champion, or `timeout` passes."""
    import httpx

    from include.mlops.waits import Wait

    wait = Wait(f"the scoring service at {h.url} (pid {proc.pid}) to be ready", timeout, log_hint=log_path)
    status = "no answer yet"
    # one client for the whole wait: a client per poll builds an SSL context each time (~0.1 s
    # of CPU, taken from the service that is starting on the same cores)
    with httpx.Client(timeout=10) as http:
        while not wait.expired():
            if proc.poll() is not None:
                raise RuntimeError(
                    f"scoring service exited with code {proc.returncode} during start-up (log {log_path}):\n"
                    f"{h.log_tail()}"
                )
            try:
                r = http.get(f"{h.url}/ready")
                if r.status_code == 200 or not until_ready:
                    log.info("started a scoring service at %s (pid %s) in %.1fs", h.url, proc.pid, wait.elapsed)
                    return h
                pending = (r.json().get("pending") or {}).get("champion")
                status = f"/ready answered {r.status_code}, pending {pending}"
                if pending and "no champion" not in pending:  # the champion failed to load: no use waiting
                    h.close()
                    raise RuntimeError(f"the scoring service cannot serve the champion: {pending} (log {log_path})")
            except (httpx.HTTPError, ValueError) as exc:  # still starting, or slow to answer: not a failure
                status = f"{type(exc).__name__}"
            wait.tick(status)
            time.sleep(0.5)
    h.close()
    raise RuntimeError(f"{wait.give_up(status)}\n{h.log_tail()}")


def usable_service(status_code: int, body: dict[str, Any], model_name: str) -> bool:
    """Whether a running service can take this model's check: it serves the model, or it is
    that model's service waiting for its first champion (no alias yet, or no registry read yet:
    the deploy step makes it read the registry and load the new one). Another model, or a
    champion that failed to load, needs a service of its own."""
    if body.get("model_name") != model_name:
        return False
    if status_code == 200:
        return True
    pending = str((body.get("pending") or {}).get("champion") or "")
    return body.get("champion") is None and (not pending or "no champion" in pending)


def service_for_check(model_name: str, env: dict[str, str] | None = None) -> ServiceHandle:
    """The running service (MLOPS_SERVE_URL) if it can take this model's check, else a fresh one."""

    from include.mlops.config import get_settings

    settings = get_settings()
    url = settings.serve_url
    if url:
        try:
            r = _get_patiently(url + "/ready", f"MLOPS_SERVE_URL={url} to answer /ready")
            body = r.json()
            if usable_service(r.status_code, body, model_name):
                if r.status_code != 200:
                    log.info("MLOPS_SERVE_URL=%s has no champion yet: the check loads the first one there", url)
                return ServiceHandle(url, settings.admin_token)
            log.warning(
                "MLOPS_SERVE_URL=%s is not ready for %s (%s: %s): starting a service for the check",
                url,
                model_name,
                r.status_code,
                body.get("pending"),
            )
        except Exception as exc:
            log.warning("MLOPS_SERVE_URL=%s does not answer (%s): starting a service for the check", url, exc)
    return start_service(env)


def _get_patiently(url: str, what: str, budget: float = 60.0) -> Any:
    """GET `url`, retrying timeouts (a busy machine) for up to `budget` s; a refused connection
    is an answer (nothing listens there) and raises at once."""
    import httpx

    from include.mlops.waits import Wait, seconds

    wait = Wait(what, budget)
    while True:
        try:
            return httpx.get(url, timeout=min(seconds("MLOPS_DEPLOY_REQUEST_TIMEOUT"), max(wait.left, 1.0)))
        except httpx.TimeoutException as exc:
            if wait.expired():
                raise
            wait.tick(type(exc).__name__)
            time.sleep(1)


def refresh(h: ServiceHandle, timeout: float = 120.0) -> dict[str, Any]:
    """Make the service read the registry now (admin token), or let its poll do it. A reload that
    does not answer in time is not a failure: the service's own poll follows the registry too."""
    import httpx

    if h.token:
        try:
            r = httpx.post(
                f"{h.url}/admin/reload",
                params={"wait": "true", "timeout": timeout},
                headers=h.headers(),
                timeout=timeout + 10,
            )
            if r.status_code == 200:
                return r.json()
            log.warning("POST /admin/reload answered %s: waiting for the service's own poll", r.status_code)
        except httpx.HTTPError as exc:
            log.warning("POST /admin/reload did not answer (%s): waiting for the service's own poll", exc)
    try:
        return httpx.get(f"{h.url}/ready", timeout=30).json()
    except (httpx.HTTPError, ValueError) as exc:
        return {"error": str(exc)}


def wait_for(
    h: ServiceHandle,
    *,
    champion: str | None = None,
    challenger: str | None = None,
    standby: str | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Until the service serves the expected versions (at most `timeout` s, default
    MLOPS_DEPLOY_WAIT_TIMEOUT); fails fast when it reports a load error."""
    import httpx

    from include.mlops.delivery.rollout import DeploymentCheckFailed
    from include.mlops.waits import Wait, seconds

    timeout = timeout if timeout is not None else seconds("MLOPS_DEPLOY_WAIT_TIMEOUT")
    wanted = f"champion={champion} challenger={challenger} standby={standby}"
    wait = Wait(f"the service at {h.url} to serve {wanted}", timeout, log_hint=h.log_path or "the service's own log")
    status: dict[str, Any] = {}
    refresh(h, min(timeout, 120.0))
    with httpx.Client(timeout=30) as http:
        while not wait.expired():
            status = _ready(http, h)
            ok = (
                (champion is None or (status.get("champion") or {}).get("version") == champion)
                and (challenger is None or (status.get("challenger") or {}).get("version") == challenger)
                and (standby is None or standby in (status.get("standby") or []))
            )
            if ok and status.get("status") == "ready":
                return status
            pending = " ".join(str(v) for v in (status.get("pending") or {}).values())
            for v in (champion, challenger, standby):
                if v and f"v{v}:" in pending and ("Error" in pending or "Failed" in pending or "Mismatch" in pending):
                    raise DeploymentCheckFailed(f"the service could not load v{v}: {pending}")
            wait.tick(_serving(status))
            time.sleep(0.5)
    raise DeploymentCheckFailed(str(wait.give_up(_serving(status))))


def _serving(status: dict[str, Any]) -> str:
    if "error" in status:
        return f"no answer ({status['error']})"
    return (
        f"it reports champion={(status.get('champion') or {}).get('version')}, "
        f"challenger={(status.get('challenger') or {}).get('version')}, pending={status.get('pending')}"
    )


def _ready(http: Any, h: ServiceHandle) -> dict[str, Any]:
    try:
        return http.get(f"{h.url}/ready").json()
    except Exception as exc:
        return {"error": str(exc)}


def service_metric(h: ServiceHandle, name: str, **labels: str) -> float:
    """Sum of a metric's samples (matching labels) in the service's /metrics."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for fam in text_string_to_metric_families(httpx.get(f"{h.url}/metrics", timeout=10).text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total
