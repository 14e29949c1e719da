"""The A/B test's statistics and decision on generated outcomes with a known truth, and its
reading of a real (file) store's prediction log and label feed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from include.mlops.delivery import abtest as A
from include.mlops.delivery import abwindow as W
from include.mlops.spec import load_spec
from include.mlops.spec_sections import ABTestSpec

CHURN = load_spec("churn")
HOUSING = load_spec("housing")


def accuracy_arms(p_champion: float, p_challenger: float, n: int, seed: int) -> A.ABOutcomes:
    rng = np.random.default_rng(seed)
    return A.ABOutcomes(
        "accuracy",
        (rng.random(n) < p_champion).astype(float),
        (rng.random(n) < p_challenger).astype(float),
        versions={"champion": ["2"], "challenger": ["3"]},
        answered={"champion": n + 7, "challenger": n + 5},
    )


def error_arms(metric: str, scale_champion: float, scale_challenger: float, n: int, seed: int) -> A.ABOutcomes:
    rng = np.random.default_rng(seed)
    champion, challenger = rng.normal(0, scale_champion, n), rng.normal(0, scale_challenger, n)
    f = np.abs if metric == "abs_error" else np.square
    return A.ABOutcomes(metric, f(champion), f(challenger), versions={"champion": ["2"], "challenger": ["3"]})


CFG = ABTestSpec(samples_per_arm=1000, significance=0.05, min_effect=0.02)


def test_a_truly_better_challenger_wins_and_the_interval_holds_the_true_difference():
    result = A.decide(accuracy_arms(0.75, 0.85, 2000, seed=1), CFG, CHURN)
    assert result.decision == A.CHALLENGER_WINS and result.promote and result.winner_version == "3"
    assert result.ci_low < 0.10 < result.ci_high  # the true difference
    assert abs(result.effect - 0.10) < 0.03 and result.p_value < 1e-6
    assert (result.n_champion, result.n_challenger, result.test) == (2000, 2000, "two-proportion z-test")
    assert result.ci_low > CFG.min_effect - 0.02  # a clear win: the interval sits well above zero


def test_no_true_difference_is_inconclusive_and_keeps_the_champion():
    result = A.decide(accuracy_arms(0.8, 0.8, 2000, seed=2), CFG, CHURN)
    assert result.decision == A.INCONCLUSIVE and not result.promote and result.winner_version == "2"
    assert result.p_value >= CFG.significance and result.ci_low < 0 < result.ci_high
    assert "no significant difference" in result.reasons[0]


def test_a_truly_better_champion_wins():
    result = A.decide(accuracy_arms(0.85, 0.75, 2000, seed=3), CFG, CHURN)
    assert result.decision == A.CHAMPION_WINS and not result.promote and result.winner_version == "2"
    assert result.effect < 0 and result.ci_low < -0.10 < result.ci_high
    assert "champion is significantly better" in result.reasons[0]


def test_the_interval_covers_the_truth_and_equal_arms_rarely_win():
    """Over 400 simulated tests: the 95% interval covers the true difference about 95% of the
    time, and with equal arms the challenger is declared the winner at most ~2.5% of the time."""
    covered = sum(
        r.ci_low <= 0.05 <= r.ci_high
        for r in (A.decide(accuracy_arms(0.7, 0.75, 1500, s), CFG, CHURN) for s in range(400))
    )
    wins = sum(A.decide(accuracy_arms(0.7, 0.7, 1500, s), CFG, CHURN).promote for s in range(1000, 1400))
    assert 0.92 <= covered / 400 <= 0.98, covered
    assert wins / 400 <= 0.04, wins


def test_below_samples_per_arm_at_the_period_end_is_inconclusive_with_the_reason():
    cfg = CFG.model_copy(update={"samples_per_arm": 500})
    result = A.decide(accuracy_arms(0.6, 0.9, 300, seed=4), cfg, CHURN)
    assert result.decision == A.INCONCLUSIVE and not result.promote
    assert any("only 300 labelled outcomes for the champion of the 500" in r for r in result.reasons)
    assert any("only 300 labelled outcomes for the challenger" in r for r in result.reasons)
    assert result.effect > 0.2 and result.p_value < 1e-6  # the numbers are still reported


def test_an_arm_without_outcomes_is_inconclusive_without_a_test():
    empty = A.ABOutcomes("accuracy", np.ones(50), np.empty(0), versions={"champion": ["2"]})
    result = A.decide(empty, CFG.model_copy(update={"samples_per_arm": 10}), CHURN)
    assert (result.decision, result.p_value, result.test, result.challenger_value) == (
        A.INCONCLUSIVE,
        None,
        None,
        None,
    )
    assert (
        "too few outcomes" in result.reasons[-1] and "only 0 labelled outcomes for the challenger" in result.reasons[0]
    )


def test_significant_but_smaller_than_min_effect_is_inconclusive():
    result = A.decide(accuracy_arms(0.80, 0.81, 60_000, seed=5), CFG, CHURN)
    assert result.p_value < CFG.significance and 0 < result.effect < CFG.min_effect
    assert result.decision == A.INCONCLUSIVE and "less than ab_test.min_effect 0.02" in result.reasons[0]


@pytest.mark.parametrize("metric", ["abs_error", "squared_error"])
def test_regression_errors_lower_is_better(metric):
    cfg = CFG.model_copy(update={"metric": metric, "min_effect": 0.5})
    better = A.decide(error_arms(metric, 30.0, 20.0, 2000, seed=6), cfg, HOUSING)
    worse = A.decide(error_arms(metric, 20.0, 30.0, 2000, seed=7), cfg, HOUSING)
    assert better.decision == A.CHALLENGER_WINS and better.effect > 0 and better.test == "Welch's t-test"
    assert better.challenger_value < better.champion_value  # lower error, positive effect
    assert worse.decision == A.CHAMPION_WINS and worse.effect < 0
    true_gain = (30.0 - 20.0) * (np.sqrt(2 / np.pi) if metric == "abs_error" else 50.0)  # E|N(0,s)| or E[N^2]
    assert better.ci_low < true_gain < better.ci_high


def test_welch_matches_scipy():
    from scipy import stats

    o = error_arms("abs_error", 10.0, 9.0, 300, seed=8)
    result = A.decide(o, CFG.model_copy(update={"metric": "abs_error", "samples_per_arm": 100}), HOUSING)
    ref = stats.ttest_ind(o.challenger, o.champion, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert result.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert (result.ci_low, result.ci_high) == (pytest.approx(-ci.high), pytest.approx(-ci.low))  # gain = -(b - a)


def test_row_outcomes_from_log_rows():
    from sklearn.metrics import log_loss

    rows = pd.DataFrame(
        {"prediction": [1, 0, 1, 0], "score": [0.9, 0.2, 0.6, 0.4], CHURN.label: ["1", 0, 0.0, True]}
    )  # labels as a CSV or a join may hand them over: "1", 0.0 and 1 are one class
    assert A.row_outcomes(rows.iloc[:3], "accuracy", CHURN).tolist() == [1.0, 1.0, 0.0]
    y = [1, 0, 0]
    assert A.row_outcomes(rows.iloc[:3], "log_loss", CHURN).mean() == pytest.approx(log_loss(y, [0.9, 0.2, 0.6]))
    reg = pd.DataFrame({"prediction": [100.0, 250.0], "score": [100.0, 250.0], HOUSING.label: [110.0, 240.0]})
    assert A.row_outcomes(reg, "abs_error", HOUSING).tolist() == [10.0, 10.0]
    assert A.row_outcomes(reg, "squared_error", HOUSING).tolist() == [100.0, 100.0]


def test_the_metric_must_fit_the_task():
    assert A.outcome_metric(ABTestSpec(), CHURN) == "accuracy"
    assert A.outcome_metric(ABTestSpec(), HOUSING) == "abs_error"
    with pytest.raises(ValueError, match="'abs_error' does not fit the classification task.*accuracy, log_loss"):
        A.outcome_metric(ABTestSpec(metric="abs_error"), CHURN)
    with pytest.raises(ValueError, match="'accuracy' does not fit the regression task"):
        A.outcome_metric(ABTestSpec(metric="accuracy"), HOUSING)


def test_the_report_table_and_dict():
    result = A.decide(accuracy_arms(0.75, 0.85, 2000, seed=1), CFG, CHURN)
    table = result.table()
    assert "| A/B test | champion v2 | challenger v3 |" in table
    assert "| labelled outcomes (of 1000 wanted) | 2000 | 2000 |" in table
    assert "| answered requests | 2007 | 2005 |" in table and "**challenger**" in table and "95% CI" in table
    d = json.loads(json.dumps(result.to_dict()))
    assert d["promote"] and d["winner_version"] == "3" and d["effect"] == pytest.approx(result.effect)
    assert "challenger v3 wins" in d["summary"] and "n=2000/2000" in d["summary"]
    assert result.mlflow_metrics()["ab_promoted"] == 1.0 and "ab_p_value" in result.mlflow_metrics()


# -- reading a real store ---------------------------------------------------------------------------------
def _log_rows(ids, variant, version, when, correct_every: int) -> pd.DataFrame:
    """Prediction-log rows: the prediction is the entity's true label except every `correct_every`th."""
    truth = np.asarray(ids) % 2
    pred = np.where(np.arange(len(ids)) % correct_every == 0, 1 - truth, truth)
    return pd.DataFrame(
        {
            "request_id": [f"{variant}-{version}-{i}" for i in ids],
            "ts": pd.to_datetime([when] * len(ids), utc=True),
            CHURN.timestamp: pd.to_datetime([when - timedelta(minutes=1)] * len(ids), utc=True),
            CHURN.entity_key: pd.array(ids, dtype="Int64"),
            "prediction": pred,
            "score": np.where(pred == 1, 0.8, 0.2),
            "model_name": CHURN.model_name,
            "model_version": version,
            "variant": variant,
        }
    )


