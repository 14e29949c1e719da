"""Registers the platform's extra links with Airflow (so the UI shows them on task instances)."""

from airflow.plugins_manager import AirflowPlugin
from mlops_airflow.links import MlflowModelVersionLink, MlflowRunLink, ReportLink


class MlopsPlugin(AirflowPlugin):
    name = "mlops"
    operator_extra_links = [MlflowRunLink(), MlflowModelVersionLink(), ReportLink()]
