"""`make up` really serves, on a busy machine too: Airflow standalone lists the project's DAGs
unpaused, MLflow answers, everything listens on loopback, and SIGTERM stops every process it
started (process groups, children included)."""

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from include.mlops.delivery.service import free_port

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def up_env(home: Path) -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "MLFLOW_", "FEAST_", "MLOPS_"))}
    env = {
        **inherited,
        "MLOPS_HOME": str(home),
        "PYTHONPATH": str(ROOT),
        "AIRFLOW_PORT": str(free_port()),
        "MLFLOW_PORT": str(free_port()),
        "MLOPS_SERVE_PORT": str(free_port()),
        "EVIDENTLY_PORT": str(free_port()),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("AIRFLOW_HOME", None)
    return env


def processes_of(home: Path) -> list[int]:
    """Every live process whose environment names this MLOPS_HOME (what `up` started, and theirs)."""
    mark = f"MLOPS_HOME={home}".encode()
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            if mark in (d / "environ").read_bytes().split(b"\0") and (d / "stat").read_text().split()[2] != "Z":
                pids.append(int(d.name))
        except OSError:
            pass
    return pids


def listening(port: int) -> list[str]:
    """The local addresses listening on `port` (from /proc/net/tcp and tcp6)."""
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.rsplit(":", 1)
            if state == "0A" and int(p, 16) == port:
                out.append(addr)
    return out


def started_by(pid: int) -> list[psutil.Process]:
    """The process and every descendant: what `up` started, children included."""
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def listening_sockets(procs: list[psutil.Process]) -> dict[tuple[str, int], list[int]]:
    """(local address, port) -> pids, for every TCP socket these processes listen on: whatever
    they opened, not only the ports `up` was told to use."""
    found: dict[tuple[str, int], list[int]] = {}
    for p in procs:
        try:
            conns = p.net_connections(kind="tcp")
        except psutil.NoSuchProcess:
            continue
        for c in conns:
            if c.status == psutil.CONN_LISTEN:
                found.setdefault((c.laddr.ip, c.laddr.port), []).append(p.pid)
    return found


def is_loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    mapped = getattr(addr, "ipv4_mapped", None)
    return addr.is_loopback or bool(mapped and mapped.is_loopback)


# 127.0.0.1, ::1 and ::ffff:127.0.0.1 as /proc/net/tcp{,6} write them
LOOPBACK = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}


def test_up_check_serves_airflow_ui_with_dags(tmp_path):
    env = up_env(tmp_path)
    out = subprocess.run(
        [sys.executable, "-m", "include.mlops.local.stack", "up", "--check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"airflow", "mlflow"} <= set(result["ready"])
    dags = {d["dag_id"]: d["is_paused"] for d in result["dags"]}
    assert dags.get("ml_training") is False
    assert (tmp_path / "airflow" / "simple_auth_manager_passwords.json.generated").exists()
    assert processes_of(tmp_path) == [], "--check stops what it started"


def test_up_on_busy_cores_listens_on_loopback_and_sigterm_stops_everything(tmp_path, busy_cores):
    env = up_env(tmp_path)
    ports = {k: int(env[k]) for k in ("AIRFLOW_PORT", "MLFLOW_PORT", "MLOPS_SERVE_PORT", "EVIDENTLY_PORT")}
    log = tmp_path / "up.out"
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "include.mlops.local.stack", "up"], cwd=ROOT, env=env, stdout=fh, stderr=fh
        )
    try:
        deadline = time.monotonic() + 1200  # the stack's own deadline (MLOPS_UP_TIMEOUT) is 600 s a service
        while "serving; Ctrl-C or SIGTERM" not in log.read_text():
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(2)
        text = log.read_text()
        print(text)  # the start-up's progress lines, shown with `pytest -rP`
        for name in ("airflow", "scheduler", "dag-processor", "triggerer", "mlflow", "scoring", "evidently"):
            assert f"{name:<9} ready" in text, text[-3000:]
        assert "bound to 127.0.0.1" in text
        for name, port in ports.items():
            addrs = listening(port)
            assert addrs and set(addrs) <= LOOPBACK, (name, addrs)
        # every socket any process of the stack listens on (Airflow's log servers were on 0.0.0.0)
        assert len(processes_of(tmp_path)) >= 7
        procs = started_by(proc.pid)
        sockets = listening_sockets(procs)
        print("listening:", {f"{addr}:{port}": sorted(set(p)) for (addr, port), p in sockets.items()})
        assert set(ports.values()) <= {port for _, port in sockets}, sockets
        elsewhere = {key: pids for key, pids in sockets.items() if not is_loopback(key[0])}
        assert not elsewhere, f"listening beyond loopback: {elsewhere}"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=180)
    assert proc.returncode == 0, log.read_text()[-3000:]
    assert "SIGTERM: stopping the services" in log.read_text()
    left = processes_of(tmp_path)
    assert left == [], f"still running after SIGTERM: {left}"
    alive = [p.pid for p in procs[1:] if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert alive == [], f"started by up, still running after SIGTERM: {alive}"
