from datetime import date, timedelta

import pytest

from include.mlops.data.generator import Scenario, events_key, generate_day, labels_key, write_days
from include.mlops.spec import load_spec
from include.mlops.storage import ObjectStore

DAY = date(2026, 10, 5)


@pytest.fixture(scope="module")
def churn():
    return load_spec("churn")


def test_churn_day_shape_rate_and_determinism(churn):
    events, labels = generate_day(churn, DAY, rows=5000)
    assert list(events.columns) == churn.raw_columns
    assert 12 <= len(churn.features) <= 20
    assert 0.10 <= labels[churn.label].mean() <= 0.25
    assert not events.duplicated([churn.entity_key, churn.timestamp]).any()
    again, _ = generate_day(churn, DAY, rows=5000)
    assert events.equals(again)
    other, _ = generate_day(churn, DAY + timedelta(days=1), rows=5000)
    assert not events.equals(other)


def test_relationship_is_learnable_but_noisy(churn):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    ev, lab = generate_day(churn, DAY, rows=6000)
    x = ev[["tenure_months", "support_calls_30d", "late_payments_12m"]].assign(m2m=(ev["contract"] == "month_to_month"))
    model = LogisticRegression(max_iter=500).fit(x[:4000], lab[churn.label][:4000])
    auc = roc_auc_score(lab[churn.label][4000:], model.predict_proba(x[4000:])[:, 1])
    assert 0.65 < auc < 0.95


def test_covariate_drift_moves_inputs_not_before_start(churn):
    sc = Scenario("covariate_drift", DAY)
    before, _ = generate_day(churn, DAY - timedelta(days=1), sc, rows=3000)
    clean, _ = generate_day(churn, DAY - timedelta(days=1), rows=3000)
    assert before.equals(clean)
    after, _ = generate_day(churn, DAY, sc, rows=3000)
    assert after["monthly_charges"].mean() > 1.2 * clean["monthly_charges"].mean()
    assert after["support_calls_30d"].mean() > 1.5 * clean["support_calls_30d"].mean()


def test_concept_drift_changes_labels_not_inputs_distribution(churn):
    clean_ev, clean_lab = generate_day(churn, DAY, rows=4000)
    ev, lab = generate_day(churn, DAY, Scenario("concept_drift", DAY), rows=4000)
    assert abs(ev["monthly_charges"].mean() - clean_ev["monthly_charges"].mean()) < 3
    m2m = ev["contract"] == "month_to_month"
    # contract stops mattering: churn rates of month-to-month and others converge
    gap_after = lab[churn.label][m2m].mean() - lab[churn.label][~m2m].mean()
    gap_before = (
        clean_lab[churn.label][clean_ev["contract"] == "month_to_month"].mean()
        - clean_lab[churn.label][clean_ev["contract"] != "month_to_month"].mean()
    )
    assert gap_before > 0.1 and abs(gap_after) < 0.05


@pytest.mark.parametrize(
    "name, check",
    [
        ("schema_missing", lambda df, s: s.categorical_features[0] not in df.columns),
        ("schema_renamed", lambda df, s: f"{s.numeric_features[1]}_renamed" in df.columns),
        ("schema_retyped", lambda df, s: df[s.numeric_features[1]].dtype == object),
        (
            "corrupted",
            lambda df, s: (
                df[s.numeric_features[0]].isna().sum() > 0 and (df[s.categorical_features[0]] == "??unknown??").any()
            ),
        ),
    ],
)
def test_scenarios(churn, name, check):
    ev, _ = generate_day(churn, DAY, Scenario(name, DAY), rows=1000)
    assert check(ev, churn)


def test_labels_arrive_late_as_their_own_feed(churn, tmp_path):
    store = ObjectStore(f"file://{tmp_path}")
    write_days(store, churn, DAY, 2, rows=100)
    assert store.exists(events_key(churn, DAY))
    assert not store.exists(labels_key(churn, DAY))
    late = store.get_parquet(labels_key(churn, DAY + timedelta(days=churn.label_delay_days)))
    assert set(late.columns) == {churn.entity_key, churn.timestamp, churn.label}
    assert (late[churn.timestamp].dt.date == DAY).all()


def test_regression_dataset_generates(tmp_path):
    spec = load_spec("housing")
    ev, lab = generate_day(spec, DAY, rows=500)
    assert list(ev.columns) == spec.raw_columns
    assert lab[spec.label].std() > 10
