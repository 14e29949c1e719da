"""
### ml_batch_scoring: the day's batch, scored by the champion

Reads the interval's validated batch from `staging/` (written by `ml_training`'s extract and
validate) and scores every row with the model that `champion` points to, into
`predictions/batch/<dataset>/dt=<day>/predictions.parquet`. The output is overwritten on a
re-run, so scoring a day twice leaves one file with the same rows. The monitoring DAG reads
these predictions alongside the online prediction log.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag, task
from airflow.timetables.interval import CronDataIntervalTimetable

DEFAULT_ARGS = {"owner": "mlops", "retries": 2, "retry_delay": timedelta(seconds=30)}


@dag(
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 10, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params={"dataset": Param(None, type=["null", "string"], description="Dataset spec; empty uses MLOPS_DATASET")},
    tags=["mlops", "scoring"],
    doc_md=__doc__,
)
def ml_batch_scoring():
    @task
    def score(**context) -> dict:
        """Score the interval's staged batch with the champion (idempotent overwrite)."""
        from include.mlops.batch import score_batch
        from include.mlops.pipeline import Interval

        return score_batch(
            Interval(context["data_interval_start"], context["data_interval_end"]), context["params"]["dataset"]
        )

    score()


ml_batch_scoring()
