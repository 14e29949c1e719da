"""The gate's slow-decay guard and its paired bootstrap, on small arrays (no MLflow here; the
real registry and models are in tests/integration/test_evaluate_faults.py)."""

from __future__ import annotations

import numpy as np
import pytest

from include.mlops.evaluation import comparison as C
from include.mlops.evaluation import gate as G
from include.mlops.evaluation import metrics as E
from include.mlops.scores import Scored
from include.mlops.spec import SpecError, load_spec, parse_spec


def _spec(**gate):
    base = load_spec("churn").to_dict()
    return parse_spec({**base, "gate": {**base["gate"], "slices": [], "minimums": {}, **gate}})


def _scored(p):
    p = np.asarray(p, dtype=float)
    return Scored((p >= 0.5).astype(int), p, np.column_stack([1 - p, p]), [0, 1])


def _pair(n, noise, seed=0):
    """Labels, a good model's scores and a model with `noise` more added to them."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    good = 1 / (1 + np.exp(-(2.0 * (y - 0.5) + rng.normal(0, 1.0, n))))
    worse = 1 / (1 + np.exp(-(2.0 * (y - 0.5) + rng.normal(0, 1.0, n) + rng.normal(0, noise, n))))
    return y, _scored(good), _scored(worse)


def test_rank_auc_matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.random(500) + 0.3 * y, 1)  # many ties
    assert E._rank_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_bootstrap_is_seeded_and_centred_on_the_difference():
    spec = _spec()
    y, good, worse = _pair(400, 1.5)
    a = E.paired_bootstrap(y, worse, good, spec, 200, 0.95)
    b = E.paired_bootstrap(y, worse, good, spec, 200, 0.95)
    assert a == b  # same rows, same seed, same interval
    full = E.metrics(y, good, spec)["roc_auc"] - E.metrics(y, worse, spec)["roc_auc"]
    assert a.worse == pytest.approx(full)
    assert a.low < a.worse < a.high and a.resamples == 200
    same = E.paired_bootstrap(y, good, good, spec, 200, 0.95)
    assert same.low == same.high == same.worse == 0.0  # paired: a model against itself never differs
    assert E.paired_bootstrap(y, worse, good, spec, 0, 0.95) is None


def test_small_holdout_regression_is_judged_by_its_confidence_bound():
    """On 80 rows a bare difference above max_regression is noise the bootstrap does not call a
    regression; on 4,000 rows the same kind of model is refused."""
    spec = _spec(max_regression=0.02)
    spec_bare = _spec(max_regression=0.02, bootstrap_resamples=0)
    y, good, worse = _pair(80, 0.5, seed=5)
    ch, champ = E.metrics(y, worse, spec), E.metrics(y, good, spec)
    assert 0.02 < champ["roc_auc"] - ch["roc_auc"]  # the bare difference is beyond the tolerance
    ci = E.paired_bootstrap(y, worse, good, spec, 300, 0.95)
    assert ci.low <= 0.02 < ci.worse
    small = G.gate(spec, ch, {}, 0, champ, {}, champion_version="3", champion_ci=ci)
    assert small.passed, small.table()
    assert not G.gate(spec_bare, ch, {}, 0, champ, {}).passed
    assert "paired bootstrap" in small.table() and "champion v3" in small.table()

    y, good, worse = _pair(4000, 0.9, seed=5)
    ci = E.paired_bootstrap(y, worse, good, spec, 300, 0.95)
    assert ci.low > 0.02
    big = G.gate(spec, E.metrics(y, worse, spec), {}, 0, E.metrics(y, good, spec), {}, champion_ci=ci)
    assert not big.passed and "regression of roc_auc vs champion" in big.reasons[0]


def test_reference_row_refuses_a_slide_the_champion_check_lets_through():
    spec = _spec(max_regression=0.02, cumulative_max_regression=0.03)
    ch = {"roc_auc": 0.74}
    ref = C.Reference("1", 0.78, None, ["6", "5", "4", "3", "2", "1"])
    d = G.gate(spec, ch, {}, 0, {"roc_auc": 0.75}, {}, champion_version="6", reference=ref)
    assert not d.passed
    assert [r.split(":")[0] for r in d.reasons] == ["regression of roc_auc vs reference v1"]
    table = d.table()
    assert "vs reference v1" in table and "best of v6, v5, v4, v3, v2, v1: v1" in table
    # within the budget; the budget defaults to max_regression
    assert G.gate(spec, {"roc_auc": 0.76}, {}, 0, {"roc_auc": 0.76}, {}, reference=ref).passed
    assert not G.gate(_spec(), {"roc_auc": 0.755}, {}, 0, {"roc_auc": 0.76}, {}, reference=ref).passed
    # no earlier champion scores the holdout: said in the table, not a refusal
    note = G.gate(spec, ch, {}, 0, None, None, reference="no earlier champion can score this holdout")
    assert note.passed and "no earlier champion" in note.table()


def test_champion_that_cannot_score_follows_the_feature_change_rule():
    why = "v4 was trained on features this holdout does not have (plan): the spec's features changed"
    ok = G.gate(_spec(), {"roc_auc": 0.7}, {}, 0, champion_version="4", champion_unscorable=why)
    assert ok.passed and "gate.feature_change: minimums" in ok.table()
    refused = G.gate(
        _spec(feature_change="refuse"), {"roc_auc": 0.7}, {}, 0, champion_version="4", champion_unscorable=why
    )
    assert not refused.passed and "champion v4 cannot score this holdout" in refused.reasons[0]


def _entry(at, action, frm, to, status=None):
    e = {"at": at, "model": "m", "action": action, "from_version": frm, "to_version": to, "reason": "", "run_id": "r"}
    if status is not None:
        e["status"] = status
    return e


def test_champion_history_from_old_and_new_ledger_entries():
    ledger = [
        _entry("2026-10-01T00", "promote", None, "1"),  # before statuses existed
        _entry("2026-10-02T00", "promote", "1", "2", "done"),
        _entry("2026-10-03T00", "promote", "2", "3", "done"),
        _entry("2026-10-03T01", "rollback_after_failed_check", "3", "2", "done"),  # 3 failed its check
        _entry("2026-10-04T00", "promote", "2", "4", "done"),
        _entry("2026-10-05T00", "promote", "4", "5", "pending"),  # not (yet) done: ignored
    ]
    recent, baseline = C.champion_history(list(reversed(ledger)))  # the order read does not matter
    assert recent == ["4", "2", "1"] and baseline == "1"
    assert C.reference_versions(_spec(reference_champions=2), ledger, "4") == ["4", "2", "1"]
    assert C.reference_versions(_spec(reference_champions=0), ledger, "4") == []
    assert C.was_champion(ledger, "3") and not C.was_champion(ledger, "5")
    assert C.champion_before(ledger, "4") == "2" and C.champion_before(ledger, "1") is None

    # a person's rollback sets the baseline: the slide is measured from what they chose
    ledger.append(_entry("2026-10-06T00", "rollback", "4", "2", "done"))
    recent, baseline = C.champion_history(ledger)
    assert recent == ["2", "1"] and baseline == "2"


@pytest.mark.parametrize(
    "gate, match",
    [
        ({"bootstrap_resamples": 10}, "at least 50"),
        ({"confidence": 1.0}, "confidence"),
        ({"reference_champions": -1}, "reference_champions"),
        ({"cumulative_max_regression": -0.1}, "cumulative_max_regression"),
        ({"feature_change": "ignore"}, "feature_change"),
    ],
)
def test_gate_fields_are_validated(gate, match):
    with pytest.raises(SpecError, match=match):
        _spec(**gate)
