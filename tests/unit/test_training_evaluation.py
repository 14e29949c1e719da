from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from include.mlops.constants import BINARY_METRICS
from include.mlops.data.generator import generate_day
from include.mlops.evaluation import comparison as C
from include.mlops.evaluation import gate as G
from include.mlops.evaluation import metrics as E
from include.mlops.features.build import build_features, model_features
from include.mlops.spec import load_spec, parse_spec
from include.mlops.training import fit as T


@pytest.fixture(scope="module")
def spec():
    return load_spec("churn")


@pytest.fixture(scope="module")
def frame(spec):
    days = []
    for i in range(5):
        ev, lab = generate_day(spec, date(2026, 10, 1) + timedelta(days=i), rows=400)
        f = build_features(ev, spec)
        f[spec.label] = lab[spec.label].to_numpy()
        days.append(f)
    return pd.concat(days, ignore_index=True)


def test_build_features_casts_and_derives(spec):
    ev, _ = generate_day(spec, date(2026, 10, 1), rows=50)
    f = build_features(ev, spec)
    assert list(f.columns) == [spec.entity_key, spec.timestamp, *model_features(spec)]
    expected = ev["total_charges"] / (ev["tenure_months"] + 1)
    assert np.allclose(f["charge_per_tenure_month"], expected)
    assert f["tenure_months"].dtype == "float64"


def test_time_split_has_no_leakage(spec, frame):
    train, hold = T.time_split(frame, spec, 2)
    assert train[spec.timestamp].max() < hold[spec.timestamp].min()
    assert len(train) + len(hold) == len(frame)
    assert hold[spec.timestamp].dt.normalize().nunique() == 2
    with pytest.raises(T.TrainingDataError, match="more than 5 days"):
        T.time_split(frame, spec, 5)


def test_data_hash_is_stable_and_sensitive(frame):
    assert T.data_hash(frame) == T.data_hash(frame.copy())
    changed = frame.copy()
    changed.iloc[0, 3] += 1
    assert T.data_hash(changed) != T.data_hash(frame)


@pytest.mark.parametrize("family", ["logistic_regression", "random_forest", "hist_gradient_boosting"])
def test_every_family_fits_and_beats_chance(spec, frame, family):

    raw = {
        **spec.to_dict(),
        "model": {
            **spec.to_dict()["model"],
            "family": family,
            "params": {},
            "search": {"n_iter": 1, "cv_folds": 2, "space": {}},
        },
    }
    s = parse_spec(raw)
    train, hold = T.time_split(frame, s, 1)
    model, result = T.fit(s, train)
    assert len(result.candidates) == 1
    auc = E.metrics(hold[s.label], E.predict_scores(model, hold[model_features(s)], s), s)["roc_auc"]
    assert auc > 0.62
    # unknown categories and missing values at scoring time must not crash the pipeline
    odd = hold[model_features(s)].head(5).copy()
    odd.loc[odd.index[0], "plan"] = "brand_new_plan"
    odd.loc[odd.index[1], "tenure_months"] = np.nan
    assert np.isfinite(E.predict_scores(model, odd, s)).all()


def test_search_stops_at_budget(spec, frame):

    raw = {
        **spec.to_dict(),
        "model": {
            **spec.to_dict()["model"],
            "search": {**spec.to_dict()["model"]["search"], "n_iter": 6, "budget_seconds": 0},
        },
    }
    s = parse_spec(raw)
    res = T.search(s, frame[model_features(s)], frame[s.label])
    assert len(res.candidates) == 1 and res.stopped_by_budget


def _gate(spec, ch, champ=None, slices=None, champ_slices=None, nans=0):
    return G.gate(spec, ch, slices or {}, nans, champ, champ_slices)


def test_gate_minimums_and_nan(spec):
    good = {"roc_auc": 0.8, "f1": 0.5}
    assert _gate(spec, good).passed
    low = _gate(spec, {"roc_auc": 0.6, "f1": 0.5})
    assert not low.passed and any("minimum roc_auc" in r for r in low.reasons)
    assert not _gate(spec, good, nans=3).passed


