"""
### ml_rollback: one click undoes the last promotion and ends the rollout

Trigger this DAG from the UI. With no version given, `champion` goes back to the version the
last completed promotion replaced (read from the deployment ledger); a promotion still under way
(a canary or shadow phase, or one a crash interrupted) is the one undone. Give `to_version` to
pick any registered version instead. Either way the rollout ends: the `challenger` alias is
removed and the strategy goes back to `direct`, so the scoring service stops routing to and
shadow-scoring the version rolled back from within its poll interval (or at once via
`POST /admin/reload`). The move is written to the ledger with who asked, why and the strategy
that was in force.

A second click with nothing new to undo fails with a message saying so (it would re-promote the
version just rolled back from); name `to_version` to go further back. Asking for the version that
already is champion changes nothing.

The DAG starts at `MLOPS_START_DATE` (ISO date, default `2020-01-01`), like the others.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, dag, task
from mlops_airflow.dates import start_date
from mlops_airflow.notifiers import RollbackNotifier, TaskFailureNotifier
from mlops_airflow.params import dataset_param

DEFAULT_ARGS = {
    "owner": "mlops",
    "retries": 2,
    "retry_delay": timedelta(seconds=10),
    "on_failure_callback": [TaskFailureNotifier()],
}


@dag(
    description="One click: undo the last promotion (or go to a given version), end the rollout, record it in the ledger",
    schedule=None,
    start_date=start_date(),
    catchup=False,
    default_args=DEFAULT_ARGS,
    params={
        "dataset": dataset_param(),
        "to_version": Param(
            None, type=["null", "string"], description="Version to restore; empty undoes the last promotion"
        ),
        "reason": Param("manual rollback from the Airflow UI", type="string", description="Recorded in the ledger"),
    },
    tags=["mlops", "deployment"],
    doc_md=__doc__,
)
def ml_rollback():
    @task(on_success_callback=[RollbackNotifier()])
    def rollback(**context) -> dict:
        """Undo the last promotion (or move `champion` to `to_version`), end the rollout, record it."""
        from airflow.sdk.exceptions import AirflowFailException

        from include.mlops.delivery.rollback import RollbackRefused
        from include.mlops.delivery.rollback import rollback as run

        params = context["params"]
        dag_run = context["dag_run"]
        try:
            out = run(params["to_version"], dag_run.run_id, dag_run.dag_id, params["dataset"], reason=params["reason"])
        except RollbackRefused as exc:  # not retried: the ledger would say the same again
            raise AirflowFailException(str(exc)) from exc
        print(f"{out.get('message', out)} (reason: {params['reason']})")
        return out

    rollback()


ml_rollback()
