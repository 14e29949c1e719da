"""
### ml_rollback: one click moves `champion` back

Trigger this DAG from the UI. With no version given, `champion` goes back to the version that
`previous` points to; give `to_version` to pick any registered version instead. The move is an
alias switch in the MLflow registry (atomic), written to the deployment ledger with who asked
and why, and the scoring service follows within its poll interval (or at once via
`POST /admin/reload`). Asking for the version that already is champion changes nothing.

The DAG starts at `MLOPS_START_DATE` (ISO date, default `2020-01-01`), like the others.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, dag, task
from mlops_airflow.dates import start_date
from mlops_airflow.notifiers import RollbackNotifier, TaskFailureNotifier

DEFAULT_ARGS = {
    "owner": "mlops",
    "retries": 2,
    "retry_delay": timedelta(seconds=10),
    "on_failure_callback": [TaskFailureNotifier()],
}


@dag(
    description="One click: champion back to the previous version (or a given one), recorded in the ledger",
    schedule=None,
    start_date=start_date(),
    catchup=False,
    default_args=DEFAULT_ARGS,
    params={
        "dataset": Param(None, type=["null", "string"], description="Dataset spec; empty uses MLOPS_DATASET"),
        "to_version": Param(None, type=["null", "string"], description="Version to restore; empty means `previous`"),
        "reason": Param("manual rollback from the Airflow UI", type="string", description="Recorded in the ledger"),
    },
    tags=["mlops", "deployment"],
    doc_md=__doc__,
)
def ml_rollback():
    @task(on_success_callback=[RollbackNotifier()])
    def rollback(**context) -> dict:
        """Move `champion` to `previous` (or to `to_version`) and record it in the ledger."""
        from include.mlops.deployment import rollback as run

        params = context["params"]
        dag_run = context["dag_run"]
        out = run(params["to_version"], dag_run.run_id, dag_run.dag_id, params["dataset"], reason=params["reason"])
        print(f"{out.get('message', out)} (reason: {params['reason']})")
        return out

    rollback()


ml_rollback()
