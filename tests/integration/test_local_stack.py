"""`make up` really serves: Airflow standalone lists the project's DAGs unpaused, MLflow answers."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_up_check_serves_airflow_ui_with_dags(tmp_path):
    env = {
        **os.environ,
        "MLOPS_HOME": str(tmp_path),
        "PYTHONPATH": str(ROOT),
        "AIRFLOW_PORT": str(free_port()),
        "MLFLOW_PORT": str(free_port()),
        "MLOPS_SERVE_PORT": str(free_port()),
        "EVIDENTLY_PORT": str(free_port()),
    }
    env.pop("AIRFLOW_HOME", None)
    env = {k: v for k, v in env.items() if not k.startswith(("AIRFLOW__", "MLFLOW_", "FEAST_", "MLOPS_STORE"))}
    out = subprocess.run(
        [sys.executable, "-m", "include.mlops.local_stack", "up", "--check", "--timeout", "240"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"airflow", "mlflow"} <= set(result["ready"])
    dags = {d["dag_id"]: d["is_paused"] for d in result["dags"]}
    assert dags.get("ml_training") is False
    assert (tmp_path / "airflow" / "simple_auth_manager_passwords.json.generated").exists()
