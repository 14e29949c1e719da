"""
### ml_retraining: train → evaluate → register → deploy again, when drift says so

Scheduled on the drift Assets (`x-mlops://drift/<dataset>`, emitted by `ml_monitoring` when its
policy decides to retrain), and can be triggered by hand with params.

| task | does | look here |
|---|---|---|
| plan | dataset, data interval and training window from the params, else the triggering drift event, else the spec (`monitoring.retraining`) | task log (what and why) |
| train | the same training step as `ml_training`, on the window chosen by the data strategy | MLflow run |
| evaluate | holdout and slice metrics, the challenger against the champion on the same holdout: the gate | `evaluation/gate.txt` in the run |
| register | a model version with lineage tags, alias `challenger` | extra link *MLflow model version* |
| deploy | through the gate only: promotes, or keeps the champion and alerts "not promoted: …" | ledger; alert |

Data strategies (`data_strategy`): `sliding_window` (the last `window_days` days), `all_history`
(everything labelled), `new_data_only` (only what arrived after the champion's training interval).
`window_end` (a date, inclusive) sets the last day of data; by default the drift window's day, or
the day before the run for a manual trigger. `deploy_strategy` overrides the spec's.

Alerts on gate rejection and on failure (a failed post-deployment check is a rollback) through the
optional connections `mlops_alerts_webhook` and `mlops_alerts_smtp`.

A manual run needs no logical date (`"logical_date": null`, the REST default): its day comes from
`window_end`, else its `run_after`. The DAG starts at `MLOPS_START_DATE` (ISO date, default
`2020-01-01`).
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Asset, AssetAny, Param, dag, task
from mlops_airflow.dates import start_date
from mlops_airflow.notifiers import GateDecisionNotifier, TaskFailureNotifier
from mlops_airflow.operators import MlflowPromoteOperator, MlflowRegisterOperator, mlflow_task
from mlops_airflow.params import dataset_param

from include.mlops.constants import DATA_STRATEGIES, STRATEGIES, known_datasets
from include.mlops.retraining.drift_policy import drift_asset_uri

DEFAULT_ARGS = {
    "owner": "mlops",
    "retries": 2,
    "retry_delay": timedelta(seconds=30),
    "on_failure_callback": [TaskFailureNotifier()],
}
DRIFT_ASSETS = [Asset(drift_asset_uri(name)) for name in known_datasets()]
PARAMS = {
    "dataset": dataset_param("the drift event's, else MLOPS_DATASET"),
    "window_end": Param(
        None,
        type=["null", "string"],
        format="date",
        description="Last day of training data (YYYY-MM-DD); empty: the drift window's day",
    ),
    "window_days": Param(
        None,
        type=["null", "integer"],
        minimum=1,
        description="N for the sliding window; empty: monitoring.retraining.window_days",
    ),
    "data_strategy": Param(
        None,
        type=["null", "string"],
        enum=[None, *DATA_STRATEGIES],
        values_display={"null": "the spec's strategy", **{s: s for s in DATA_STRATEGIES}},
        description="Which data to retrain on; empty: monitoring.retraining.data_strategy",
    ),
    "deploy_strategy": Param(
        None,
        type=["null", "string"],
        enum=[None, *STRATEGIES],
        values_display={"null": "the spec's strategy", **{s: s for s in STRATEGIES}},
        description="Overrides the spec's deployment strategy for this run",
    ),
}
PLAN = "ti.xcom_pull(task_ids='plan')"


@dag(
    description="Train, evaluate, register and deploy again on a fresh window: on drift, or by hand",
    schedule=AssetAny(*DRIFT_ASSETS) if len(DRIFT_ASSETS) > 1 else DRIFT_ASSETS,
    start_date=start_date(),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params=PARAMS,
    tags=["mlops", "retraining"],
    doc_md=__doc__,
)
def ml_retraining():
    @task
    def plan(**context) -> dict:
        """Choose dataset, interval and training window from params, drift event and spec."""
        import logging

        from include.mlops.retraining.plan import describe_plan, drift_events, plan_retraining

        events = drift_events(context.get("triggering_asset_events"))
        out = plan_retraining(dict(context["params"]), events, getattr(context["dag_run"], "run_after", None))
        logging.getLogger("airflow.task").info(describe_plan(out))
        return out

    @mlflow_task
    def train(plan_out: dict, **context) -> dict:
        """Point-in-time training set for the planned window, budgeted search, MLflow run."""
        from airflow.sdk.exceptions import AirflowSkipException
        from mlops_airflow.operators import lineage

        from include.mlops.pipeline import NotEnoughData
        from include.mlops.retraining.plan import train_planned

        try:
            return train_planned(plan_out, lineage(context)).to_xcom()
        except NotEnoughData as exc:
            raise AirflowSkipException(f"not retraining: {exc}") from exc

    @task
    def evaluate(train_out: dict, plan_out: dict) -> dict:
        """Holdout and slice metrics against the champion; the gate decides."""
        from include.mlops.pipeline import evaluate as run

        return run(train_out, plan_out["dataset"]).to_xcom()

    register = MlflowRegisterOperator(
        task_id="register",
        doc="Model version with lineage; alias challenger.",
        dataset=f"{{{{ {PLAN}['dataset'] }}}}",
        validate_task_id="plan",
        data_interval_start=f"{{{{ {PLAN}['interval_start'] }}}}",
        data_interval_end=f"{{{{ {PLAN}['interval_end'] }}}}",
    )
    deploy = MlflowPromoteOperator(
        task_id="deploy",
        doc="Promote through the gate, check, or roll back.",
        dataset=f"{{{{ {PLAN}['dataset'] }}}}",
        strategy=f"{{{{ {PLAN}['deploy_strategy'] or '' }}}}",
        on_success_callback=[GateDecisionNotifier()],
    )

    planned = plan()
    trained = train(planned)
    evaluate(trained, planned) >> register >> deploy


ml_retraining()
