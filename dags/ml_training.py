"""
### ml_training: one data interval through the whole lifecycle

`extract → validate → prepare → train → evaluate → register → deploy`, on the dataset spec
chosen by the `dataset` param (default: `MLOPS_DATASET`, `churn`).

| task | does | look here |
|---|---|---|
| extract | copies the interval's raw batch and newly arrived labels to `staging/` (overwrite) | task log |
| validate | Great Expectations suite generated from the spec; a broken batch goes to `quarantine/` and fails the run | `reports/validation/…` (extra link *Report*) |
| prepare | feature functions → Feast offline source, `apply`, interval materialised online | Feast registry |
| train | point-in-time training set from Feast, time split, budgeted CV search, MLflow run | extra link *MLflow run* |
| evaluate | holdout + per-slice metrics, champion on the same holdout, the gate table | task log, `evaluation/gate.txt` in the run |
| register | model version with lineage tags, alias `challenger` | extra link *MLflow model version* |
| deploy | gate passed → `champion` moves (old one → `previous`), smoke + load test, ledger | `ledger/…`; "not promoted: …" otherwise |

Alerts (optional Airflow connections `mlops_alerts_webhook`, Slack-compatible, and
`mlops_alerts_smtp`) go out on any task failure, on a gate rejection and on a rollback.

Set `train` to false to only ingest the interval (what a backfill of old days wants).
Every task is idempotent for its interval: re-running a day rewrites the same objects and
registers no second model.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag, task
from airflow.timetables.interval import CronDataIntervalTimetable
from mlops_airflow.notifiers import GateDecisionNotifier, TaskFailureNotifier
from mlops_airflow.operators import (
    FeastPrepareOperator,
    GXValidateOperator,
    MlflowPromoteOperator,
    MlflowRegisterOperator,
)

DEFAULT_ARGS = {
    "owner": "mlops",
    "retries": 2,
    "retry_delay": timedelta(seconds=30),
    "on_failure_callback": [TaskFailureNotifier()],
}
PARAMS = {
    "dataset": Param(None, type=["null", "string"], description="Dataset spec name; empty uses MLOPS_DATASET"),
    "train": Param(True, type="boolean", description="False ingests only (extract, validate, prepare)"),
    "window_days": Param(None, type=["null", "integer"], minimum=1, description="Training window override (days)"),
    "deploy_strategy": Param(
        None,
        type=["null", "string"],
        enum=[None, "direct", "canary", "shadow", "blue_green"],
        description="Overrides the spec's deployment strategy for this run",
    ),
}


def interval_of(context: dict) -> object:
    from include.mlops.pipeline import Interval

    return Interval(context["data_interval_start"], context["data_interval_end"])


@dag(
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 10, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params=PARAMS,
    tags=["mlops", "training"],
    doc_md=__doc__,
)
def ml_training():
    @task
    def extract(**context) -> dict:
        """Copy the interval's raw batch and arrived labels to staging/."""
        from include.mlops.pipeline import extract as run

        return run(interval_of(context), context["params"]["dataset"])

    validate = GXValidateOperator(task_id="validate", doc="GX suite from the spec; quarantine on failure.")
    prepare = FeastPrepareOperator(task_id="prepare", doc="Features to Feast; apply; materialise online.")

    @task
    def train(**context) -> dict:
        """Point-in-time training set from Feast, budgeted search, MLflow run."""
        from airflow.sdk.exceptions import AirflowSkipException
        from mlops_airflow.operators import lineage

        from include.mlops.pipeline import NotEnoughData
        from include.mlops.pipeline import train as run

        params = context["params"]
        if not params["train"]:
            raise AirflowSkipException("train=false: ingest only")
        try:
            return run(interval_of(context), lineage(context), params["dataset"], params["window_days"])
        except NotEnoughData as exc:
            raise AirflowSkipException(f"not training yet: {exc}") from exc

    @task
    def evaluate(train_out: dict, **context) -> dict:
        """Holdout and slice metrics against the champion; the gate decides."""
        from include.mlops.pipeline import evaluate as run

        return run(train_out, context["params"]["dataset"])

    register = MlflowRegisterOperator(task_id="register", doc="Model version with lineage; alias challenger.")
    deploy = MlflowPromoteOperator(
        task_id="deploy",
        doc="Promote through the gate, check, or roll back.",
        on_success_callback=[GateDecisionNotifier()],
    )

    trained = train()
    extract() >> validate >> prepare >> trained
    evaluate(trained) >> register >> deploy


ml_training()
