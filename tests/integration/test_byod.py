"""Bring your own data, end to end, as a new user does it: a CSV of a real table (shipped inside
scikit-learn), `mlops spec init`, `mlops ingest`, `mlops run training`, then the scoring service.

Each dataset runs the real `mlops` command in its own process and home: Airflow's `dag.test()`
on SQLite, GX, Feast, MLflow, the service over HTTP. Nothing is mocked.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from tests.byod_data import table, write_csv

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]

# dataset -> (window days for the test, the metric, a floor no sane model misses, classes)
CASES = {
    "cancer": (5, "roc_auc", 0.9, {"yes", "no"}),
    "wine": (9, "f1_macro", 0.7, {"barolo", "grignolino", "barbera"}),
    "diabetes": (6, "r2", 0.2, None),
}


def env_for(home: Path) -> dict[str, str]:
    from include.mlops.config import embedded_env

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLOPS_", "MLFLOW_", "FEAST_"))}
    return {
        **env,
        **embedded_env(home),
        "AIRFLOW_HOME": str(home / "airflow"),
        "PYTHONPATH": str(ROOT),
        "MLOPS_DATASET": "churn",
    }


def mlops(env: dict[str, str], cwd: Path, *args: object, timeout: float = 1800) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "include.mlops.cli", *map(str, args)]
    out = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    print(f"$ mlops {' '.join(map(str, args))}\n{out.stdout}{out.stderr[-3000:]}")
    return out


@pytest.mark.parametrize("kind", sorted(CASES))
def test_a_csv_becomes_a_serving_champion(kind, tmp_path):
    window, metric, floor, classes = CASES[kind]
    home = tmp_path / "home"
    env = env_for(home)
    csv = write_csv(kind, tmp_path)

    init = mlops(env, tmp_path, "spec", "init", csv)
    assert init.returncode == 0, init.stderr
    spec_file = tmp_path / f"{kind}.yaml"
    raw = yaml.safe_load(spec_file.read_text())
    # the review a user does: a shorter window keeps the test quick (fewer days to ingest)
    raw["training"].update(window_days=window, min_rows=100 if kind != "wine" else 60)
    raw["deployment"]["load_test"] = {"requests": 30, "concurrency": 2}
    spec_file.write_text(yaml.safe_dump(raw))
    assert mlops(env, tmp_path, "spec", "check", spec_file, "--data", csv).returncode == 0

    ingest = mlops(env, tmp_path, "ingest", csv, "--spec", spec_file)
    assert ingest.returncode == 0, ingest.stderr
    assert "next: mlops run training --spec" in ingest.stdout

    run = mlops(env, tmp_path, "run", "training", "--spec", kind, "--date", "2025-03-14")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "ml_training" in run.stdout and "success" in run.stdout
    assert "promoted v1 to champion" in run.stdout
    assert "task log:" in run.stdout and "model version: " in run.stdout
    tasks = [m[1] for m in re.finditer(r"^  (\w+) +success +[\d.]+ s$", run.stdout, re.MULTILINE)]
    assert tasks == ["extract", "validate", "prepare", "train", "evaluate", "register", "deploy"], run.stdout

    from mlflow import MlflowClient

    client = MlflowClient(env["MLFLOW_TRACKING_URI"], env["MLFLOW_TRACKING_URI"])
    champion = client.get_model_version_by_alias(f"{kind}_model", "champion")
    assert str(champion.version) == "1"
    holdout = client.get_run(champion.run_id).data.metrics
    assert holdout[f"holdout_{metric}"] >= floor, holdout

    from include.mlops.delivery.service import start_service

    service = start_service({**env, "MLOPS_SERVE_SPEC": kind})
    try:
        rows = table(kind).drop(columns=["outcome"]).head(5)
        rows = rows.rename(columns=raw["source"].get("rename", {}))
        records = yaml.safe_load(rows.to_json(orient="records"))
        r = httpx.post(f"{service.url}/predict", json={"records": records}, timeout=60)
        assert r.status_code == 200, r.text
        preds = r.json()["predictions"]
        assert len(preds) == 5 and all(p["model_version"] == "1" for p in preds)
        if classes is None:
            assert all(isinstance(p["score"], float) for p in preds)
        else:
            assert all(str(p["prediction"]) in classes for p in preds), preds
            assert all(set(p["probabilities"]) == classes for p in preds), preds
    finally:
        service.close()
