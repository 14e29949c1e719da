"""
### ml_training: one data interval through the whole lifecycle

`extract → validate → prepare → train → evaluate → register → deploy`, on the dataset spec
chosen by the `dataset` param (default: `MLOPS_DATASET`, `churn`).

| task | does | look here |
|---|---|---|
| extract | stages every landed file of the interval (parquet or CSV) and newly arrived labels to `staging/` (overwrite); an unreadable file goes to `quarantine/`, and it or a day without data fails the run | task log |
| validate | Great Expectations suite generated from the spec; a broken batch goes to `quarantine/` and fails the run | `reports/validation/…`; extra link *Report* (shown by the MLflow UI, experiment `<dataset>-validation`) |
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

**Which day.** A scheduled run, a backfill or a trigger with a `logical_date` processes its data
interval. A run triggered without one (`"logical_date": null`, the Airflow 3 REST default and
what apache-airflow-client sends) processes the last complete UTC day before its `run_after`.
The DAGs start at `MLOPS_START_DATE` (an ISO date, default `2020-01-01`): a run for an earlier
day would run no task, so set it no later than your oldest data.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, dag, task
from airflow.timetables.interval import CronDataIntervalTimetable
from mlops_airflow.dates import start_date
from mlops_airflow.notifiers import GateDecisionNotifier, TaskFailureNotifier
from mlops_airflow.operators import (
    FeastPrepareOperator,
    GXValidateOperator,
    MlflowPromoteOperator,
    MlflowRegisterOperator,
    mlflow_task,
)
from mlops_airflow.params import dataset_param

from include.mlops.constants import STRATEGIES

DEFAULT_ARGS = {
    "owner": "mlops",
    "retries": 2,
    "retry_delay": timedelta(seconds=30),
    "on_failure_callback": [TaskFailureNotifier()],
}
PARAMS = {
    "dataset": dataset_param(),
    "train": Param(True, type="boolean", description="False ingests only (extract, validate, prepare)"),
    "window_days": Param(None, type=["null", "integer"], minimum=1, description="Training window override (days)"),
    "deploy_strategy": Param(
        None,
        type=["null", "string"],
        enum=[None, *STRATEGIES],
        values_display={"null": "the spec's strategy", **{s: s for s in STRATEGIES}},
        description="Overrides the spec's deployment strategy for this run",
    ),
}


def interval_of(context: dict) -> object:
    """The run's data interval; without a logical date, the last full UTC day before run_after."""
    from mlops_airflow.dates import daily_interval

    from include.mlops.pipeline import Interval

    return Interval(*daily_interval(context))


@dag(
    description="One day of data through extract, validate, prepare, train, evaluate, register, deploy",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=start_date(),
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
        """Stage the interval's landed files and arrived labels; a bad file or no data fails unretried."""
        from mlops_airflow.operators import DataQualityError

        from include.mlops.pipeline import extract as run
        from include.mlops.validation.checks import DataValidationError, NoDataError

        try:
            return run(interval_of(context), context["params"]["dataset"]).to_xcom()
        except (DataValidationError, NoDataError) as exc:  # the same files fail the same way: no retry
            raise DataQualityError(str(exc)) from exc

    validate = GXValidateOperator(task_id="validate", doc="GX suite from the spec; quarantine on failure.")
    prepare = FeastPrepareOperator(task_id="prepare", doc="Features to Feast; apply; materialise online.")

    @mlflow_task
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
            return run(interval_of(context), lineage(context), params["dataset"], params["window_days"]).to_xcom()
        except NotEnoughData as exc:
            raise AirflowSkipException(f"not training yet: {exc}") from exc

    @task
    def evaluate(train_out: dict, **context) -> dict:
        """Holdout and slice metrics against the champion; the gate decides."""
        from include.mlops.pipeline import evaluate as run

        return run(train_out, context["params"]["dataset"]).to_xcom()

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
