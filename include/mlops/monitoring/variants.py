"""Every (variant, version) of a window on its own, shadow included.

Per group: rows, share of the answers, labelled rows and performance, mean score, prediction
drift and (answers only) feature drift share, all against the champion's reference. The table
goes to the task log, to `variants.md` beside the reports, to the summary (`variants`) and to
the MLflow run (`<variant>_v<version>_rows`, ...). A shadow row is never an answer: its group is
marked `answered: False` and gets no feature drift (its inputs are requests the champion answered).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from include.mlops.monitoring.reading import SCORE, judged_rows, sample
from include.mlops.monitoring.reports import data_drift_report, drift_numbers, prediction_drift_report
from include.mlops.monitoring.window import performance_numbers

if TYPE_CHECKING:
    from datetime import datetime

    import pandas as pd

    from include.mlops.monitoring.step import MonitoringConfig
    from include.mlops.monitoring.window import WindowAnalysis
    from include.mlops.spec import DatasetSpec


def _group_order(variant: str, version: str) -> tuple[int, float, str]:
    rank = {"champion": 0, "challenger": 1, "pinned": 2, "shadow": 9}.get(variant, 5)
    return rank, float(version) if version.isdigit() else math.inf, f"{variant}/{version}"


@dataclass(frozen=True)
class _Window:
    """What every group of one window is measured against."""

    ref_s: pd.DataFrame
    spec: DatasetSpec
    cfg: MonitoringConfig
    timestamp: datetime | None
    day: str
    feats: list[str]


def variant_numbers(
    ref: pd.DataFrame,
    answered: pd.DataFrame,
    shadow: pd.DataFrame,
    labelled: pd.DataFrame,
    spec: DatasetSpec,
    cfg: MonitoringConfig,
    timestamp: datetime | None = None,
    day: str = "",
    headline: WindowAnalysis | None = None,
) -> list[dict[str, Any]]:
    """One row per (variant, version) of the window, shadow groups marked `answered: False`.

    `labelled`: the label-joined log of the lookback, every variant (`read_predictions(rows="all")`).
    Each group is sampled like the window (`sample_rows`, `sample_seed`). `headline`: the window's
    analysis of the judged rows; when one champion version answered them all, its drift numbers
    are that group's (the same rows: no second Evidently run)."""
    from include.mlops.features.build import model_features
    from include.mlops.serving.predlog import DEFAULT_VARIANT

    win = _Window(sample(ref, cfg.sample_rows, cfg.sample_seed), spec, cfg, timestamp, day, model_features(spec))
    lab_groups = (
        {k: g for k, g in labelled.groupby(["variant", "model_version"], sort=False)}
        if len(labelled) and "variant" in labelled.columns
        else {}
    )
    judged = judged_rows(answered)
    # the champion group is exactly the judged rows when one version answered them all
    one_champion = len(judged) > 0 and judged["model_version"].nunique() == 1
    out = []
    for frame, is_ans in ((answered, True), (shadow, False)):
        if frame.empty:
            continue
        for (variant, version), g in frame.groupby(["variant", "model_version"], sort=False):
            is_judged = is_ans and one_champion and variant == DEFAULT_VARIANT
            row = _group_row(str(variant), str(version), g, is_ans, len(answered))
            _drift_of_group(win, row, g, headline if is_judged else None)
            _performance_of_group(win, row, lab_groups.get((variant, version)))
            out.append(row)
    return sorted(out, key=lambda r: _group_order(r["variant"], r["version"]))


def _group_row(variant: str, version: str, g: pd.DataFrame, is_ans: bool, total: int) -> dict[str, Any]:
    return {
        "variant": variant,
        "version": version,
        "answered": is_ans,
        "rows": len(g),
        "share": round(len(g) / total, 6) if total else None,
        "labelled_rows": 0,
        "performance": {},
        "score_mean": None,
        "prediction_drift": None,
        "prediction_drifted": None,
        "drift_share": None,
    }


def _drift_of_group(win: _Window, row: dict[str, Any], g: pd.DataFrame, headline: WindowAnalysis | None) -> None:
    """Mean score, prediction drift and (answers only) feature drift share of one group; the
    headline's numbers when the group is exactly the judged rows."""
    cfg, name = win.cfg, f"{win.day} {row['variant']} v{row['version']}"
    g_s = sample(g.reset_index(drop=True), cfg.sample_rows, cfg.sample_seed)
    scored = g_s.dropna(subset=[SCORE]) if SCORE in g_s.columns else g_s.iloc[0:0]
    if len(scored):
        row["score_mean"] = float(scored[SCORE].mean())
    if headline is not None:
        row["prediction_drift"] = headline.prediction_drift.get("score")
        row["prediction_drifted"] = bool(headline.prediction_drift.get("drifted"))
        row["drift_share"] = headline.drift["share"]
    elif len(scored) >= 2:
        snap = prediction_drift_report(win.ref_s, scored, win.spec, cfg, win.timestamp, name)
        pdd = drift_numbers(snap.dict(), cfg)["columns"].get(SCORE, {})
        row["prediction_drift"], row["prediction_drifted"] = pdd.get("score"), bool(pdd.get("drifted"))
    if row["drift_share"] is None and row["answered"] and len(g_s) >= 2:
        ref_s = win.ref_s
        usable = [c for c in win.feats if c in g_s.columns and g_s[c].notna().any() and ref_s[c].notna().any()]
        if usable:
            snap = data_drift_report(ref_s, g_s, win.spec, cfg, win.timestamp, name, usable)
            row["drift_share"] = drift_numbers(snap.dict(), cfg)["share"]


def _performance_of_group(win: _Window, row: dict[str, Any], lab: pd.DataFrame | None) -> None:
    """Labelled rows and performance of one group (sampled like the window)."""
    if lab is None:
        return
    spec, cfg = win.spec, win.cfg
    lab = sample(lab.reset_index(drop=True), cfg.sample_rows, cfg.sample_seed)
    lab = lab.dropna(subset=[SCORE, spec.label])
    row["labelled_rows"] = len(lab)
    row["performance"] = performance_numbers(lab, win.ref_s, spec)


def variants_table(rows: list[dict[str, Any]], primary: str) -> str:
    """The per-version numbers as a Markdown table (task log, `variants.md`)."""

    def num(v: Any, fmt: str = "{:.4f}") -> str:
        return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)

    lines = [
        f"| variant | version | answered | rows | share of answers | labelled | {primary} | mean score | prediction drift | feature drift share |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        drift = num(r["prediction_drift"])
        if r["prediction_drifted"]:
            drift += " (drifted)"
        lines.append(
            f"| {r['variant']} | {r['version']} | {'yes' if r['answered'] else 'no (shadow)'} | {r['rows']} | "
            f"{num(r['share'], '{:.1%}')} | {r['labelled_rows']} | {num(r['performance'].get(primary))} | "
            f"{num(r['score_mean'])} | {drift} | {num(r['drift_share'], '{:.3f}')} |"
        )
    if not rows:
        lines.append("| — | — | — | 0 | — | 0 | — | — | — | — |")
    return "\n".join(lines)
