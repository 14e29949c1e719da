"""The Evidently reports of a window and the numbers read back from them.

| report | current | reference | answers |
|---|---|---|---|
| data_drift | window, sampled | training set | per-feature drift (methods and thresholds from `monitoring.drift`), dataset drift share |
| prediction_drift | window | training set scored by the champion | did the score distribution move |
| performance | labelled part | training set | target drift, classification/regression quality |
| data_quality | window | — | nulls, unknown categories, out-of-range values against the spec (tests) |

Pure: frames in, snapshots out; Evidently is imported inside the functions.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from include.mlops.monitoring.reading import PREDICTION, SCORE

if TYPE_CHECKING:
    from datetime import datetime

    import pandas as pd

    from include.mlops.monitoring.step import MonitoringConfig
    from include.mlops.spec import DatasetSpec


def reference_classes(ref: pd.DataFrame, spec: DatasetSpec) -> list[Any]:
    """The champion's classes: those of its training labels (scikit-learn's `classes_` is exactly
    the sorted distinct training labels), checked against the spec."""
    from include.mlops.scores import training_classes

    return training_classes(ref[spec.label], spec)


def as_text(values: pd.Series) -> pd.Series:
    """Class values as text, for Evidently (which compares the target with `pos_label` and the
    predictions as they are, and refuses booleans): 1 and 1.0 both read "1"."""
    from include.mlops.scores import label_text, plain

    return values.map(lambda v: None if v is None or (isinstance(v, float) and v != v) else label_text(plain(v)))


def _definition(
    spec: DatasetSpec,
    extra_num: tuple[str, ...] = (),
    extra_cat: tuple[str, ...] = (),
    classification: bool = False,
    only: list[str] | None = None,
    pos_label: Any = None,
) -> Any:
    from evidently import BinaryClassification, DataDefinition, MulticlassClassification, Regression

    from include.mlops.features.build import derived_features

    num = [*spec.numeric_features, *derived_features(spec), *extra_num]
    cat = [*spec.categorical_features, *extra_cat]
    if only is not None:
        num, cat = [c for c in num if c in only], [c for c in cat if c in only]
    kwargs: dict[str, Any] = {}
    if classification and spec.is_multiclass:  # the log keeps the predicted class, not every probability
        kwargs["classification"] = [MulticlassClassification(target=spec.label, prediction_labels=PREDICTION)]
    elif classification and spec.is_classification:  # pos_label: scores.positive_class, as text
        kwargs["classification"] = [
            BinaryClassification(target=spec.label, prediction_probas=SCORE, pos_label=pos_label)
        ]
    elif classification:
        kwargs["regression"] = [Regression(target=spec.label, prediction=SCORE)]
    return DataDefinition(numerical_columns=num, categorical_columns=cat, **kwargs)


def _dataset(df: pd.DataFrame, definition: Any) -> Any:
    from evidently import Dataset

    return Dataset.from_pandas(df.reset_index(drop=True), data_definition=definition)


def _run_report(
    kind: str,
    metrics: list[Any],
    cur: pd.DataFrame,
    ref: pd.DataFrame | None,
    definition: Any,
    timestamp: datetime | None,
    name: str | None,
    include_tests: bool = True,
) -> Any:
    """The snapshot of an Evidently report of `metrics` on the window (`cur`) against the
    reference (`ref`; None for a report of the window alone), its kind in the metadata."""
    from evidently import Report

    return Report(metrics, include_tests=include_tests).run(
        _dataset(cur, definition),
        None if ref is None else _dataset(ref, definition),
        timestamp=timestamp,
        name=name,
        metadata={"report": kind},
    )


def _metrics(snapshot_dict: dict[str, Any]) -> list[dict[str, Any]]:
    return list(snapshot_dict.get("metrics") or [])


def _mtype(m: dict[str, Any]) -> str:
    return str(m.get("config", {}).get("type", "")).rsplit(":", 1)[-1]


def drift_numbers(snapshot_dict: dict[str, Any], cfg: MonitoringConfig) -> dict[str, Any]:
    """Dataset drift share and, per column, score, method, threshold and whether it drifted."""
    share, count, columns = 0.0, 0, {}
    for m in _metrics(snapshot_dict):
        if _mtype(m) == "DriftedColumnsCount":
            share, count = float(m["value"]["share"]), int(m["value"]["count"])
        elif _mtype(m) == "ValueDrift":
            c = m["config"]
            columns[c["column"]] = {
                "score": float(m["value"]),
                "method": c.get("method"),
                "threshold": c.get("threshold"),
            }
    for t in snapshot_dict.get("tests") or []:
        params = (t.get("metric_config") or {}).get("params") or {}
        if params.get("type", "").endswith("ValueDrift") and params.get("column") in columns:
            columns[params["column"]]["drifted"] = t.get("status") == "FAIL"
    for c in columns.values():  # without a test result, decide as Evidently does for the method
        if "drifted" not in c:
            lower_is_drift = str(c["method"]) in {
                "ks",
                "chisquare",
                "z",
                "fisher_exact",
                "mannw",
                "t_test",
                "anderson",
                "cramer_von_mises",
                "epps_singleton",
                "g_test",
                "empirical_mmd",
                "TVD",
            }
            c["drifted"] = c["score"] < c["threshold"] if lower_is_drift else c["score"] >= c["threshold"]
    return {"share": share, "count": count, "columns": columns}


def data_drift_report(
    ref: pd.DataFrame,
    cur: pd.DataFrame,
    spec: DatasetSpec,
    cfg: MonitoringConfig,
    timestamp: datetime | None = None,
    name: str | None = None,
    columns: list[str] | None = None,
) -> Any:
    """Per-feature drift with the spec's methods and thresholds per column type."""
    from evidently.presets import DataDriftPreset

    from include.mlops.features.build import model_features

    feats = columns or model_features(spec)
    preset = DataDriftPreset(
        columns=feats,
        num_method=cfg.num_method,
        num_threshold=cfg.num_threshold,
        cat_method=cfg.cat_method,
        cat_threshold=cfg.cat_threshold,
        drift_share=cfg.drift_share,
    )
    return _run_report("data_drift", [preset], cur[feats], ref[feats], _definition(spec, only=feats), timestamp, name)


