"""The drift policy, one rule at a time, plus its I/O (decision history); the plan is test_retraining's."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from include.mlops.retraining.drift_policy import (
    COOLDOWN,
    INSUFFICIENT,
    NO_DRIFT,
    QUARANTINE,
    RETRAIN,
    WATCH,
    DriftPolicy,
    Observation,
    decide,
    drift_asset_uri,
)

DAY = date(2026, 10, 20)
POLICY = DriftPolicy(
    min_rows=500,
    drift_share=0.25,
    performance_drop=0.05,
    min_labelled_rows=200,
    consecutive_windows=1,
    cooldown_days=2,
    max_bad_fraction=0.01,
    primary_metric="roc_auc",
)


def obs(**kw) -> Observation:
    base = {
        "day": DAY,
        "rows": 1000,
        "drift_share": 0.0,
        "labelled_rows": 0,
        "window_metric": None,
        "champion_metric": 0.80,
    }
    return Observation(**{**base, **kw})


def past(days_ago: int, action: str = NO_DRIFT, signal: bool = False) -> dict:
    return {"day": (DAY - timedelta(days=days_ago)).isoformat(), "action": action, "signal": signal}


def result(decision, rule: str) -> str:
    return next(c.result for c in decision.checks if c.rule.startswith(rule))


def test_no_signal_is_no_drift():
    d = decide(obs(drift_share=0.1), POLICY)
    assert d.action == NO_DRIFT and not d.fire and not d.alert and not d.signal


# -- drift share ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("share", "action"), [(0.24, NO_DRIFT), (0.25, RETRAIN), (0.6, RETRAIN)])
def test_drift_share_threshold(share, action):
    d = decide(obs(drift_share=share, drifted_features=("plan", "monthly_charges")), POLICY)
    assert d.action == action
    assert result(d, "drift share") == ("SIGNAL" if action == RETRAIN else "pass")
    assert d.fire is (action == RETRAIN) and d.alert is (action == RETRAIN)


def test_many_drifted_features_are_listed_up_to_five():
    features = tuple(f"f{i}" for i in range(7))
    d = decide(obs(drift_share=0.5, drifted_features=features), POLICY)
    check = next(c for c in d.checks if c.rule == "drift share")
    assert check.note == "f0, f1, f2, f3, f4…"
    assert d.reason == "drift share 0.500 >= 0.250"


# -- minimum sample size --------------------------------------------------------------------------
def test_too_few_rows_blocks_even_a_strong_drift():
    d = decide(obs(rows=499, drift_share=0.9), POLICY)
    assert d.action == INSUFFICIENT and not d.fire and not d.signal
    assert result(d, "minimum rows") == "BLOCK"


def test_enough_rows_passes():
    assert result(decide(obs(rows=500), POLICY), "minimum rows") == "pass"


# -- performance drop against the champion's holdout metric --------------------------------------------
def test_performance_drop_alone_triggers():
    d = decide(obs(labelled_rows=300, window_metric=0.74, champion_metric=0.80), POLICY)
    assert d.action == RETRAIN and d.performance_drop == pytest.approx(0.06)
    assert result(d, "roc_auc drop") == "SIGNAL" and "roc_auc dropped" in d.reason


def test_small_performance_drop_is_tolerated():
    d = decide(obs(labelled_rows=300, window_metric=0.77, champion_metric=0.80), POLICY)
    assert d.action == NO_DRIFT and result(d, "roc_auc drop") == "pass"


def test_performance_needs_enough_labels():
    d = decide(obs(labelled_rows=199, window_metric=0.50, champion_metric=0.80), POLICY)
    assert d.action == NO_DRIFT and result(d, "roc_auc drop") == "skip"


def test_performance_drop_respects_metric_direction():
    pol = DriftPolicy(**{**POLICY.__dict__, "primary_metric": "rmse", "performance_drop": 5.0})
    worse = decide(obs(labelled_rows=300, window_metric=46.0, champion_metric=40.0), pol)
    better = decide(obs(labelled_rows=300, window_metric=30.0, champion_metric=40.0), pol)
    assert worse.action == RETRAIN and better.action == NO_DRIFT


def test_performance_is_skipped_when_the_champion_has_no_holdout_metric():
    d = decide(obs(labelled_rows=300, window_metric=0.10, champion_metric=None), POLICY)
    check = next(c for c in d.checks if c.rule == "roc_auc drop")
    assert (check.result, check.note) == ("skip", "champion has no holdout metric")
    assert d.action == NO_DRIFT and d.performance_drop is None


def test_performance_is_skipped_without_a_window_metric_even_with_labels():
    d = decide(obs(labelled_rows=300, window_metric=None, champion_metric=0.80), POLICY)
    assert result(d, "roc_auc drop") == "skip" and d.performance_drop is None and d.action == NO_DRIFT


def test_log_loss_is_lower_is_better():
    pol = DriftPolicy(**{**POLICY.__dict__, "primary_metric": "log_loss", "performance_drop": 0.05})
    worse = decide(obs(labelled_rows=300, window_metric=0.50, champion_metric=0.40), pol)
    better = decide(obs(labelled_rows=300, window_metric=0.30, champion_metric=0.40), pol)
    assert worse.action == RETRAIN and worse.performance_drop == pytest.approx(0.10)
    assert better.action == NO_DRIFT and better.performance_drop == pytest.approx(-0.10)


def test_drift_and_a_performance_drop_are_both_named():
    d = decide(obs(drift_share=0.5, labelled_rows=300, window_metric=0.70, champion_metric=0.80), POLICY)
    assert d.action == RETRAIN
    assert d.reason == "drift share 0.500 >= 0.250 and roc_auc dropped 0.1000 >= 0.050"


# -- data quality -------------------------------------------------------------------------------------
def test_data_quality_failure_quarantines_instead_of_retraining():
    d = decide(
        obs(
            drift_share=0.9,
            data_quality_passed=False,
            data_quality_failures=("MissingValueCount(tenure_months)", "OutListValueCount(plan)"),
        ),
        POLICY,
    )
    assert d.action == QUARANTINE and not d.fire and d.alert and not d.signal
    assert result(d, "data quality") == "BLOCK" and "tenure_months" in d.reason


def test_many_data_quality_failures_are_listed_up_to_four():
    failures = tuple(f"check{i}" for i in range(6))
    d = decide(obs(data_quality_passed=False, data_quality_failures=failures), POLICY)
    check = next(c for c in d.checks if c.rule == "data quality")
    assert (check.value, check.note) == ("6 failed", "check0, check1, check2, check3…")
    assert d.reason == "data-quality check failed (check0, check1, check2, check3…): quarantined, not retraining"


# -- consecutive windows --------------------------------------------------------------------------------
def test_consecutive_windows_waits_for_persistence():
    pol = DriftPolicy(**{**POLICY.__dict__, "consecutive_windows": 3})
    first = decide(obs(drift_share=0.5), pol, history=[])
    second = decide(obs(drift_share=0.5), pol, history=[past(1, WATCH, True)])
    third = decide(obs(drift_share=0.5), pol, history=[past(2, WATCH, True), past(1, WATCH, True)])
    assert (first.action, first.streak) == (WATCH, 1) and not first.fire and not first.alert
    assert (second.action, second.streak) == (WATCH, 2)
    assert (third.action, third.streak) == (RETRAIN, 3)


def test_a_gap_or_a_quiet_window_breaks_the_streak():
    pol = DriftPolicy(**{**POLICY.__dict__, "consecutive_windows": 2})
    gap = decide(obs(drift_share=0.5), pol, history=[past(2, WATCH, True)])
    quiet = decide(obs(drift_share=0.5), pol, history=[past(1, NO_DRIFT, False)])
    assert gap.action == WATCH and quiet.action == WATCH


def test_history_of_later_windows_is_ignored():
    pol = DriftPolicy(**{**POLICY.__dict__, "consecutive_windows": 2})
    future = {"day": (DAY + timedelta(days=1)).isoformat(), "action": WATCH, "signal": True}
    assert decide(obs(drift_share=0.5), pol, history=[future]).action == WATCH


# -- cooldown ---------------------------------------------------------------------------------------
def test_cooldown_after_a_retrain_decision():
    recent = decide(obs(drift_share=0.5), POLICY, history=[past(1, RETRAIN, True)])
    over = decide(obs(drift_share=0.5), POLICY, history=[past(2, RETRAIN, True)])
    assert recent.action == COOLDOWN and not recent.fire and result(recent, "cooldown") == "BLOCK"
    assert over.action == RETRAIN


def test_cooldown_after_a_promotion_in_the_ledger():
    end = datetime(2026, 10, 21, tzinfo=UTC)
    recent = [{"action": "promote", "to_version": "3", "at": "2026-10-20T06:00:00.000000Z"}]
    old = [{"action": "promote", "to_version": "2", "at": "2026-10-17T06:00:00.000000Z"}]
    later = [
        {"action": "promote", "to_version": "4", "at": "2026-11-30T06:00:00.000000Z"}
    ]  # after the window: a backfill
    rollback = [{"action": "rollback", "to_version": "1", "at": "2026-10-20T06:00:00.000000Z"}]
    assert decide(obs(drift_share=0.5), POLICY, ledger=recent, window_end=end).action == COOLDOWN
    assert decide(obs(drift_share=0.5), POLICY, ledger=old, window_end=end).action == RETRAIN
    assert decide(obs(drift_share=0.5), POLICY, ledger=later, window_end=end).action == RETRAIN
    assert decide(obs(drift_share=0.5), POLICY, ledger=rollback, window_end=end).action == RETRAIN


def test_no_cooldown_check_without_a_signal():
    d = decide(obs(drift_share=0.0), POLICY, history=[past(1, RETRAIN, True)])
    assert d.action == NO_DRIFT and not any(c.rule == "cooldown" for c in d.checks)


def test_only_done_promotions_with_a_time_count_for_the_cooldown():
    end = datetime(2026, 10, 21, tzinfo=UTC)
    pending = [{"action": "promote", "to_version": "3", "at": "2026-10-20T06:00:00Z", "status": "pending"}]
    undated = [{"action": "promote", "to_version": "3"}]
    for ledger in (pending, undated):
        d = decide(obs(drift_share=0.5), POLICY, ledger=ledger, window_end=end)
        assert d.action == RETRAIN
        assert next(c for c in d.checks if c.rule == "cooldown").value == "-"


def test_the_cooldown_names_the_latest_change_and_its_age():
    end = datetime(2026, 10, 21, tzinfo=UTC)
    ledger = [{"action": "promote", "to_version": "5", "at": "2026-10-20T12:00:00Z"}]
    d = decide(obs(drift_share=0.5), POLICY, history=[past(1, RETRAIN, True)], ledger=ledger, window_end=end)
    check = next(c for c in d.checks if c.rule == "cooldown")
    assert d.action == COOLDOWN and (check.value, check.note) == ("0.5 d", "v5 promoted at 2026-10-20T12:00:00Z")
    assert d.reason == "v5 promoted at 2026-10-20T12:00:00Z, 0.5 d ago: within the 2-day cooldown"
    over = decide(obs(drift_share=0.5), POLICY, history=[past(3, RETRAIN, True)])
    check = next(c for c in over.checks if c.rule == "cooldown")
    assert over.action == RETRAIN and (check.result, check.value) == ("pass", "3.0 d")
    assert check.note == f"retrain decided for window {DAY - timedelta(days=3)}"


# -- precedence and presentation ---------------------------------------------------------------------
def test_quarantine_outranks_everything():
    d = decide(
        obs(rows=10, drift_share=0.9, data_quality_passed=False, data_quality_failures=("x",)),
        POLICY,
        history=[past(1, RETRAIN, True)],
    )
    assert d.action == QUARANTINE


def test_waiting_for_persistence_outranks_the_cooldown():
    pol = DriftPolicy(**{**POLICY.__dict__, "consecutive_windows": 2})
    d = decide(obs(drift_share=0.5), pol, history=[past(3, WATCH, True), past(1, RETRAIN, False)])
    assert [c.result for c in d.checks][-2:] == ["BLOCK", "BLOCK"]
    assert d.action == WATCH and d.signal and d.streak == 1


def test_stored_checks_keep_their_five_columns():
    d = decide(obs(rows=10, drift_share=0.5), POLICY)
    assert d.action == INSUFFICIENT
    assert [set(c) for c in d.to_dict()["checks"]] == [{"rule", "value", "threshold", "result", "note"}] * 4


def test_table_lists_every_rule_and_the_decision():
    d = decide(obs(drift_share=0.5, drifted_features=("plan",), labelled_rows=300, window_metric=0.79), POLICY)
    table = d.table()
    for rule in ("data quality", "minimum rows", "drift share", "roc_auc drop", "consecutive windows", "cooldown"):
        assert rule in table
    assert table.splitlines()[-1].startswith(f"decision for window {DAY}: RETRAIN")
    assert d.to_dict()["fire"] is True and len(d.to_dict()["checks"]) == 6


def test_policy_from_the_shipped_spec():
    from include.mlops.spec import load_spec

    spec = load_spec("churn")
    raw = spec.monitoring.policy
    pol = DriftPolicy.from_spec(spec)
    assert (pol.min_rows, pol.drift_share, pol.performance_drop, pol.consecutive_windows, pol.cooldown_days) == (
        raw.min_rows,
        raw.drift_share,
        raw.performance_drop,
        raw.consecutive_windows,
        raw.cooldown_days,
    )
    assert pol.primary_metric == spec.primary_metric
    assert pol.max_bad_fraction == spec.validation.max_bad_fraction


def test_drift_asset_uri_is_a_name_without_secrets():
    uri = drift_asset_uri("churn")
    assert uri == "x-mlops://drift/churn" and "@" not in uri


# -- I/O: the decision history in the object store -------------------------------------------------------
@pytest.fixture
def policy_home(tmp_path, monkeypatch):
    """A home whose installed churn spec retrains after 2 windows; returns the spec's name."""
    import yaml

    from tests.conftest import ROOT, use_home, write_spec

    use_home(monkeypatch, tmp_path)
    raw = yaml.safe_load((ROOT / "include" / "specs" / "churn.yaml").read_text())
    raw["monitoring"]["policy"].update({"consecutive_windows": 2, "cooldown_days": 2})
    write_spec(tmp_path, raw)
    return raw["name"]


