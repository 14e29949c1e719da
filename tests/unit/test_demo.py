"""The demo's calendar: history, first champion, normal days, then drifted days (or the control)."""

from datetime import date

from include.mlops.demo import demo_plan
from include.mlops.spec import load_spec


def test_the_story_covers_the_training_window_then_normal_then_drifted_days(monkeypatch):
    monkeypatch.delenv("DEMO_SCENARIO", raising=False)
    spec = load_spec("churn")
    plan = demo_plan(spec)
    # the first champion needs the training window of labelled days, and labels come late
    assert plan["history_days"] == spec.training.window_days + spec.label_delay_days
    assert plan["train_day"] == date(2026, 10, 18)
    assert (plan["drift_start"], plan["last_day"]) == (date(2026, 10, 22), date(2026, 10, 23))
    assert plan["scenario"] == "covariate_drift"


def test_demo_scenario_none_is_the_same_days_without_drift(monkeypatch):
    monkeypatch.setenv("DEMO_SCENARIO", "none")
    monkeypatch.setenv("DEMO_MONITOR_DAYS", "1")
    plan = demo_plan(load_spec("churn"))
    assert plan["scenario"] == "none" and plan["last_day"] == date(2026, 10, 21)
