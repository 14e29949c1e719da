"""Verdicts on live traffic: one canary step against the champion, and a shadow phase's report.

Pure functions of the figures `delivery.live` reads (per-variant `Traffic` between two metric
snapshots, and the prediction-log rows of the window), so every rule is tested on made-up
numbers as well as on a real service.

Canary step (`judge_canary_step`), against the champion on the same step's traffic:

| rule | fails when |
|---|---|
| live sample | fewer than `min_requests` canary requests: "wait"; past the deadline, `on_deadline` decides: "rollback" fails, "judge" judges what came (none: fail) |
| error rate | canary's server-error rate minus the champion's > `max_error_rate_increase` |
| latency | canary p95 / champion p95 > `max_latency_ratio` (not judged below 5 requests a side) |
| score distance | two-sample KS statistic between their logged scores > `max_score_distance` (not judged below 5 scores a side) |
| performance | primary metric drop > `max_metric_drop`, only once both sides have `min_labelled` labelled rows |

Shadow report (`shadow_report`), on the shadow's rows paired with the champion's answers by
request id: agreement (same class; regression: not judged), mean and p95 absolute score
difference, error rate of the shadow's scoring and its model-call p95 over the champion's.

Scores are what the prediction log holds (`include.mlops.scores`): the positive class's
probability (binary), the predicted class's probability (multiclass), the value (regression).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from include.mlops.delivery.live import Traffic
    from include.mlops.spec import DatasetSpec
    from include.mlops.spec_sections import CanarySpec, ShadowSpec

MIN_SIDE = 5  # requests (latency) or scores (distance) a side needs before the rule is judged
CANARY, CHAMPION, SHADOW = "challenger", "champion", "shadow"
PERCENT_ROWS = ("error rate", "agreement")  # shown as percentages in the tables


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _pct(v: Any) -> str:
    return _fmt(v) if not isinstance(v, int | float) or isinstance(v, bool) else f"{v:.2%}"


def _table(rows: list[dict[str, Any]], side: str) -> str:
    lines = [f"| metric | {side} | champion | limit | ok |", "|---|---|---|---|---|"]
    for r in rows:
        ok = "—" if r["ok"] is None else ("yes" if r["ok"] else "**no**")
        fmt = _pct if r["metric"] in PERCENT_ROWS else _fmt
        lines.append(f"| {r['metric']} | {fmt(r[side])} | {fmt(r['champion'])} | {r['limit']} | {ok} |")
    return "\n".join(lines)


def _row(metric: str, side: str, new: Any, champion: Any, limit: str, ok: bool | None) -> dict[str, Any]:
    return {"metric": metric, side: new, "champion": champion, "limit": limit, "ok": ok}


@dataclass
class StepVerdict:
    """One canary step: "pass" (advance), "fail" (roll back) or "wait" (too few requests yet)."""

    step: int
    share: float
    decision: str
    reasons: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)  # metric, canary, champion, limit, ok

    def table(self) -> str:
        head = f"canary step {self.step} ({self.share:.0%} of entities): **{self.decision}**"
        return "\n".join([head, "", _table(self.rows, "canary"), *(f"- {r}" for r in self.reasons)])

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "share": self.share, "decision": self.decision, "reasons": list(self.reasons),
                "rows": [dict(r) for r in self.rows]}  # fmt: skip


# -- the rules ------------------------------------------------------------------------------------------
def _sample_rule(n: int, cfg: Any, waited_out: bool, side: str) -> tuple[dict[str, Any], str | None, bool]:
    """(table row, reason, whether the sample blocks a judgement) of the live-sample rule."""
    enough = n >= cfg.min_requests
    row = _row("live requests", side, n, None, f"≥ {cfg.min_requests}", enough)
    if enough:
        return row, None, False
    if not waited_out:
        return row, f"waiting: {n} of {cfg.min_requests} live requests so far", True
    if cfg.on_deadline == "rollback":
        return row, f"only {n} of {cfg.min_requests} live requests by the deadline (on_deadline: rollback)", True
    if n == 0:
        return row, "no live request by the deadline: nothing to judge (on_deadline: judge)", True
    row["ok"] = None
    return row, f"judged on {n} of {cfg.min_requests} live requests: the deadline passed (on_deadline: judge)", False


def _error_rule(new: Traffic, champ: Traffic, limit: float, side: str) -> tuple[dict[str, Any], str | None]:
    new_rate, champ_rate = new.error_rate or 0.0, champ.error_rate or 0.0
    ok = new_rate - champ_rate <= limit + 1e-12
    row = _row("error rate", side, new_rate, champ_rate, f"≤ champion + {limit:g}", ok)
    why = None if ok else (
        f"error rate {new_rate:.2%} ({new.errors} of {new.requests}) against the champion's {champ_rate:.2%} "
        f"({champ.errors} of {champ.requests}): more than {limit:g} higher"
    )  # fmt: skip
    return row, why


def _latency_rule(new: Traffic, champ: Traffic, limit: float, side: str) -> tuple[dict[str, Any], str | None]:
    label, bound = "p95 latency (ms)", f"≤ {limit:g}× champion"
    if min(new.requests, champ.requests) < MIN_SIDE or not new.p95_ms or not champ.p95_ms:
        row = _row(label, side, new.p95_ms, champ.p95_ms, bound, None)
        return row, f"latency not judged: {new.requests} and {champ.requests} requests (needs {MIN_SIDE} a side)"
    ratio = new.p95_ms / champ.p95_ms
    ok = ratio <= limit
    row = _row(label, side, new.p95_ms, champ.p95_ms, bound, ok)
    row["ratio"] = round(ratio, 3)
    why = (
        None
        if ok
        else f"p95 latency {new.p95_ms:.1f} ms is {ratio:.2f}× the champion's {champ.p95_ms:.1f} ms (limit {limit:g}×)"
    )
    return row, why


def _clean(values: Any) -> Any:
    import numpy as np

    a = np.asarray([] if values is None else values, dtype=float)
    return a[np.isfinite(a)]


def score_distance(a: Any, b: Any) -> float | None:
    """Two-sample Kolmogorov-Smirnov statistic between two score samples (None below MIN_SIDE each)."""
    from scipy.stats import ks_2samp

    a, b = _clean(a), _clean(b)
    if len(a) < MIN_SIDE or len(b) < MIN_SIDE:
        return None
    return float(ks_2samp(a, b).statistic)


def _distance_rule(new_scores: Any, champ_scores: Any, limit: float) -> tuple[dict[str, Any], str | None]:
    d = score_distance(new_scores, champ_scores)
    n, m = len(_clean(new_scores)), len(_clean(champ_scores))
    if d is None:
        row = _row("logged scores (for the KS distance)", "canary", n, m, f"≥ {MIN_SIDE} a side", None)
        return row, f"score distance not judged: {n} and {m} logged scores (needs {MIN_SIDE} a side)"
    ok = d <= limit
    row = _row("score distance (KS)", "canary", round(d, 4), None, f"≤ {limit:g}", ok)
    return row, None if ok else f"score distributions differ: KS distance {d:.3f} > {limit:g} ({n} and {m} scores)"


def metric_on(rows: pd.DataFrame, spec: DatasetSpec, metric: str) -> float | None:
    """`metric` of labelled prediction-log rows (score, prediction, the label), None if it
    cannot be computed from them (e.g. a multiclass log holds no class probabilities)."""
    import numpy as np

    from include.mlops.evaluation.metrics import metrics
    from include.mlops.scores import Scored

    if rows.empty:
        return None
    y = rows[spec.label].to_numpy()
    scores: Any = rows["score"].to_numpy(dtype=float)
    if spec.is_multiclass:
        classes = list(spec.label_spec.classes or [])
        scores = Scored(rows["prediction"].to_numpy(), scores, None, classes)
    value = metrics(y, scores, spec).get(metric)
    return None if value is None or not np.isfinite(value) else float(value)


def _metric_rule(
    labelled: pd.DataFrame | None, cfg: CanarySpec, spec: DatasetSpec
) -> tuple[dict[str, Any], str | None]:
    from include.mlops.constants import worse_by

    metric = spec.primary_metric
    sides = {}
    for variant in (CANARY, CHAMPION):
        part = labelled[labelled["variant"] == variant] if labelled is not None and len(labelled) else None
        sides[variant] = part.dropna(subset=[spec.label, "score"]) if part is not None else None
    n = {k: 0 if v is None else len(v) for k, v in sides.items()}
    limit = f"drop ≤ {cfg.max_metric_drop:g}"
    if min(n.values()) < cfg.min_labelled:
        row = _row(
            f"labelled rows (for {metric})", "canary", n[CANARY], n[CHAMPION], f"≥ {cfg.min_labelled} a side", None
        )
        return (
            row,
            f"{metric} not judged yet: {n[CANARY]} and {n[CHAMPION]} labelled rows (needs {cfg.min_labelled} a side)",
        )
    new, champ = (metric_on(sides[v], spec, metric) for v in (CANARY, CHAMPION))
    if new is None or champ is None:
        return _row(metric, "canary", new, champ, limit, None), f"{metric} cannot be computed from the logged rows"
    drop = worse_by(metric, champ, new)
    ok = drop <= cfg.max_metric_drop + 1e-12
    row = _row(metric, "canary", round(new, 4), round(champ, 4), limit, ok)
    why = (
        None
        if ok
        else f"{metric} {new:.4f} against the champion's {champ:.4f}: worse by {drop:.4f} > {cfg.max_metric_drop:g}"
    )
    return row, why


def judge_canary_step(
    step: int,
    share: float,
    canary: Traffic,
    champion: Traffic,
    canary_scores: Any,
    champion_scores: Any,
    labelled: pd.DataFrame | None,
    cfg: CanarySpec,
    spec: DatasetSpec,
    waited_out: bool,
) -> StepVerdict:
    """The verdict of one canary step on its live traffic (rules in the module docstring).
    `labelled`: the step's label-joined log rows, with a `variant` column (None: no labels yet)."""
    sample, why, blocked = _sample_rule(canary.requests, cfg, waited_out, "canary")
    sample["champion"] = champion.requests
    rows, reasons, failed = [sample], [why] if why else [], False
    if blocked:
        return StepVerdict(step, share, "fail" if waited_out else "wait", reasons, rows)
    for row, why in (
        _error_rule(canary, champion, cfg.max_error_rate_increase, "canary"),
        _latency_rule(canary, champion, cfg.max_latency_ratio, "canary"),
        _distance_rule(canary_scores, champion_scores, cfg.max_score_distance),
        _metric_rule(labelled, cfg, spec),
    ):
        rows.append(row)
        failed |= row["ok"] is False
        if why:
            reasons.append(why)
    return StepVerdict(step, share, "fail" if failed else "pass", reasons, rows)