def summary_for(day: date, share: float) -> dict:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return {
        "dataset": "churn",
        "window": {"start": start.isoformat(), "end": (start + timedelta(days=1)).isoformat(), "day": day.isoformat()},
        "rows": 800,
        "drift_share": share,
        "drifted_features": ["plan", "monthly_charges"],
        "labelled_rows": 0,
        "performance": {},
        "data_quality": {"passed": True, "failures": []},
        "champion": {"version": "1", "holdout_metric": 0.8},
        "report_html": "file:///r/data_drift.html",
        "summary_uri": "file:///r/summary.json",
        "run_id": "abc",
        "experiment_id": "1",
    }


def test_decide_window_keeps_a_history_and_fires_on_the_second_window(policy_home):
    from include.mlops.layout import drift_decision_key
    from include.mlops.retraining.drift_window import decide_window
    from include.mlops.storage import get_store

    d1 = decide_window(summary_for(DAY, 0.4), policy_home)
    d2 = decide_window(summary_for(DAY + timedelta(days=1), 0.4), policy_home)
    d3 = decide_window(summary_for(DAY + timedelta(days=2), 0.4), policy_home)
    assert (d1["action"], d2["action"], d3["action"]) == (WATCH, RETRAIN, COOLDOWN)
    assert "event_extra" not in d1 and "event_extra" not in d3
    extra = d2["event_extra"]
    assert extra["drift_share"] == 0.4 and extra["drifted_features"] == ["plan", "monthly_charges"]
    assert (
        extra["report_uri"] == "file:///r/data_drift.html"
        and extra["window_day"] == (DAY + timedelta(days=1)).isoformat()
    )
    stored = get_store().get_json(drift_decision_key("churn", DAY + timedelta(days=1)))
    assert stored["action"] == RETRAIN and stored["signal"] is True
    # re-running a window overwrites its decision; it does not see itself in its own history
    again = decide_window(summary_for(DAY + timedelta(days=1), 0.4), policy_home)
    assert again["action"] == RETRAIN
