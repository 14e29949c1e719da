"""Supervising the local stack's processes: each service started in its own process group with
its log, waited for until ready (bounded, with progress), watched while it serves, and stopped
with its children (SIGTERM to the group, then SIGKILL to what is left)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from include.mlops.waits import Wait


class Stopped(BaseException):  # not an Exception: no `except Exception` may swallow it
    """SIGTERM or SIGINT arrived: stop what was started."""


def raise_stopped(signum: int, _frame: object) -> None:
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
        return http_ready(self.ready_url, self.component)

    @property
    def where(self) -> str:
        if self.component:
            return f"heartbeat healthy at {self.ready_url}"
        return self.ready_url.rsplit("/", 1)[0]


def bin_path(name: str) -> str:
    """The path of a console script installed beside this Python (`airflow`, `mlflow`, ...)."""
    return str(Path(sys.executable).with_name(name))


def http_ready(url: str, component: str | None = None) -> bool:
    """Whether `url` answers below 500 (or, given `component`, reports that component healthy)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            if component is None:
                return r.status < 500
            return (json.loads(r.read()).get(component) or {}).get("status") == "healthy"
    except Exception:
        return False


def start(svcs: list[Service], logs: Path) -> None:
    """Start every service, each with its log `logs/<name>.log` (appended to)."""
    for svc in svcs:
        fh = (logs / f"{svc.name}.log").open("ab")
        # its own session and process group: a signal to `make up` reaches it only through
        # `stop`, which signals the whole group (the service's children included)
        svc.proc = subprocess.Popen(
            svc.cmd, env={**os.environ, **svc.env}, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )


def wait_ready(svcs: list[Service], logs: Path, timeout: float, t0: float) -> tuple[set[str], set[str]]:
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


def serve(svcs: list[Service], pending: set[str], logs: Path) -> None:
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


def stop(svcs: list[Service]) -> None:
    """SIGTERM to every started service's process group, then SIGKILL to any group still there."""
    saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for svc in svcs:
            if svc.proc:
                signal_group(svc.proc.pid, signal.SIGTERM)
        for svc in svcs:
            if svc.proc:
                try:
                    svc.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    pass
                signal_group(svc.proc.pid, signal.SIGKILL)  # children left behind by a leader that exited
                if svc.proc.poll() is None:
                    svc.proc.wait(timeout=10)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