def variant_scores(rows: pd.DataFrame, variant: str) -> Any:
    """The logged scores of one variant's rows (for `judge_canary_step`)."""
    if rows.empty or "variant" not in rows.columns:
        return _clean([])
    return _clean(rows.loc[rows["variant"] == variant, "score"])


# -- shadow -----------------------------------------------------------------------------------------------
@dataclass
class ShadowReport:
    """A shadow phase judged: "pass" (promote), "fail" (end it) or "wait" (too few rows yet)."""

    requests: int  # rows the shadow scored in the phase (metrics)
    paired: int  # shadow rows matched to the champion's answer by request id (log)
    agreement: float | None
    mean_abs_score_diff: float | None
    p95_abs_score_diff: float | None
    latency_ratio: float | None
    error_rate: float | None
    decision: str
    reasons: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)  # metric, shadow, champion, limit, ok

    @property
    def passed(self) -> bool:
        return self.decision == "pass"

    def table(self) -> str:
        head = f"shadow report: **{self.decision}** ({self.paired} requests paired with the champion's answers)"
        return "\n".join([head, "", _table(self.rows, "shadow"), *(f"- {r}" for r in self.reasons)])

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in ("reasons", "rows")}
        return {**out, "passed": self.passed, "reasons": list(self.reasons), "rows": [dict(r) for r in self.rows]}


