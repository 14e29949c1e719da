"""The DAGs' start date (MLOPS_START_DATE) and the data interval of a run without a logical date."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest


def test_start_date_defaults_far_back_and_follows_the_variable(monkeypatch):
    from mlops_airflow.dates import start_date

    monkeypatch.delenv("MLOPS_START_DATE", raising=False)
    assert start_date() == datetime(2020, 1, 1, tzinfo=UTC)
    monkeypatch.setenv("MLOPS_START_DATE", "2018-03-04")
    assert start_date() == datetime(2018, 3, 4, tzinfo=UTC)
    monkeypatch.setenv("MLOPS_START_DATE", "last tuesday")
    with pytest.raises(ValueError, match="MLOPS_START_DATE='last tuesday': not an ISO date"):
        start_date()


def test_the_run_interval_wins_when_there_is_one():
    from mlops_airflow.dates import daily_interval

    start, end = datetime(2026, 10, 3, tzinfo=UTC), datetime(2026, 10, 4, tzinfo=UTC)
    run = SimpleNamespace(run_after=datetime(2026, 12, 1, 13, tzinfo=UTC), run_id="scheduled")
    ctx = {"data_interval_start": start, "data_interval_end": end, "dag_run": run}
    assert daily_interval(ctx) == (start, end)


@pytest.mark.parametrize(
    ("run_after", "day"),
    [
        (datetime(2026, 12, 1, 13, 30, tzinfo=UTC), 30),  # mid-day: yesterday
        (datetime(2026, 12, 1, 0, 0, tzinfo=UTC), 30),  # at midnight: the day that just ended
        (datetime(2026, 12, 1, 23, 59, 59, tzinfo=UTC), 30),
    ],
)
def test_without_a_logical_date_the_last_full_utc_day_before_run_after(run_after, day):
    """A REST trigger with `"logical_date": null` has no data interval in its context (Airflow 3)."""
    from mlops_airflow.dates import daily_interval

    run = SimpleNamespace(run_after=run_after, run_id="manual__x", data_interval_start=None, data_interval_end=None)
    start, end = daily_interval({"dag_run": run})
    assert (start, end) == (datetime(2026, 11, day, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))


def test_run_after_in_another_timezone_is_read_in_utc():
    from zoneinfo import ZoneInfo

    from mlops_airflow.dates import daily_interval

    ra = datetime(2026, 12, 1, 1, 30, tzinfo=ZoneInfo("Europe/Berlin"))  # 00:30 UTC on Dec 1
    start, end = daily_interval({"dag_run": SimpleNamespace(run_after=ra, run_id="m")})
    assert (start, end) == (datetime(2026, 11, 30, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))


def test_no_interval_and_no_run_after_fails_without_retry():
    from airflow.sdk.exceptions import AirflowFailException
    from mlops_airflow.dates import daily_interval

    with pytest.raises(AirflowFailException, match="no data interval and no run_after"):
        daily_interval({"dag_run": SimpleNamespace(run_after=None, run_id="manual__y")})
