"""
### ml_monitoring: the prediction log of one day against the champion's training data

`monitor → decide`, daily, on the dataset spec chosen by the `dataset` param (default:
`MLOPS_DATASET`, `churn`).

| task | does | look here |
|---|---|---|
| monitor | reads the window's prediction log (online and batch) and the labels that have arrived (ground truth is days late: the labelled part reaches back `label.delay_days`); Evidently reports: data drift per feature (methods and thresholds from `monitoring.drift`), prediction drift, target drift and performance on the labelled part, data quality; numbers to the MLflow experiment `<dataset>-monitoring` (one run per window) and the Evidently workspace `$MLOPS_HOME/evidently` | extra links *Report* (drift report) and *MLflow run*; `reports/monitoring/<dataset>/dt=<day>/` |
| decide | the drift policy (`monitoring.policy`): data quality, minimum rows, drift share, performance drop against the champion's holdout metric, N consecutive windows, cooldown after a retrain; prints the rule table; a data-quality failure quarantines and alerts instead of retraining | task log; `monitoring/<dataset>/decisions/dt=<day>.json` |

When the policy decides to retrain, `decide` emits an event on the Asset `x-mlops://drift/<dataset>`
(through the alias `mlops-drift`, so no event is emitted otherwise) whose `extra` holds the drift
share, the drifted features, the report URI and the window; `ml_retraining` is scheduled on it.

Alerts (webhook `mlops_alerts_webhook`, e-mail `mlops_alerts_smtp`, both optional Airflow
connections) go out on a retrain or quarantine decision and on any task failure.
Windows larger than `monitoring.sample_rows` are sampled with the recorded `monitoring.sample_seed`.
Idempotent per window: reports, the summary and the decision are overwritten, the window's MLflow
run and Evidently snapshots are replaced. Without a champion there is nothing to monitor: the run
is skipped.

The run's day: its data interval, or for a run triggered with `"logical_date": null` (the REST
default) the last complete UTC day before its `run_after`. The DAG starts at `MLOPS_START_DATE`
(ISO date, default `2020-01-01`).
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import AssetAlias, dag, task
from airflow.timetables.interval import CronDataIntervalTimetable
from mlops_airflow.dates import start_date
from mlops_airflow.monitoring_operators import MonitoringOperator
from mlops_airflow.notifiers import DriftDecisionNotifier, TaskFailureNotifier
from mlops_airflow.params import dataset_param

from include.mlops.retraining.drift_policy import DRIFT_ALIAS

DRIFT = AssetAlias(DRIFT_ALIAS)
DEFAULT_ARGS = {
    "owner": "mlops",
    "retries": 2,
    "retry_delay": timedelta(seconds=30),
    "on_failure_callback": [TaskFailureNotifier()],
}
PARAMS = {
    "dataset": dataset_param(),
}


@dag(
    description="One day of predictions and late labels against the champion: drift, performance, policy",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=start_date(),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params=PARAMS,
    tags=["mlops", "monitoring"],
    doc_md=__doc__,
)
def ml_monitoring():
    monitor = MonitoringOperator(task_id="monitor", doc="Evidently reports and history for the window.")

    @task(outlets=[DRIFT], on_success_callback=[DriftDecisionNotifier()])
    def decide(summary: dict, **context) -> dict:
        """Apply the drift policy; emit the drift Asset event only when it says retrain."""
        import logging

        from airflow.sdk import Asset

        from include.mlops.retraining.drift_policy import drift_asset_uri
        from include.mlops.retraining.drift_window import decide_window

        out = decide_window(summary, summary.get("spec") or context["params"]["dataset"])
        logging.getLogger("airflow.task").info("drift policy for %s:\n%s", out["dataset"], out["table"])
        if out["fire"]:
            context["outlet_events"][DRIFT].add(Asset(drift_asset_uri(out["dataset"])), extra=out["event_extra"])
        return out

    decide(monitor.output)


ml_monitoring()