def paired_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """Shadow rows beside the champion's answer to the same request: columns request_id,
    prediction_champion, score_champion, prediction_shadow, score_shadow."""
    cols = ["request_id", "prediction", "score"]
    champ = rows.loc[rows["variant"] == CHAMPION, cols].drop_duplicates("request_id")
    shadow = rows.loc[rows["variant"] == SHADOW, cols].drop_duplicates("request_id")
    return champ.merge(shadow, on="request_id", suffixes=("_champion", "_shadow"))


def _agreement(pairs: pd.DataFrame, spec: DatasetSpec) -> float | None:
    from include.mlops.scores import same_class

    if pairs.empty or not spec.is_classification:
        return None
    same = [same_class(a, b) for a, b in zip(pairs["prediction_champion"], pairs["prediction_shadow"], strict=True)]
    return sum(same) / len(same)


def _shadow_rules(rep: ShadowReport, pairs: pd.DataFrame, cfg: ShadowSpec, spec: DatasetSpec) -> None:
    def add(metric: str, value: Any, champ: Any, limit: str, ok: bool | None, why: str | None) -> None:
        rep.rows.append(_row(metric, "shadow", value, champ, limit, ok))
        if why and ok is not True:
            rep.reasons.append(why)

    a = rep.agreement
    add("agreement", a, None, f"≥ {cfg.min_agreement:g}", None if a is None else a >= cfg.min_agreement,
        "agreement not judged: a regression model answers values, not classes" if a is None and spec.task == "regression"
        else "agreement not judged: no shadow row paired with the champion's answer" if a is None
        else f"agreement {a:.1%} with the champion's answers < {cfg.min_agreement:.0%}")  # fmt: skip
    d = rep.mean_abs_score_diff
    add("mean abs score diff", d, None, f"≤ {cfg.max_mean_score_diff:g}", None if d is None else d <= cfg.max_mean_score_diff,
        f"mean absolute score difference {d:.4f} > {cfg.max_mean_score_diff:g}" if d is not None else None)  # fmt: skip
    add("p95 abs score diff", rep.p95_abs_score_diff, None, "—", None, None)
    e = rep.error_rate
    add("error rate", e, None, f"≤ {cfg.max_error_rate:g}", None if e is None else e <= cfg.max_error_rate,
        f"the shadow failed on {e:.2%} of its rows > {cfg.max_error_rate:g}" if e is not None else None)  # fmt: skip


