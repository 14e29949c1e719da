"""Canary step verdicts and the shadow report on made-up but realistic live figures: each rule
passes and fails, waiting versus a passed deadline under both `on_deadline` values, and the
labelled metric judged only past `min_labelled`."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from include.mlops.delivery.analysis import judge_canary_step, paired_rows, score_distance, shadow_report
from include.mlops.delivery.live import Traffic
from include.mlops.spec import load_spec
from include.mlops.spec_sections import CanarySpec, ShadowSpec


@pytest.fixture(scope="module")
def spec():
    return load_spec("churn")  # binary, primary metric roc_auc


CFG = CanarySpec(
    min_requests=100,
    max_error_rate_increase=0.01,
    max_latency_ratio=1.5,
    max_score_distance=0.3,
    max_metric_drop=0.05,
    min_labelled=30,
)


def traffic(variant: str, requests: int, errors: int = 0, p95: float = 12.0, version: str = "") -> Traffic:
    version = version or ("2" if variant == "challenger" else "1")
    return Traffic(version, variant, requests, errors, errors / requests if requests else None, p95 / 2, p95, p95 / 2.5)


def scores(n: int, shift: float = 0.0, seed: int = 0) -> np.ndarray:
    """Churn-like scores: most customers low, a tail of likely churners."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.beta(2, 6, n) + shift, 0, 1)


CHAMP = traffic("champion", 2_400, errors=2, p95=11.0)
CHAMP_SCORES = scores(2_400, seed=1)


def judge(canary: Traffic, canary_scores=None, labelled=None, cfg=CFG, waited_out=False, spec=None):
    canary_scores = scores(canary.requests, seed=2) if canary_scores is None else canary_scores
    return judge_canary_step(2, 0.25, canary, CHAMP, canary_scores, CHAMP_SCORES, labelled, cfg, spec, waited_out)


def test_a_canary_like_the_champion_passes_every_rule(spec):
    v = judge(traffic("challenger", 600, errors=1, p95=12.5), spec=spec)
    assert v.decision == "pass", v.table()
    by = {r["metric"]: r for r in v.rows}
    assert by["live requests"]["ok"] and by["error rate"]["ok"] and by["p95 latency (ms)"]["ok"]
    assert by["p95 latency (ms)"]["ratio"] == pytest.approx(12.5 / 11.0, abs=1e-3)
    assert by["score distance (KS)"]["ok"] and by["score distance (KS)"]["canary"] < 0.1
    assert by["labelled rows (for roc_auc)"]["ok"] is None  # no labels yet: not judged, not failed
    assert "| metric | canary | champion | limit | ok |" in v.table() and "canary step 2 (25% of entities)" in v.table()
    d = v.to_dict()
    assert d["decision"] == "pass" and d["rows"] == v.rows and d["share"] == 0.25


def test_error_rate_above_the_champions_by_more_than_the_limit_fails(spec):
    ok = judge(traffic("challenger", 600, errors=6), spec=spec)  # 1.0% vs 0.08%: +0.92 points
    assert ok.decision == "pass", ok.table()
    bad = judge(traffic("challenger", 600, errors=12), spec=spec)  # 2.0%
    assert bad.decision == "fail"
    assert any("error rate 2.00% (12 of 600)" in r and "0.08% (2 of 2400)" in r for r in bad.reasons), bad.reasons
    assert "| error rate | 2.00% | 0.08% | ≤ champion + 0.01 | **no** |" in bad.table()


def test_latency_ratio_over_the_limit_fails_and_is_not_judged_on_a_handful(spec):
    assert judge(traffic("challenger", 600, p95=16.0), spec=spec).decision == "pass"  # 1.45x
    slow = judge(traffic("challenger", 600, p95=45.0), spec=spec)
    assert slow.decision == "fail" and any("4.09× the champion's 11.0 ms" in r for r in slow.reasons), slow.reasons
    few = CanarySpec(**{**CFG.model_dump(), "min_requests": 3, "on_deadline": "judge"})
    v = judge(traffic("challenger", 4, p95=90.0), cfg=few, spec=spec)
    row = next(r for r in v.rows if r["metric"] == "p95 latency (ms)")
    assert row["ok"] is None and any("latency not judged: 4 and 2400 requests" in r for r in v.reasons)


