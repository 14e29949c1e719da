"""`ml_training`'s extract under `dag.test()`: an unreadable landed file, or a day without data,
fails the task on its first try (no retry, nothing downstream runs) and leaves the quarantine."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.conftest import DEMO_START, run_dag_day, small_spec, use_home

pytestmark = pytest.mark.integration


def _state(ti) -> str:
    return str(ti.state).split(".")[-1].lower()


@pytest.fixture(scope="module")
def landing(tmp_path_factory, airflow_db):
    from include.mlops.data.generator import write_days
    from include.mlops.spec import load_spec
    from include.mlops.storage import ensure_bucket, get_store

    home = tmp_path_factory.mktemp("extract_failures")
    mp = pytest.MonkeyPatch()
    use_home(mp, home)
    spec_path = str(small_spec(home))
    spec = load_spec(spec_path)
    store = get_store()
    ensure_bucket(store)
    write_days(store, spec, DEMO_START, 1, rows=100)
    yield {"spec": spec, "spec_path": spec_path, "store": store}
    mp.undo()


def test_unreadable_file_fails_extract_once_and_is_quarantined(training_dag, landing):
    from include.mlops import layout

    spec, store = landing["spec"], landing["store"]
    day = DEMO_START
    bad = b"customer_id,event_timestamp\n1,2026-10-01T00:00:00Z\n"  # a CSV under a .parquet name
    store.put_bytes(layout.events_landing_key(spec, day, "part-1.parquet"), bad)
    assert training_dag.default_args["retries"] >= 1  # a plain error would be retried

    run, tis = run_dag_day(training_dag, day, dataset=landing["spec_path"], train=False)

    assert _state(tis["extract"]) == "failed" and tis["extract"].try_number == 1
    assert all(_state(tis[t]) != "success" for t in ("validate", "prepare"))
    q = layout.quarantine_prefix(spec, day)
    assert store.get_bytes(f"{q}part-1.parquet") == bad
    cause = store.get_json(f"{q}cause.json")["files"][0]
    assert cause["file"].endswith("part-1.parquet") and "under a .parquet name" in cause["cause"]
    assert not store.list(layout.staging_events_prefix(spec, day))


def test_day_without_data_fails_extract_without_retry(training_dag, landing):
    day = DEMO_START + timedelta(days=5)

    run, tis = run_dag_day(training_dag, day, dataset=landing["spec_path"], train=False)

    assert _state(tis["extract"]) == "failed" and tis["extract"].try_number == 1
    assert _state(tis["validate"]) != "success"
