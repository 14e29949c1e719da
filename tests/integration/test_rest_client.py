"""The official REST client (`apache-airflow-client`, pinned to the server) against a real Airflow.

What a new user does first: log in (POST /auth/token), trigger `ml_training` the way the client
does by default (`logical_date: None`: no data interval in the run; the DAG works out the last full
UTC day before `run_after`), trigger `ml_retraining` with params, and read every task's log.
The shared stack (conftest.py, airflow_stack.py) has small data up to yesterday and a strict gate,
so both runs end in their documented state: success, with deploy "not promoted: ...".
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest

pytestmark = pytest.mark.integration

TRAINING_TASKS = ("extract", "validate", "prepare", "train", "evaluate", "register", "deploy")
RETRAINING_TASKS = ("plan", "train", "evaluate", "register", "deploy")


def _state(x) -> str:
    return str(getattr(x, "value", x)).split(".")[-1].lower()


def _log_text(api, dag_id: str, run_id: str, task_id: str, try_number: int) -> str:
    """The task's log through the client: one line per structured message (its event, then its fields)."""
    out = api.get_log(dag_id, run_id, task_id, try_number, full_content=True)
    content = getattr(out.content, "actual_instance", out.content)
    if isinstance(content, str):
        return content
    lines = []
    for m in content or []:
        extra = getattr(m, "additional_properties", None)  # structured fields, e.g. a skip's reason
        lines.append(
            f"{getattr(m, 'event', m)} {json.dumps(extra, default=str)}" if extra else str(getattr(m, "event", m))
        )
    return "\n".join(lines)


def _all_logs(stack, dag_id: str, run_id: str, tis: dict) -> dict[str, str]:
    import airflow_client.client as ac

    api = ac.TaskInstanceApi(stack.client())
    return {t: _log_text(api, dag_id, run_id, t, max(1, ti.try_number or 1)) for t, ti in tis.items()}