def test_score_distributions_apart_fail_on_the_ks_distance(spec):
    assert score_distance(scores(500, seed=3), CHAMP_SCORES) < 0.1
    shifted = judge(traffic("challenger", 600), canary_scores=scores(600, shift=0.35, seed=3), spec=spec)
    assert shifted.decision == "fail"
    assert any("KS distance" in r and "> 0.3" in r for r in shifted.reasons), shifted.reasons
    assert score_distance([0.1, 0.2], CHAMP_SCORES) is None  # too few to judge


def test_too_few_requests_waits_then_the_deadline_rule_decides(spec):
    few = traffic("challenger", 40)
    waiting = judge(few, spec=spec)
    assert waiting.decision == "wait" and waiting.reasons == ["waiting: 40 of 100 live requests so far"]
    rollback = judge(few, waited_out=True, spec=spec)  # on_deadline: rollback (the default)
    assert rollback.decision == "fail"
    assert rollback.reasons == ["only 40 of 100 live requests by the deadline (on_deadline: rollback)"]
    cfg = CanarySpec(**{**CFG.model_dump(), "on_deadline": "judge"})
    judged = judge(few, cfg=cfg, waited_out=True, spec=spec)
    assert judged.decision == "pass" and "judged on 40 of 100 live requests" in judged.reasons[0]
    judged_bad = judge(traffic("challenger", 40, errors=4), cfg=cfg, waited_out=True, spec=spec)
    assert judged_bad.decision == "fail"
    none = judge(traffic("challenger", 0), canary_scores=[], cfg=cfg, waited_out=True, spec=spec)
    assert none.decision == "fail" and "no live request by the deadline" in none.reasons[0]


def labelled_rows(n_canary: int, n_champion: int, canary_skill: float, seed: int = 0) -> pd.DataFrame:
    """Logged rows with their arrived labels: scores that separate churners with some skill."""
    rng = np.random.default_rng(seed)
    parts = []
    for variant, n, skill in (("challenger", n_canary, canary_skill), ("champion", n_champion, 0.35)):
        y = rng.random(n) < 0.3
        s = np.clip(0.3 + skill * (y - 0.3) + rng.normal(0, 0.15, n), 0.001, 0.999)
        parts.append(pd.DataFrame({"variant": variant, "score": s, "prediction": (s >= 0.5).astype(int),
                                   "churned": y.astype(int)}))  # fmt: skip
    return pd.concat(parts, ignore_index=True)


def test_the_labelled_metric_is_judged_only_past_min_labelled(spec):
    canary = traffic("challenger", 600)
    worse = labelled_rows(20, 400, canary_skill=0.0)  # no skill at all, but only 20 labelled rows
    v = judge(canary, labelled=worse, spec=spec)
    assert v.decision == "pass" and any(
        "roc_auc not judged yet: 20 and 400 labelled rows (needs 30" in r for r in v.reasons
    )
    worse = labelled_rows(200, 400, canary_skill=0.0)
    v = judge(canary, labelled=worse, spec=spec)
    row = next(r for r in v.rows if r["metric"] == "roc_auc")
    assert v.decision == "fail" and row["ok"] is False and row["champion"] > 0.8 and row["canary"] < 0.65, v.table()
    same = judge(canary, labelled=labelled_rows(200, 400, canary_skill=0.35, seed=1), spec=spec)
    assert same.decision == "pass", same.table()


def test_regression_metric_direction_lower_is_better():
    spec = load_spec("housing")  # regression: primary r2 (higher is better); rmse would be lower
    cfg = CanarySpec(**{**CFG.model_dump(), "min_labelled": 10})
    rng = np.random.default_rng(0)
    y = rng.normal(300, 80, 100)
    label = spec.label
    rows = pd.concat(
        [
            pd.DataFrame({"variant": "champion", "score": y + rng.normal(0, 20, 100), label: y}),
            pd.DataFrame({"variant": "challenger", "score": y + rng.normal(0, 90, 100), label: y}),
        ]
    )
    v = judge_canary_step(1, 0.05, traffic("challenger", 600), CHAMP, y, y, rows, cfg, spec, False)
    assert v.decision == "fail" and any(spec.primary_metric in r and "worse by" in r for r in v.reasons), v.table()


