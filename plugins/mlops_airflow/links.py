"""Extra links from task instances to MLflow: the run that trained a model, the model version, the report.

How they reach the UI (Airflow 3): a link is computed on the worker when the task ends (from the
task's return value, below) and stored as an XCom (`_link_<class name>`); the DAG's serialized
form keeps only each link's name and XCom key, and the api-server reads that XCom for
`/api/v2/dags/{dag}/dagRuns/{run}/taskInstances/{task}/links`, which the task instance page
calls. So a link belongs to the operator class (`operator_extra_links`), never to the plugin,
and the UI shows only http(s) URLs: a `file://` or `s3://` report needs an http address
(`mlops_airflow.reports` logs it to MLflow, whose UI renders it). A TaskFlow `@task` has no links
of its own: `mlops_airflow.operators.mlflow_task` gives one the *MLflow run* link.
`MLOPS_MLFLOW_UI_URL` is read on the worker when the task ends.

`GET /api/v2/dags/{dag}/tasks/{task}` answers `extra_links: []` for every task in Airflow 3.3,
whatever the operator declares: its response model reads an attribute it never sets. The
per-task-instance endpoint above is the one to ask (the UI and tests/integration do).
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperatorLink


def mlflow_ui_url() -> str:
    """MLOPS_MLFLOW_UI_URL (config.Settings), without a trailing slash."""
    from include.mlops.config import get_settings

    return get_settings().mlflow_ui_url


def _xcom(ti_key: Any) -> dict[str, Any]:
    from airflow.sdk.execution_time.xcom import XCom

    value = XCom.get_value(ti_key=ti_key, key="return_value")
    return value if isinstance(value, dict) else {}


class MlflowRunLink(BaseOperatorLink):
    """The MLflow run behind the task's model (from the task's return value)."""

    name = "MLflow run"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        value = _xcom(ti_key)
        run_id, exp = value.get("run_id"), value.get("experiment_id")
        if not run_id:
            return ""
        return f"{mlflow_ui_url()}/#/experiments/{exp or 0}/runs/{run_id}"


class MlflowModelVersionLink(BaseOperatorLink):
    """The registered model version the task registered or promoted."""

    name = "MLflow model version"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        value = _xcom(ti_key)
        model, version = value.get("model"), value.get("version")
        if not model or not version:
            return ""
        return f"{mlflow_ui_url()}/#/models/{model}/versions/{version}"


class ReportLink(BaseOperatorLink):
    """The HTML report a task wrote (validation or drift), as `report_url` (http) in its return value."""

    name = "Report"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        url = str(_xcom(ti_key).get("report_url") or "")
        return url if url.startswith(("http://", "https://")) else ""
