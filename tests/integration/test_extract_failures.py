"""`ml_training`'s extract under `dag.test()`: an unreadable landed file, or a day without data,
fails the task on its first try (no retry, nothing downstream runs) and leaves the quarantine."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.conftest import DEMO_START, demo_home, run_dag_day, small_spec, ti_state

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def landing(tmp_path_factory, airflow_db):
    home = tmp_path_factory.mktemp("extract_failures")
    with demo_home(home, small_spec(home), days=1, rows=100) as (spec_name, spec, store):
        yield {"spec": spec, "spec_name": spec_name, "store": store}


def test_unreadable_file_fails_extract_once_and_is_quarantined(training_dag, landing):
    from include.mlops import layout

    spec, store = landing["spec"], landing["store"]
    day = DEMO_START
    bad = b"customer_id,event_timestamp\n1,2026-10-01T00:00:00Z\n"  # a CSV under a .parquet name
    store.put_bytes(layout.events_landing_key(spec, day, "part-1.parquet"), bad)
    assert training_dag.default_args["retries"] >= 1  # a plain error would be retried

    run, tis = run_dag_day(training_dag, day, dataset=landing["spec_name"], train=False)

    assert ti_state(tis["extract"]) == "failed" and tis["extract"].try_number == 1
    assert all(ti_state(tis[t]) != "success" for t in ("validate", "prepare"))
    q = layout.quarantine_prefix(spec, day)
    assert store.get_bytes(f"{q}part-1.parquet") == bad
    cause = store.get_json(f"{q}cause.json")["files"][0]
    assert cause["file"].endswith("part-1.parquet") and "under a .parquet name" in cause["cause"]
    assert not store.list(layout.staging_events_prefix(spec, day))


def test_day_without_data_fails_extract_without_retry(training_dag, landing):
    day = DEMO_START + timedelta(days=5)

    run, tis = run_dag_day(training_dag, day, dataset=landing["spec_name"], train=False)

    assert ti_state(tis["extract"]) == "failed" and tis["extract"].try_number == 1
    assert ti_state(tis["validate"]) != "success"