# -- shadow --------------------------------------------------------------------------------------------------
SHADOW_CFG = ShadowSpec(min_requests=100, min_agreement=0.9, max_mean_score_diff=0.1, max_latency_ratio=2.0,
                        max_error_rate=0.01)  # fmt: skip


def shadow_log(n: int, flip_share: float = 0.0, noise: float = 0.02, seed: int = 0) -> pd.DataFrame:
    """The window's log: the champion's answer and the shadow's score for each request."""
    rng = np.random.default_rng(seed)
    champ = scores(n, seed=seed)
    shadow = np.clip(champ + rng.normal(0, noise, n), 0, 1)
    flip = rng.random(n) < flip_share
    shadow[flip] = 1 - shadow[flip]
    rid = [f"req-{i}" for i in range(n)]
    rows = [
        pd.DataFrame(
            {"request_id": rid, "variant": "champion", "score": champ, "prediction": (champ >= 0.5).astype(int)}
        ),
        pd.DataFrame(
            {"request_id": rid, "variant": "shadow", "score": shadow, "prediction": (shadow >= 0.5).astype(int)}
        ),
    ]
    return pd.concat(rows, ignore_index=True).sample(frac=1, random_state=seed)  # the log's order is not the pairs'


def shadow_traffic(rows: int, errors: int = 0, p95: float = 3.0) -> Traffic:
    return Traffic(
        "2", "shadow", rows, errors, errors / (rows + errors) if rows + errors else None, p95 / 2, p95, p95 / 2
    )


CHAMP_CALLS = Traffic("1", "champion", 800, 0, 0.0, 1.2, 2.5, 1.4)


def test_a_shadow_that_agrees_passes_and_reports_its_figures(spec):
    rep = shadow_report(shadow_log(800), shadow_traffic(800, p95=3.5), CHAMP_CALLS, SHADOW_CFG, spec)
    assert rep.passed and rep.decision == "pass", rep.table()
    assert rep.paired == 800 and rep.agreement > 0.95 and rep.mean_abs_score_diff < 0.03
    assert rep.latency_ratio == pytest.approx(1.4) and rep.error_rate == 0.0
    assert "| metric | shadow | champion | limit | ok |" in rep.table()
    d = rep.to_dict()
    assert d["passed"] is True and d["agreement"] == rep.agreement and len(d["rows"]) == len(rep.rows)


@pytest.mark.parametrize(
    "log,calls,reason",
    [
        (shadow_log(800, flip_share=0.3), shadow_traffic(800), "agreement"),
        (shadow_log(800, noise=0.2), shadow_traffic(800), "mean absolute score difference"),
        (shadow_log(800), shadow_traffic(800, errors=40), "the shadow failed on 4.76% of its rows"),
        (shadow_log(800), shadow_traffic(800, p95=9.0), "3.60× the champion's 2.5 ms"),
    ],
    ids=["disagrees", "scores-apart", "errors", "slow"],
)
def test_each_shadow_threshold_fails_the_report(spec, log, calls, reason):
    rep = shadow_report(log, calls, CHAMP_CALLS, SHADOW_CFG, spec)
    assert rep.decision == "fail" and any(reason in r for r in rep.reasons), rep.table()


def test_a_short_shadow_phase_waits_then_fails_at_the_deadline(spec):
    log = shadow_log(50)
    assert shadow_report(log, shadow_traffic(50), CHAMP_CALLS, SHADOW_CFG, spec).decision == "wait"
    late = shadow_report(log, shadow_traffic(50), CHAMP_CALLS, SHADOW_CFG, spec, waited_out=True)
    assert late.decision == "fail" and not late.passed and "only 50 of 100" in late.reasons[0]


def test_pairs_join_shadow_rows_to_the_champions_answer_by_request_id():
    log = shadow_log(10)
    extra = pd.DataFrame({"request_id": ["lonely"], "variant": ["champion"], "score": [0.5], "prediction": [1]})
    pairs = paired_rows(pd.concat([log, extra]))
    assert len(pairs) == 10 and "lonely" not in set(pairs["request_id"])
    assert set(pairs.columns) >= {"score_champion", "score_shadow", "prediction_champion", "prediction_shadow"}