def test_gate_regression_overall_and_by_slice(spec):
    ch = {"roc_auc": 0.80, "f1": 0.5}
    assert _gate(spec, ch, champ={"roc_auc": 0.81, "f1": 0.5}).passed  # within 0.02 tolerance
    worse = _gate(spec, ch, champ={"roc_auc": 0.85, "f1": 0.5})
    assert not worse.passed and "regression of roc_auc" in worse.reasons[0]
    sl = _gate(
        spec,
        ch,
        champ={"roc_auc": 0.80, "f1": 0.5},
        slices={"plan=basic": {"roc_auc": 0.70}},
        champ_slices={"plan=basic": {"roc_auc": 0.80}},
    )
    assert not sl.passed and "slice plan=basic" in sl.reasons[0]
    table = sl.table()
    assert "KEEP CHAMPION" in table and "FAIL" in table


def test_gate_lower_is_better_metrics():
    spec = load_spec("housing")

    raw = {
        **spec.to_dict(),
        "model": {**spec.to_dict()["model"], "primary_metric": "rmse"},
        "gate": {"minimums": {"rmse": 50}, "max_regression": 1},
    }
    s = parse_spec(raw)
    assert G.gate(s, {"rmse": 40}, {}, 0, {"rmse": 39.5}).passed
    assert not G.gate(s, {"rmse": 45}, {}, 0, {"rmse": 40}).passed
    assert not G.gate(s, {"rmse": 60}, {}, 0, None).passed


def test_metrics_cover_the_issue_lists(spec):
    m = E.metrics([0, 1, 1, 0], [0.1, 0.8, 0.4, 0.3], spec)
    assert set(m) == set(BINARY_METRICS)  # every metric a binary gate may name
    r = E.metrics([1.0, 2.0, 3.0], [1.1, 2.1, 2.7], load_spec("housing"))
    assert set(r) == {"rmse", "mae", "r2"}


def _lr(spec, drop=()):
    raw = spec.to_dict()
    raw["model"] = {**raw["model"], "family": "logistic_regression", "params": {}}
    raw["features"] = {k: v for k, v in raw["features"].items() if k not in drop}
    return parse_spec(raw)


def test_champion_load_or_scoring_errors_fail_the_gate(spec, frame):
    s = _lr(spec)
    model = T.build_pipeline(s).fit(frame[model_features(s)], frame[s.label])

    def registry_down(uri):
        raise RuntimeError(f"API request to {uri} failed with error code 500")

    with pytest.raises(G.GateError, match=r"cannot load the champion churn_model v3 .*error code 500"):
        C.score_version(s, "3", frame, registry_down, role="champion")
    broken = frame.assign(tenure_months="not a number")  # the champion cannot score these rows
    with pytest.raises(G.GateError, match=r"champion churn_model v3 could not score the holdout"):
        C.score_version(s, "3", broken, lambda uri: model, role="champion")
    got = C.score_version(s, "3", frame, lambda uri: model, role="champion")
    assert got.version == "3" and 0.6 < got.metrics["roc_auc"] < 1


def test_champion_on_other_features_scores_what_it_can(spec, frame):
    """A champion trained without a feature the spec added scores the same rows with its own
    columns; one that needs a feature the holdout lacks says so (the feature_change rule)."""
    narrow = _lr(spec, drop=("region",))
    old = T.build_pipeline(narrow).fit(frame[model_features(narrow)], frame[narrow.label])
    got = C.score_version(_lr(spec), "2", frame, lambda uri: old, role="champion")
    assert isinstance(got, C.VersionScore)
    full = _lr(spec)
    wide = T.build_pipeline(full).fit(frame[model_features(full)], frame[full.label])
    why = C.score_version(narrow, "2", frame.drop(columns=["region"]), lambda uri: wide, role="champion")
    assert why == "v2 was trained on features this holdout does not have (region): the spec's features changed"
