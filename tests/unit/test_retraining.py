"""Retraining planning: the data strategies, and the plan from params, drift events, the spec and the registry."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from include.mlops.retraining.plan import ALL_HISTORY_DAYS, _interval_end_day, plan_retraining, training_window_days


@pytest.fixture
def home_spec(tmp_path, monkeypatch) -> str:
    """A fresh home with the shipped churn spec installed; returns the spec's name."""
    import yaml

    from tests.conftest import ROOT, use_home, write_spec

    use_home(monkeypatch, tmp_path)
    raw = yaml.safe_load((ROOT / "include" / "specs" / "churn.yaml").read_text())
    write_spec(tmp_path, raw)
    return raw["name"]


# -- data strategies --------------------------------------------------------------------------------
def test_training_window_per_data_strategy():
    end = date(2026, 10, 20)
    assert training_window_days("sliding_window", 7, end, date(2026, 10, 10)) == 7
    assert training_window_days("all_history", 7, end, None) == ALL_HISTORY_DAYS
    assert training_window_days("new_data_only", 7, end, date(2026, 10, 10)) == 10
    assert training_window_days("new_data_only", 7, end, end) == 1
    assert training_window_days("new_data_only", 7, end, None) == 7  # no champion yet: the last N days
    with pytest.raises(ValueError, match="unknown data strategy 'everything' \\(known: sliding_window, "):
        training_window_days("everything", 7, end, None)


def test_the_champions_last_day_is_read_from_its_interval_key():
    assert _interval_end_day("20261001T000000_20261011T000000") == date(2026, 10, 10)  # the end is exclusive
    assert _interval_end_day("20261001T000000_20261011T060000") == date(2026, 10, 11)
    assert _interval_end_day(None) is None and _interval_end_day("") is None and _interval_end_day("x") is None


# -- the plan ---------------------------------------------------------------------------------------
def test_plan_retraining_from_params_and_from_an_event(home_spec):
    manual = plan_retraining(
        {
            "dataset": home_spec,
            "window_end": "2026-10-12",
            "data_strategy": "sliding_window",
            "window_days": 5,
            "deploy_strategy": "canary",
        },
        [],
        None,
    )
    assert (
        manual["interval_start"] == "2026-10-12T00:00:00+00:00"
        and manual["interval_end"] == "2026-10-13T00:00:00+00:00"
    )
    assert (manual["window_days"], manual["deploy_strategy"], manual["trigger"]) == (5, "canary", "manual")
    event = {"spec": home_spec, "dataset": "churn", "window_end": "2026-10-15T00:00:00+00:00"}
    auto = plan_retraining({}, [event], None)
    assert auto["interval_end"] == "2026-10-15T00:00:00+00:00" and auto["trigger"] == "drift"
    assert (auto["data_strategy"], auto["window_days"]) == (
        "sliding_window",
        7,
    )  # from the spec's monitoring.retraining
    # one window monitored twice (a re-run with another spec): the later decision is the one acted on
    from include.mlops.spec import load_spec
    from tests.conftest import write_spec

    churn = load_spec(home_spec)
    write_spec(Path(churn.path).parent, {**churn.to_dict(), "name": "other"})
    rerun = {**event, "spec": "other", "emitted_at": "2026-11-02T10:00:00+00:00"}
    first = {**event, "emitted_at": "2026-11-01T10:00:00+00:00"}
    assert plan_retraining({}, [rerun, first], None)["dataset"] == "other"
    older_window = {**event, "window_end": "2026-10-14T00:00:00+00:00", "emitted_at": "2026-11-03T00:00:00+00:00"}
    assert plan_retraining({}, [first, older_window], None)["interval_end"] == "2026-10-15T00:00:00+00:00"
    whenever = plan_retraining({"dataset": home_spec}, [], datetime(2026, 10, 30, 13, 5, tzinfo=UTC))
    assert whenever["interval_end"] == "2026-10-30T00:00:00+00:00"


def test_a_plan_without_a_dataset_uses_the_settings_and_links_the_days_validation_report(home_spec, monkeypatch):
    from include.mlops.context import context
    from include.mlops.layout import validation_report_prefix

    monkeypatch.setenv("MLOPS_DATASET", home_spec)
    ctx = context()
    key = validation_report_prefix(ctx.spec, date(2026, 10, 12)) + "validation.json"
    assert plan_retraining({"window_end": "2026-10-12"}, [], None)["report_uri"] == ""
    ctx.store.put_json(key, {"success": True})
    plan = plan_retraining({"window_end": "2026-10-12"}, [], None)
    assert (plan["dataset"], plan["dataset_name"], plan["model"]) == (home_spec, ctx.spec.name, ctx.spec.model_name)
    assert plan["report_uri"] == ctx.store.uri(key) and plan["event"] == {} and plan["deploy_strategy"] is None


def test_new_data_only_trains_on_the_days_since_the_champions_interval(home_spec, keep_mlflow_uris):
    """Real MLflow on SQLite in the test's home: first no champion, then one trained up to 2026-10-10."""
    import mlflow

    from include.mlops.config import get_settings
    from include.mlops.constants import CHAMPION
    from include.mlops.registry import setup_mlflow
    from include.mlops.spec import load_spec

    params = {"dataset": home_spec, "window_end": "2026-10-15", "data_strategy": "new_data_only", "window_days": 4}
    none_yet = plan_retraining(params, [], None)
    assert (none_yet["window_days"], none_yet["champion_interval_end"]) == (4, None)

    client, model = setup_mlflow(get_settings()), load_spec(home_spec).model_name
    mlflow.set_experiment("retraining-test")  # in this home: an earlier test may have left its own active
    with mlflow.start_run(tags={"mlops.interval": "20261001T000000_20261011T000000"}) as run:
        mlflow.log_text("not a model: only the run's tags are read", "model/README.txt")
    client.create_registered_model(model)
    mv = client.create_model_version(model, f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    client.set_registered_model_alias(model, CHAMPION, mv.version)
    plan = plan_retraining(params, [], None)
    assert (plan["window_days"], plan["champion_interval_end"]) == (5, "2026-10-10")  # 10-11 .. 10-15


def test_drift_events_carry_their_extra_and_when_they_were_emitted():
    from datetime import UTC, datetime
    from types import SimpleNamespace

    from include.mlops.retraining.plan import describe_plan, drift_events

    at = datetime(2026, 10, 12, 6, 0, tzinfo=UTC)
    events = {
        "asset-a": [SimpleNamespace(extra={"dataset": "churn", "window_day": "2026-10-11"}, timestamp=at)],
        "asset-b": [SimpleNamespace(extra=None, timestamp=None)],
    }
    assert drift_events(events) == [
        {"dataset": "churn", "window_day": "2026-10-11", "emitted_at": at.isoformat()},
        {"emitted_at": ""},
    ]
    assert drift_events(None) == []
    plan = {
        "dataset_name": "churn",
        "trigger": "drift",
        "data_strategy": "sliding_window",
        "window_days": 7,
        "interval_end": "2026-10-12T00:00:00+00:00",
        "deploy_strategy": None,
    }
    assert describe_plan(plan).endswith("ending 2026-10-12T00:00:00+00:00; deploy strategy from the spec")
