"""The champion, its reference, and the analysis of one window against it.

The reference is the champion's training set (run tag `mlops.train_uri`), scored once by the
champion and cached per version. `analyse` is pure: frames in, every report and number out.

Registry reads: "no champion" only when the registry says so (`registry.NoChampion`, the task
skips); any other failed read is `registry.RegistryUnavailable` (the task fails and retries).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from include.mlops import layout
from include.mlops.monitoring.reading import PREDICTION, SCORE, sample
from include.mlops.monitoring.reports import (
    as_text,
    data_drift_report,
    data_quality_report,
    drift_numbers,
    performance_report,
    prediction_drift_report,
    quality_numbers,
    reference_classes,
)

if TYPE_CHECKING:
    from datetime import datetime

    import pandas as pd

    from include.mlops.monitoring.step import MonitoringConfig
    from include.mlops.spec import DatasetSpec
    from include.mlops.storage import ObjectStore


@dataclass(frozen=True)
class Champion:
    model: str
    version: str
    run_id: str
    train_uri: str
    primary_metric: str
    holdout_metric: float | None
    experiment_id: str


def champion_info(client: Any, spec: DatasetSpec) -> Champion:
    """The champion and its run. NoChampion only when the registry says there is none (the task
    skips); RegistryUnavailable on any other failed read (the task fails and retries)."""
    from include.mlops.constants import CHAMPION
    from include.mlops.registry import NoChampion, alias_version, registry_error

    try:
        version = alias_version(client, spec.model_name, CHAMPION)
    except Exception as exc:  # alias_version returns None for "not found" and raises the rest
        raise registry_error(f"the champion alias of {spec.model_name}", exc) from exc
    if version is None:
        raise NoChampion(f"{spec.model_name} has no champion yet: nothing to monitor")
    try:
        mv = client.get_model_version(spec.model_name, version)
        run = client.get_run(mv.run_id)
    except Exception as exc:  # the alias names this version: a failed read here is a fault, never "none"
        raise registry_error(f"{spec.model_name} v{version} (the champion) and its run", exc) from exc
    primary = spec.primary_metric
    train_uri = run.data.tags.get("mlops.train_uri")
    if not train_uri:
        raise NoChampion(f"champion v{version} (run {mv.run_id}) has no mlops.train_uri tag: no reference data")
    return Champion(
        spec.model_name,
        str(version),
        mv.run_id,
        train_uri,
        primary,
        run.data.metrics.get(f"holdout_{primary}"),
        run.info.experiment_id,
    )


def reference_frame(store: ObjectStore, spec: DatasetSpec, champ: Champion) -> tuple[pd.DataFrame, str]:
    """The champion's training data scored by the champion; cached per version (overwritten)."""
    from include.mlops.features.build import model_features
    from include.mlops.scores import score_model

    key = layout.reference_key(spec, champ.version)
    if store.exists(key):
        return store.get_parquet(key), store.uri(key)
    from include.mlops import model_io

    ref = store.get_parquet(store.key_of(champ.train_uri))
    # the one loader that refuses artifacts able to run code (include.mlops.model_io)
    model = model_io.load(f"models:/{champ.model}/{champ.version}", f"{champ.model} v{champ.version} (the champion)")
    scored = score_model(model, ref[model_features(spec)], spec)
    ref[SCORE], ref[PREDICTION] = scored.score, scored.prediction
    return ref, store.put_parquet(key, ref)


# -- analysis (pure: frames in, numbers and snapshots out) ---------------------------------------------
@dataclass
class WindowAnalysis:
    rows: int
    rows_used: int
    reference_rows: int
    reference_rows_used: int
    drift: dict[str, Any]
    prediction_drift: dict[str, Any]
    labelled_rows: int
    target_drift: dict[str, Any] | None
    performance: dict[str, float]
    data_quality: dict[str, Any]
    snapshots: dict[str, Any]

    @property
    def drifted_features(self) -> list[str]:
        return sorted(c for c, v in self.drift["columns"].items() if v["drifted"])


@dataclass(frozen=True)
class _Run:
    """What every report of one window shares: the spec, the settings and the snapshot's stamp."""

    spec: DatasetSpec
    cfg: MonitoringConfig
    timestamp: datetime | None
    day: str

    def name(self, kind: str) -> str:
        return f"{self.day} {kind}"


def analyse(
    ref: pd.DataFrame,
    cur: pd.DataFrame,
    labelled: pd.DataFrame,
    spec: DatasetSpec,
    cfg: MonitoringConfig,
    timestamp: datetime | None = None,
    day: str = "",
) -> WindowAnalysis:
    """Every report and number for one window; `cur`/`ref` are sampled here with the recorded seed."""
    from include.mlops.features.build import model_features

    feats = model_features(spec)
    missing = [c for c in [*feats, SCORE] if c not in cur.columns]
    if missing:  # a log without a column the contract promises: the quality check will say so
        cur = cur.assign(**{c: float("nan") for c in missing})
    cur_s = sample(cur, cfg.sample_rows, cfg.sample_seed)
    ref_s = sample(ref, cfg.sample_rows, cfg.sample_seed)
    lab_s = sample(labelled, cfg.sample_rows, cfg.sample_seed)
    run, snaps = _Run(spec, cfg, timestamp, day), {}
    snaps["data_quality"] = data_quality_report(cur_s, spec, cfg, timestamp, run.name("data_quality"))
    dq = quality_numbers(snaps["data_quality"].dict())
    drift = _data_drift(ref_s, cur_s, feats, run, snaps)
    pred = _prediction_drift(ref_s, cur_s, run, snaps)
    lab_ok = lab_s.dropna(subset=[SCORE, spec.label]) if len(lab_s) else lab_s
    perf = performance_numbers(lab_ok, ref_s, spec)
    target = _target_drift(ref_s, lab_ok, run, snaps)
    return WindowAnalysis(
        rows=len(cur),
        rows_used=len(cur_s),
        reference_rows=len(ref),
        reference_rows_used=len(ref_s),
        drift=drift,
        prediction_drift=pred,
        labelled_rows=len(lab_ok),
        target_drift=target,
        performance=perf,
        data_quality=dq,
        snapshots=snaps,
    )


