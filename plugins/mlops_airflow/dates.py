"""When the DAGs start, and which data interval a run is for.

Light on purpose: DAG files import this at parse time, so nothing here imports more than the
standard library and the settings (`include.mlops.config`: pydantic, which Airflow loads anyway),
and Airflow's exception inside the function that raises it.

- `start_date()`: the DAGs' `start_date`, from `MLOPS_START_DATE` (`config.Settings.start_date`:
  an ISO date, UTC; default 2020-01-01). A run for a day before it would "succeed" with no task run, so the default lies
  far enough in the past for users' historical data.
- `daily_interval(context)`: the run's data interval. A scheduled run, a backfill or a trigger
  with a `logical_date` carries one; a run triggered through the REST API with
  `"logical_date": null` (Airflow 3's default, what apache-airflow-client sends) does not, and
  gets the last complete UTC day before its `run_after`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from include.mlops.config import get_settings


def start_date() -> datetime:
    """`MLOPS_START_DATE` (YYYY-MM-DD) at 00:00 UTC; a value that is not an ISO date is a parse error
    (`config.SettingsError`, naming the variable)."""
    day = get_settings().start_date
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _utc(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    dt = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def day_before(run_after: datetime) -> tuple[datetime, datetime]:
    """The last complete UTC day before `run_after`: [midnight before it - 1 day, that midnight)."""
    ra = _utc(run_after)
    end = datetime(ra.year, ra.month, ra.day, tzinfo=UTC)
    return end - timedelta(days=1), end


def daily_interval(context: Any) -> tuple[datetime, datetime]:
    """(start, end) of the run's data interval, in UTC; see the module docstring.

    Raises `AirflowFailException` (not retried: a retry would meet the same run) when neither the
    run's data interval nor its `run_after` is known.
    """
    from airflow.sdk.exceptions import AirflowFailException

    dag_run = context.get("dag_run")
    for source in (context, {k: getattr(dag_run, k, None) for k in ("data_interval_start", "data_interval_end")}):
        start, end = _utc(source.get("data_interval_start")), _utc(source.get("data_interval_end"))
        if start is not None and end is not None and end > start:
            return start, end
    run_after = getattr(dag_run, "run_after", None) if dag_run is not None else None
    if run_after is None:
        run_id = getattr(dag_run, "run_id", "?")
        raise AirflowFailException(
            f"run {run_id} has no data interval and no run_after: trigger it with a logical_date "
            "(or data_interval_start/end) so the day to process is known"
        )
    return day_before(run_after)
