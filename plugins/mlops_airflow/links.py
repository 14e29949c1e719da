"""Extra links from task instances to MLflow: the run that trained a model and the model version."""

from __future__ import annotations

import os
from typing import Any

from airflow.sdk import BaseOperatorLink


def mlflow_ui_url() -> str:
    return os.environ.get("MLOPS_MLFLOW_UI_URL", "http://localhost:5000").rstrip("/")


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
    """The HTML report a task wrote (validation or drift), from `report_html` in its return value."""

    name = "Report"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        return str(_xcom(ti_key).get("report_html") or "")
