"""The demo's calendar: history, first champion, normal days, then drifted days (or the control)."""

import json
from datetime import date

from include.mlops.local.demo import demo_plan
from include.mlops.spec import load_spec
from tests.conftest import use_home


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


def test_the_summary_is_written_whatever_happened_and_the_exit_code_says_whether_it_completed(
    tmp_path, monkeypatch, capsys, keep_mlflow_uris
):
    """A failed or incomplete story still writes demo-summary.json (real MLflow on SQLite, no champion)."""
    from include.mlops.context import context
    from include.mlops.local.demo import Story
    from include.mlops.local.demo_summary import Timeline, finish, monitoring_window

    use_home(monkeypatch, tmp_path / "home")
    monkeypatch.delenv("DEMO_SCENARIO", raising=False)
    ctx = context("churn")
    story = Story(ctx.settings, {}, Timeline(), ctx.spec, ctx.store, demo_plan(ctx.spec))
    outputs = {"decide": {"action": "retrain", "drift_share": 0.6}, "monitor": {"report_html": "file:///r.html"}}
    story.windows.append(
        monitoring_window(date(2026, 10, 22), "covariate_drift", {"rows": 5, "probe": {}}, {"outputs": outputs})
    )
    written = tmp_path / "home" / "demo-summary.json"

    assert finish(story, None) == 1  # drifted days, but no new champion answering
    summary = json.loads(written.read_text())
    assert summary["failure"] is None and summary["champion"] == {"name": "churn_model", "version": None}
    assert summary["monitoring"][0]["scored"] == {"rows": 5}
    assert summary["monitoring"][0]["reports"] == {"data_drift": "file:///r.html"}
    assert summary["reports"]["validation"].endswith("reports/validation/churn/dt=2026-10-18/validation.html")
    printed = capsys.readouterr()
    assert "drift share 0.60  -> retrain" in printed.out and "did not complete" in printed.err

    assert finish(story, "the service did not start") == 1
    assert json.loads(written.read_text())["failure"] == "the service did not start"
    story.plan["scenario"] = "none"
    assert finish(story, None) == 0