def test_ab_outcomes_reads_the_window_the_arms_and_the_labels(tmp_path):
    from include.mlops import layout
    from include.mlops.storage import ObjectStore

    store = ObjectStore(f"file://{tmp_path / 'store'}")
    start = datetime(2026, 11, 3, 10, tzinfo=UTC)
    inside, before = start + timedelta(hours=1), start - timedelta(hours=1)
    log = pd.concat(
        [
            _log_rows(range(1000, 1100), "champion", "2", inside, correct_every=4),  # 75% right
            _log_rows(range(2000, 2100), "challenger", "3", inside, correct_every=10),  # 90% right
            _log_rows(range(3000, 3040), "challenger", "4", inside, correct_every=10),  # another version
            _log_rows(range(4000, 4050), "shadow", "3", inside, correct_every=10),  # never an answer
            _log_rows(range(5000, 5050), "pinned", "3", inside, correct_every=10),  # deploy checks
            _log_rows(range(6000, 6050), "champion", "2", before, correct_every=10),  # before the test
        ],
        ignore_index=True,
    )
    store.put_parquet(layout.online_predictions_key(CHURN, start.date()), log)
    batch = _log_rows(range(2000, 2100), "champion", "2", inside, correct_every=2)  # batch scoring: no arm
    store.put_parquet(layout.batch_predictions_key(CHURN, start.date()), batch)
    labelled = log[~log[CHURN.entity_key].between(2090, 2099)]  # 10 challenger rows have no label yet
    labels = pd.DataFrame(
        {
            CHURN.entity_key: labelled[CHURN.entity_key].astype("int64"),
            CHURN.timestamp: labelled[CHURN.timestamp],
            CHURN.label: (labelled[CHURN.entity_key].astype("int64") % 2).to_numpy(),
        }
    )
    store.put_parquet(layout.labels_landing_key(CHURN, start.date() + timedelta(days=1)), labels)
    until, later = start + timedelta(hours=2), start + timedelta(days=2)

    versions = {"champion": "2", "challenger": "3"}
    assert W.labelled_per_arm(store, CHURN, start, until, versions=versions) == {"champion": 0, "challenger": 0}
    assert W.labelled_per_arm(store, CHURN, start, later, versions=versions) == {"champion": 100, "challenger": 90}
    out = W.ab_outcomes(store, CHURN, start.timestamp(), later.timestamp(), versions=versions)
    assert (len(out.champion), len(out.challenger), out.metric) == (100, 90, "accuracy")
    assert out.champion.mean() == pytest.approx(0.75) and out.challenger.mean() == pytest.approx(0.9)
    assert out.versions == {"champion": ["2"], "challenger": ["3"]}
    assert out.answered == {"champion": 100, "challenger": 100}
    every = W.ab_outcomes(store, CHURN, start, later)  # no versions named: both challenger versions count
    assert every.versions["challenger"] == ["3", "4"] and len(every.challenger) == 130
    assert every.answered == {"champion": 100, "challenger": 140}
    result = A.decide(out, CFG.model_copy(update={"samples_per_arm": 50}), CHURN)
    assert result.decision == A.CHALLENGER_WINS and result.champion_version == "2"


