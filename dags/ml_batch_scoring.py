"""
### ml_batch_scoring: the day's batch, scored by the champion

Reads the interval's validated batch from `staging/` (written by `ml_training`'s extract and
validate) and scores every row with the model that `champion` points to, into
`predictions/batch/<dataset>/dt=<day>/predictions.parquet`. The output is overwritten on a
re-run, so scoring a day twice leaves one file with the same rows. The monitoring DAG reads
these predictions alongside the online prediction log. Before the first champion there is
nothing to score with: the run is skipped.

The run's day: its data interval, or for a run triggered with `"logical_date": null` (the REST
default) the last complete UTC day before its `run_after`. The DAG starts at `MLOPS_START_DATE`
(ISO date, default `2020-01-01`).
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, task
from airflow.timetables.interval import CronDataIntervalTimetable
from mlops_airflow.dates import start_date
from mlops_airflow.params import dataset_param

DEFAULT_ARGS = {"owner": "mlops", "retries": 2, "retry_delay": timedelta(seconds=30)}


@dag(
    description="The day's validated batch scored by the champion into predictions/batch/",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=start_date(),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params={"dataset": dataset_param()},
    tags=["mlops", "scoring"],
    doc_md=__doc__,
)
def ml_batch_scoring():
    @task
    def score(**context) -> dict:
        """Score the interval's staged batch with the champion (idempotent overwrite)."""
        import logging

        from airflow.sdk.exceptions import AirflowSkipException
        from mlops_airflow.dates import daily_interval

        from include.mlops.pipeline import Interval
        from include.mlops.registry import NoChampion
        from include.mlops.serving.batch import score_batch

        interval = Interval(*daily_interval(context))
        dataset = context["params"]["dataset"]
        logging.getLogger("airflow.task").info("scoring %s for %s", dataset or "(default dataset)", interval.label)
        try:
            return score_batch(interval, dataset)
        except NoChampion as exc:  # nothing to score with yet: not a failure, and a retry would not help
            raise AirflowSkipException(str(exc)) from exc

    score()


ml_batch_scoring()