def prediction_drift_report(
    ref: pd.DataFrame,
    cur: pd.DataFrame,
    spec: DatasetSpec,
    cfg: MonitoringConfig,
    timestamp: datetime | None = None,
    name: str | None = None,
) -> Any:
    """Drift and mean of the score: the window's against the reference's, scored by the champion."""
    from evidently import DataDefinition
    from evidently.metrics import MeanValue, ValueDrift

    metrics = [
        ValueDrift(column=SCORE, method=cfg.prediction_method, threshold=cfg.prediction_threshold),
        MeanValue(column=SCORE),
    ]
    dd = DataDefinition(numerical_columns=[SCORE])
    return _run_report("prediction_drift", metrics, cur[[SCORE]], ref[[SCORE]], dd, timestamp, name)


def performance_report(
    ref: pd.DataFrame,
    labelled: pd.DataFrame,
    spec: DatasetSpec,
    cfg: MonitoringConfig,
    timestamp: datetime | None = None,
    name: str | None = None,
) -> Any:
    """Target drift and model quality on the labelled part of the window."""
    from evidently import DataDefinition
    from evidently.metrics import ValueDrift
    from evidently.presets import ClassificationPreset, RegressionPreset

    cols = [spec.label, SCORE]
    if spec.is_classification:
        from include.mlops.scores import label_text, positive_class

        classes = reference_classes(ref, spec)
        target_drift = ValueDrift(column=spec.label, method=cfg.cat_method, threshold=cfg.cat_threshold)
        if spec.is_multiclass:
            cols = [spec.label, PREDICTION, SCORE]
            dd = _definition(spec, classification=True)
            categorical = [spec.label, PREDICTION]
        else:
            dd = _definition(spec, classification=True, pos_label=label_text(positive_class(classes, spec)))
            categorical = [spec.label]
        dd = DataDefinition(
            categorical_columns=categorical, numerical_columns=[SCORE], classification=dd.classification
        )
        preset = ClassificationPreset()
        cur, ref = labelled[cols].copy(), ref[cols].copy()
        for f in (cur, ref):
            for c in categorical:
                f[c] = as_text(f[c])
    else:
        target_drift = ValueDrift(column=spec.label, method=cfg.num_method, threshold=cfg.num_threshold)
        dd = DataDefinition(numerical_columns=cols, regression=_definition(spec, classification=True).regression)
        preset = RegressionPreset()
        cur, ref = labelled[cols], ref[cols]
    return _run_report("performance", [target_drift, preset], cur, ref, dd, timestamp, name, include_tests=False)


def data_quality_report(
    cur: pd.DataFrame,
    spec: DatasetSpec,
    cfg: MonitoringConfig,
    timestamp: datetime | None = None,
    name: str | None = None,
) -> Any:
    """Nulls in required features, unknown categories and out-of-range values, each a test
    against `max_bad_fraction`; optional features are reported, not tested."""
    from evidently.metrics import MissingValueCount, OutListValueCount, OutRangeValueCount, RowCount
    from evidently.tests import lte

    tol = cfg.max_bad_fraction
    metrics: list[Any] = [RowCount()]
    for f in spec.features:
        metrics.append(MissingValueCount(column=f.name, share_tests=[lte(tol)] if f.required else []))
        if f.values is not None:
            metrics.append(OutListValueCount(column=f.name, values=list(f.values), share_tests=[lte(tol)]))
        elif f.range is not None:
            metrics.append(OutRangeValueCount(column=f.name, left=f.range[0], right=f.range[1], share_tests=[lte(tol)]))
    frame = cur[spec.feature_names].copy()
    for f in spec.features:  # the log may hold anything a client sent: coerce, so bad values count, not crash
        if f.is_numeric:
            import pandas as pd

            frame[f.name] = pd.to_numeric(frame[f.name], errors="coerce")
    return _run_report("data_quality", metrics, frame, None, _definition(spec), timestamp, name)


def quality_numbers(snapshot_dict: dict[str, Any]) -> dict[str, Any]:
    failures, worst = [], 0.0
    shares: dict[str, dict[str, float]] = {}
    for m in _metrics(snapshot_dict):
        col = m.get("config", {}).get("column")
        if col is None or not isinstance(m.get("value"), dict):
            continue
        share = float(m["value"].get("share") or 0.0)
        shares.setdefault(col, {})[_mtype(m)] = share
    for t in snapshot_dict.get("tests") or []:
        if t.get("status") in ("FAIL", "ERROR"):
            params = (t.get("metric_config") or {}).get("params") or {}
            kind = str(params.get("type", "")).rsplit(":", 1)[-1]
            col = params.get("column")
            share = shares.get(col, {}).get(kind, float("nan"))
            worst = max(worst, share if not math.isnan(share) else 1.0)
            failures.append({"check": f"{kind}({col})", "share": share, "description": t.get("description", "")})
    return {"passed": not failures, "failures": failures, "max_bad_share": worst, "shares": shares}