def test_the_polls_of_a_wait_read_each_object_once_and_count_as_a_fresh_read(tmp_path, monkeypatch):
    from include.mlops import layout
    from include.mlops.storage import ObjectStore

    read: list[str] = []
    get_parquet = ObjectStore.get_parquet
    monkeypatch.setattr(
        ObjectStore, "get_parquet", lambda self, key, **kw: read.append(key) or get_parquet(self, key, **kw)
    )
    store = ObjectStore(f"file://{tmp_path / 'store'}")
    start = datetime(2026, 11, 3, 23, 30, tzinfo=UTC)  # the test runs over midnight
    versions = {"champion": "2", "challenger": "3"}
    kept = W.ReadOnceStore()

    def poll(until: datetime) -> list[str]:
        """The kept store's count equals a fresh read's; the objects this poll read."""
        read.clear()
        counted = W.labelled_per_arm(kept.over(store), CHURN, start, until, versions=versions)
        new = list(read)
        assert counted == W.labelled_per_arm(store, CHURN, start, until, versions=versions)
        return new

    def deliver(ids, variant, when, name):
        rows = _log_rows(ids, variant, versions[variant], when, correct_every=4)
        log_key = layout.online_predictions_key(CHURN, when.date(), name)
        store.put_parquet(log_key, rows)
        labels = rows[[CHURN.entity_key, CHURN.timestamp]].assign(**{CHURN.label: np.asarray(ids) % 2})
        label_key = layout.labels_landing_key(CHURN, when.date(), f"{name}.parquet")
        store.put_parquet(label_key, labels.astype({CHURN.entity_key: "int64"}))
        return log_key, label_key

    first = deliver(range(100), "champion", start + timedelta(minutes=5), "a")
    assert sorted(poll(start + timedelta(minutes=10))) == sorted(first)
    assert poll(start + timedelta(minutes=20)) == []  # nothing new: nothing read
    second = deliver(range(200, 260), "challenger", start + timedelta(minutes=40), "b")  # the next day
    third = deliver(range(300, 340), "champion", start + timedelta(minutes=45), "c")
    assert sorted(poll(start + timedelta(minutes=50))) == sorted([*second, *third])
    assert W.labelled_per_arm(kept, CHURN, start, start + timedelta(minutes=50), versions=versions) == {
        "champion": 140,
        "challenger": 60,
    }
    assert kept.reads == 6 and {first[1], second[1], third[1]} <= set(kept.frames)  # the label files, as read