def _data_drift(
    ref_s: pd.DataFrame, cur_s: pd.DataFrame, feats: list[str], run: _Run, snaps: dict[str, Any]
) -> dict[str, Any]:
    """Feature drift on the columns that hold values on both sides (Evidently refuses a column
    with none; such a column fails the quality check instead); the rest named `empty_columns`."""
    usable = [c for c in feats if cur_s[c].notna().any() and ref_s[c].notna().any()]
    snaps["data_drift"] = data_drift_report(
        ref_s, cur_s, run.spec, run.cfg, run.timestamp, run.name("data_drift"), usable
    )
    drift = drift_numbers(snaps["data_drift"].dict(), run.cfg)
    drift["empty_columns"] = sorted(set(feats) - set(usable))
    return drift


def _prediction_drift(ref_s: pd.DataFrame, cur_s: pd.DataFrame, run: _Run, snaps: dict[str, Any]) -> dict[str, Any]:
    """Did the score distribution move; no report when the window logged no score."""
    if SCORE not in cur_s.columns or not cur_s[SCORE].notna().any():
        return {"score": None, "drifted": False, "mean": None, "reference_mean": float(ref_s[SCORE].mean())}
    snaps["prediction_drift"] = prediction_drift_report(
        ref_s, cur_s.dropna(subset=[SCORE]), run.spec, run.cfg, run.timestamp, run.name("prediction_drift")
    )
    found = drift_numbers(snaps["prediction_drift"].dict(), run.cfg)["columns"].get(SCORE, {})
    return {
        **_verdict(found),
        "mean": float(cur_s[SCORE].mean()),
        "reference_mean": float(ref_s[SCORE].mean()),
    }


def _target_drift(ref_s: pd.DataFrame, lab_ok: pd.DataFrame, run: _Run, snaps: dict[str, Any]) -> dict[str, Any] | None:
    """Target drift and the performance report, once two labelled rows are in; None before."""
    if len(lab_ok) < 2:
        return None
    spec = run.spec
    snaps["performance"] = performance_report(ref_s, lab_ok, spec, run.cfg, run.timestamp, run.name("performance"))
    found = drift_numbers(snaps["performance"].dict(), run.cfg)["columns"].get(spec.label, {})
    return {**_verdict(found), **_target_level(lab_ok[spec.label].to_numpy(), ref_s, spec)}


def _verdict(column: dict[str, Any]) -> dict[str, Any]:
    """One column's drift as the summary records it."""
    return {
        "score": column.get("score"),
        "drifted": bool(column.get("drifted")),
        "method": column.get("method"),
        "threshold": column.get("threshold"),
    }


def performance_numbers(lab: pd.DataFrame, ref: pd.DataFrame, spec: DatasetSpec) -> dict[str, Any]:
    """`evaluation.metrics.metrics` on labelled log rows (those with a score and a label); an undefined
    metric (NaN) reads None; empty without labelled rows."""
    from include.mlops.evaluation.metrics import metrics

    if not len(lab):
        return {}
    found = metrics(lab[spec.label].to_numpy(), logged_scores(lab, ref, spec), spec)
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in found.items()}


def logged_scores(labelled: pd.DataFrame, ref: pd.DataFrame, spec: DatasetSpec) -> Any:
    """What `evaluation.metrics.metrics` takes for logged predictions: binary, the positive class's
    score with the champion's classes; multiclass, the predicted class (the log has no
    per-class probabilities, so roc_auc_ovr and log_loss stay empty); regression, the value."""
    import numpy as np

    from include.mlops.scores import Scored

    score = np.asarray(labelled[SCORE], dtype=float)
    if not spec.is_classification:
        return score
    classes = reference_classes(ref, spec)
    pred = labelled[PREDICTION].to_numpy() if PREDICTION in labelled.columns else np.full(len(labelled), None)
    return Scored(pred, score, None, classes)


def _target_level(y: Any, ref: pd.DataFrame, spec: DatasetSpec) -> dict[str, Any]:
    """The label's level in the window and in the reference: the positive rate (binary), each
    class's share (multiclass) or the mean (regression)."""
    import numpy as np

    from include.mlops.scores import is_positive

    if not spec.is_classification:
        return {"mean": float(np.mean(y)), "reference": float(ref[spec.label].mean())}
    classes = reference_classes(ref, spec)
    if not spec.is_multiclass:
        return {
            "rate": float(is_positive(y, classes, spec).mean()),
            "reference": float(is_positive(ref[spec.label], classes, spec).mean()),
        }
    import pandas as pd

    def shares(values: Any) -> dict[str, float]:
        text = as_text(pd.Series(np.asarray(values, dtype=object)))
        return {str(k): float(v) for k, v in text.value_counts(normalize=True).sort_index().items()}

    return {"shares": shares(y), "reference": shares(ref[spec.label])}