def test_login_is_required_and_a_token_works(airflow_stack):
    import airflow_client.client as ac

    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{airflow_stack.url}/api/v2/dags", timeout=30)
    assert err.value.code == 401
    bad = urllib.request.Request(
        f"{airflow_stack.url}/auth/token",
        data=json.dumps({"username": "admin", "password": "not-it"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(bad, timeout=30)
    assert err.value.code in (401, 403)
    dags = {d.dag_id: d for d in ac.DAGApi(airflow_stack.client()).get_dags(limit=100).dags}
    assert {"ml_training", "ml_retraining", "ml_monitoring", "ml_batch_scoring", "ml_rollback"} <= set(dags)
    for d in dags.values():
        assert d.description and len(d.description) > 20, f"{d.dag_id} has no description"


def test_training_triggered_without_logical_date_runs_yesterday(airflow_stack, training_run):
    """The client's default trigger: no logical date, no data interval; the day is the last full UTC
    day before run_after, every task succeeds on the first try, and each log says what it did."""
    run, tis = training_run["run"], training_run["tis"]
    assert training_run["trigger"].logical_date is None
    assert _state(run.state) == "success", {t: _state(ti.state) for t, ti in tis.items()}
    assert {t: _state(ti.state) for t, ti in tis.items()} == {t: "success" for t in TRAINING_TASKS}
    assert all(ti.try_number == 1 for ti in tis.values()), {t: ti.try_number for t, ti in tis.items()}
    ra = run.run_after.astimezone(UTC)
    expected_day = (datetime(ra.year, ra.month, ra.day, tzinfo=UTC) - timedelta(days=1)).date()
    assert expected_day == airflow_stack.day

    logs = _all_logs(airflow_stack, "ml_training", training_run["run_id"], tis)
    day = airflow_stack.day.isoformat()
    assert f"validating {airflow_stack.spec_name} for {day}T00:00:00+00:00" in logs["validate"]
    assert "batch valid: 300 rows" in logs["validate"]
    assert "feature service" in logs["prepare"]
    # the gate table from evaluate, and its (strict) decision carried to deploy
    assert "gate for run" in logs["evaluate"] and "minimum roc_auc" in logs["evaluate"], logs["evaluate"][-3000:]
    assert "not promoted: minimum roc_auc" in logs["deploy"], logs["deploy"][-3000:]
    for task_id, text in logs.items():
        assert "Traceback" not in text, f"{task_id}:\n{text[-3000:]}"


def test_training_links_point_at_mlflow_over_http(airflow_stack, training_run):
    """The links the task instance page shows: http URLs to the MLflow UI, for the run that trained,
    the version registered and the validation report (never file:// or s3://)."""
    import airflow_client.client as ac

    api = ac.ExtraLinksApi(airflow_stack.client())
    links = {
        t: api.get_extra_links("ml_training", training_run["run_id"], t).extra_links
        for t in ("validate", "train", "register", "deploy")
    }
    mlflow = airflow_stack.mlflow_url
    reg = airflow_stack.task_value("ml_training", training_run["run_id"], "register")
    assert set(links["register"]) == {"MLflow run", "MLflow model version"}
    version_url = f"{mlflow}/#/models/{airflow_stack.model_name}/versions/{reg['version']}"
    assert links["register"]["MLflow model version"] == links["deploy"]["MLflow model version"] == version_url
    run_link = f"{mlflow}/#/experiments/{reg['experiment_id']}/runs/{reg['run_id']}"
    assert links["train"]["MLflow run"] == links["register"]["MLflow run"] == run_link
    report = links["validate"]["Report"]
    assert report.startswith(f"{mlflow}/#/experiments/") and report.endswith("/artifacts/reports/validation.html")


def test_retraining_with_params_through_the_client(airflow_stack, training_run):
    """`ml_retraining` by hand with params: the plan follows them, a new version goes through the gate,
    which keeps the champion slot empty here ("not promoted"); every log is readable."""
    import airflow_client.client as ac

    api = ac.DagRunApi(airflow_stack.client())
    conf = {
        "window_end": airflow_stack.day.isoformat(),
        "window_days": 4,
        "data_strategy": "sliding_window",
        "deploy_strategy": "direct",
    }
    with pytest.raises(ac.ApiException) as err:  # the params' schema is enforced at the door
        api.trigger_dag_run("ml_retraining", ac.TriggerDAGRunPostBody(logical_date=None, conf={"window_days": 0}))
    assert err.value.status == 400
    run = api.trigger_dag_run("ml_retraining", ac.TriggerDAGRunPostBody(logical_date=None, conf=conf))
    done = airflow_stack.wait_for_run("ml_retraining", run.dag_run_id, 900)
    tis = done["tis"]
    assert {t: _state(ti.state) for t, ti in tis.items()} == {t: "success" for t in RETRAINING_TASKS}
    logs = _all_logs(airflow_stack, "ml_retraining", run.dag_run_id, tis)
    end = (airflow_stack.day + timedelta(days=1)).isoformat()
    assert f"(manual): sliding_window window of 4 day(s) ending {end}" in logs["plan"], logs["plan"][-2000:]
    assert "deploy strategy direct" in logs["plan"]
    assert "gate for run" in logs["evaluate"] and "minimum roc_auc" in logs["evaluate"]
    assert "not promoted: minimum roc_auc" in logs["deploy"]
    reg = airflow_stack.task_value("ml_retraining", run.dag_run_id, "register")
    first = airflow_stack.task_value("ml_training", training_run["run_id"], "register")
    assert reg["created"] and int(reg["version"]) > int(first["version"])  # a new version, not the first again
    links = ac.ExtraLinksApi(api.api_client).get_extra_links("ml_retraining", run.dag_run_id, "register").extra_links
    model = airflow_stack.model_name
    assert links["MLflow model version"] == f"{airflow_stack.mlflow_url}/#/models/{model}/versions/{reg['version']}"


def test_daily_dags_work_out_their_day_without_a_logical_date(airflow_stack):
    """`ml_monitoring` and `ml_batch_scoring` triggered the client's default way: each task works out
    yesterday from run_after (no KeyError, no retry); with no champion yet (the gate is strict),
    both are skipped, which is their documented state before the first champion."""
    import airflow_client.client as ac

    api = ac.DagRunApi(airflow_stack.client())
    runs = {
        dag_id: api.trigger_dag_run(dag_id, ac.TriggerDAGRunPostBody(logical_date=None)).dag_run_id
        for dag_id in ("ml_monitoring", "ml_batch_scoring")
    }
    day, end = airflow_stack.day.isoformat(), (airflow_stack.day + timedelta(days=1)).isoformat()
    label = f"for {day}T00:00:00+00:00/{end}T00:00:00+00:00"
    expected = {
        "ml_monitoring": ({"monitor": "skipped", "decide": "skipped"}, "monitor", "monitoring"),
        "ml_batch_scoring": ({"score": "skipped"}, "score", "scoring"),
    }
    for dag_id, run_id in runs.items():
        done = airflow_stack.wait_for_run(dag_id, run_id, 600)
        states, task_id, verb = expected[dag_id]
        assert _state(done["run"].state) == "success"
        assert {t: _state(ti.state) for t, ti in done["tis"].items()} == states
        assert done["tis"][task_id].try_number == 1
        text = _all_logs(airflow_stack, dag_id, run_id, {task_id: done["tis"][task_id]})[task_id]
        assert f"{verb} (default dataset) {label}" in text, text[-3000:]  # MLOPS_DATASET: the test spec
        assert "Skipping task." in text and "KeyError" not in text
