"""Every DAG file parses cleanly, cheaply, and without touching connections, Variables or heavy libraries."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DAG_FILES = sorted(p.name for p in (ROOT / "dags").glob("*.py") if not p.name.startswith("_"))
HEAVY = [
    "pandas",
    "numpy",
    "sklearn",
    "mlflow",
    "feast",
    "great_expectations",
    "evidently",
    "boto3",
    "scipy",
    "pyarrow",
    "matplotlib",
    "fastapi",
]


@pytest.fixture(scope="module")
def dagbag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


def test_no_import_errors(dagbag):
    assert not dagbag.import_errors, dagbag.import_errors
    assert "ml_training" in dagbag.dag_ids


def test_every_dag_is_documented_tagged_and_retried(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        assert dag.doc_md and len(dag.doc_md) > 100, f"{dag_id} has no documentation"
        for task in dag.tasks:
            assert task.retries >= 2, f"{dag_id}.{task.task_id} retries < 2"
            assert task.owner and task.owner != "airflow", f"{dag_id}.{task.task_id} has no owner"


def test_the_dataset_param_takes_a_spec_name_never_a_path(dagbag):
    from airflow.sdk.definitions.param import ParamValidationError

    for dag_id, dag in dagbag.dags.items():
        param = dag.params.get_param("dataset")
        assert param.resolve(None) is None and param.resolve("churn") == "churn", dag_id
        for bad in ("/etc/x.yaml", "../../specs/churn", "churn.yaml", "Churn"):
            with pytest.raises(ParamValidationError):
                param.resolve(bad)


def test_ml_training_shape(dagbag):
    dag = dagbag.get_dag("ml_training")
    chain = ["extract", "validate", "prepare", "train", "evaluate", "register", "deploy"]
    assert set(chain) <= set(dag.task_ids)
    for up, down in zip(chain, chain[1:], strict=False):
        assert down in dag.get_task(up).downstream_task_ids, f"{up} -> {down}"


PROBE = r"""
import json, sys, importlib.util, time
sys.path[:0] = [{root!r}, {plugins!r}]
import airflow.sdk  # the baseline every DAG file pays anyway
baseline = set(sys.modules)
calls = []
from airflow.sdk import Variable, Connection
def deny(name):
    def f(*a, **k):
        calls.append(name)
        raise RuntimeError(name + " at parse time")
    return f
Variable.get = deny("Variable.get")
Connection.get = deny("Connection.get")
try:
    from airflow.sdk import BaseHook
    BaseHook.get_connection = deny("BaseHook.get_connection")
except Exception:
    pass
times = {{}}
for name in {files!r}:
    t = time.perf_counter()
    spec = importlib.util.spec_from_file_location(name[:-3], {root!r} + "/dags/" + name)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    times[name] = time.perf_counter() - t
heavy = sorted(m for m in {heavy!r} if m in sys.modules and m not in baseline)
print(json.dumps({{"heavy": heavy, "calls": calls, "times": times}}))
"""


def test_parsing_is_light_and_touches_no_connections_or_variables(airflow_db):
    code = PROBE.format(root=str(ROOT), plugins=str(ROOT / "plugins"), files=DAG_FILES, heavy=HEAVY)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**airflow_db}, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["heavy"] == [], f"heavy modules imported at parse time: {result['heavy']}"
    assert result["calls"] == []
    assert set(result["times"]) == set(DAG_FILES)


def test_list_import_errors_cli_agrees(airflow_db):
    exe = Path(sys.executable).with_name("airflow")
    out = subprocess.run(
        [str(exe), "dags", "list-import-errors", "-l", "-o", "json"],
        capture_output=True,
        text=True,
        env={**airflow_db},
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