def shadow_report(
    rows: pd.DataFrame,
    shadow: Traffic,
    champion: Traffic,
    cfg: ShadowSpec,
    spec: DatasetSpec,
    waited_out: bool = False,
) -> ShadowReport:
    """Judge a shadow phase. `rows`: the phase's log rows of variants champion and shadow
    (`live.live_rows`); `shadow`: `live.shadow_traffic`; `champion`: the champion's model calls
    on the same traffic (`live.scoring(..., "champion")`), so both latencies are model calls."""
    import numpy as np

    pairs = paired_rows(rows) if not rows.empty else rows
    diff = np.abs(pairs["score_shadow"].to_numpy(float) - pairs["score_champion"].to_numpy(float)) if len(pairs) else []
    diff = _clean(diff)
    rep = ShadowReport(
        requests=shadow.requests,
        paired=len(pairs),
        agreement=_agreement(pairs, spec) if len(pairs) else None,
        mean_abs_score_diff=round(float(diff.mean()), 6) if len(diff) else None,
        p95_abs_score_diff=round(float(np.quantile(diff, 0.95)), 6) if len(diff) else None,
        latency_ratio=None,
        error_rate=shadow.error_rate,
        decision="pass",
    )
    sample, why, blocked = _sample_rule(shadow.requests, cfg, waited_out, "shadow")
    sample["champion"] = champion.requests
    rep.rows.append(sample)
    rep.reasons += [why] if why else []
    if blocked:
        rep.decision = "fail" if waited_out else "wait"
        return rep
    _shadow_rules(rep, pairs, cfg, spec)
    row, why = _latency_rule(shadow, champion, cfg.max_latency_ratio, "shadow")
    rep.latency_ratio = row.get("ratio")
    rep.rows.append(row)
    rep.reasons += [why] if why else []
    rep.decision = "fail" if any(r["ok"] is False for r in rep.rows) else "pass"
    return rep
