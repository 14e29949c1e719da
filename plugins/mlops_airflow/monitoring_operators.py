"""The monitoring operator: one window of the prediction log against the champion's reference.

Thin like the others: assigns in `__init__`, templated interval and dataset, and calls
`include.mlops.monitoring.step.monitor` in `execute` (Evidently, MLflow and pandas are imported there).
Its extra links open the drift report (logged to the window's MLflow run, shown by the MLflow UI)
and the window's MLflow run.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk.exceptions import AirflowSkipException

from mlops_airflow.links import MlflowRunLink, ReportLink
from mlops_airflow.operators import _IntervalOperator


class MonitoringOperator(_IntervalOperator):
    """Drift, prediction drift, performance and data-quality reports for the data interval."""

    ui_color = "#fff3e0"
    operator_extra_links = (ReportLink(), MlflowRunLink())

    def execute(self, context: Any) -> dict[str, Any]:
        from include.mlops.monitoring.step import monitor
        from include.mlops.registry import NoChampion

        interval = self.interval_of(context)
        self.log.info("monitoring %s for %s", self.dataset or "(default dataset)", interval.label)
        try:
            out = monitor(interval, self.dataset or None)
        except NoChampion as exc:
            raise AirflowSkipException(str(exc)) from exc
        self.log.info(
            "%d rows (%d used, seed %s); drift share %.3f; drifted %s; %d labelled; performance %s",
            out["rows"],
            out.get("rows_used", 0),
            out["sample"]["seed"],
            out["drift_share"],
            out["drifted_features"],
            out["labelled_rows"],
            out.get("performance"),
        )
        if not out["data_quality"]["passed"]:
            for f in out["data_quality"]["failures"]:
                self.log.warning("data quality: %s share %.4f", f["check"], f["share"])
        self.log.info("reports: %s", out.get("reports"))
        try:
            from mlops_airflow.reports import publish_monitoring

            out["report_url"] = publish_monitoring(out)
            self.log.info("drift report in MLflow: %s", out["report_url"] or "(none: no report for the window)")
        except Exception as exc:  # the reports are in the store; the link is a convenience
            self.log.warning("could not log the reports to MLflow: %s", exc)
        return out
