"""Monitoring: a window of the prediction log against the champion's own training data.

One window (a day by default) is read from the prediction log (online requests and batch scores),
joined to the ground truth that has arrived by the window's end (labels come days late, so the
labelled part reaches back `label.delay_days` before the window), and compared with the
reference: the champion's training set (run tag `mlops.train_uri`), scored once by the champion
and cached per version. Four Evidently reports, each saved as HTML and JSON under
`reports/monitoring/<dataset>/dt=<day>/`:

| report | current | reference | answers |
|---|---|---|---|
| data_drift | window, sampled | training set | per-feature drift (methods and thresholds from `monitoring.drift`), dataset drift share |
| prediction_drift | window | training set scored by the champion | did the score distribution move |
| performance | labelled part | training set | target drift, classification/regression quality |
| data_quality | window | — | nulls, unknown categories, out-of-range values against the spec (tests) |

The key numbers go to a history: one MLflow run per window in the experiment
`<dataset>-monitoring` (reused on a re-run), and an Evidently workspace at `$MLOPS_HOME/evidently`
with dashboard panels (`evidently ui --workspace $MLOPS_HOME/evidently`). Windows larger than
`monitoring.sample_rows` are sampled with `monitoring.sample_seed`; both are recorded.

Variants. Every log row names its `variant` and `model_version` (`serving.predlog`; older logs
read as the champion's answers of version "unknown"). A shadow row is never an answer: the
caller got the champion's answer to that request, so counting both would count it twice. The
four reports and the numbers the drift policy decides on judge the champion's answers (variant
`champion`, whichever version held the alias). Every (variant, version) of the window, shadow
included, also gets its own row: rows, share of the answers, labelled rows and performance,
mean score, prediction drift and (answers only) feature drift share, all against the
champion's reference; the table goes to the task log, to `variants.md` beside the reports, to
the summary (`variants`) and to the MLflow run (`<variant>_v<version>_rows`, ...).

Registry reads: "no champion" only when the registry says so (`NoChampion`, the task skips);
any other failed read is `RegistryUnavailable` (the task fails and retries).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from include.mlops.config import Settings
    from include.mlops.pipeline import Interval
    from include.mlops.spec import DatasetSpec
    from include.mlops.storage import ObjectStore

log = logging.getLogger(__name__)

SCORE, PREDICTION, SOURCE = "score", "prediction", "source"


class NoChampion(Exception):
    """Nothing is deployed yet, so there is nothing to monitor."""


class RegistryUnavailable(RuntimeError):
    """The registry did not answer a read (a server error, a timeout, a refused connection).

    Never read as "no champion": the task fails (and Airflow retries it) rather than skipping a
    window or deciding on a guess."""


def registry_error(what: str, exc: BaseException) -> RegistryUnavailable:
    """A RegistryUnavailable naming what could not be read, where, and what happens next."""
    import mlflow

    uri = _without_credentials(mlflow.get_registry_uri())
    return RegistryUnavailable(
        f"could not read {what} from the MLflow registry at {uri}: {type(exc).__name__}: {exc}. "
        "This is a registry fault, not a missing champion: nothing was decided; the task fails "
        "and is retried (check that the tracking server answers, e.g. `curl <uri>/health`)."
    )


def _without_credentials(uri: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.username or parts.password:
        host = parts.hostname or ""
        return urlunsplit(parts._replace(netloc=f"{host}:{parts.port}" if parts.port else host))
    return uri


@dataclass(frozen=True)
class MonitoringConfig:
    window_days: int = 1
    sample_rows: int = 100_000
    sample_seed: int = 7
    num_method: str = "wasserstein"
    num_threshold: float = 0.1
    cat_method: str = "jensenshannon"
    cat_threshold: float = 0.1
    prediction_method: str = "wasserstein"
    prediction_threshold: float = 0.1
    drift_share: float = 0.25
    max_bad_fraction: float = 0.01
    label_lookback_days: int = 3

    @classmethod
    def from_spec(cls, spec: DatasetSpec) -> MonitoringConfig:
        mon, drift, pol = spec.monitoring, spec.monitoring.drift, spec.monitoring.policy
        return cls(
            window_days=mon.window_days,
            sample_rows=mon.sample_rows,
            sample_seed=mon.sample_seed,
            num_method=drift.num_method,
            num_threshold=drift.num_threshold,
            cat_method=drift.cat_method,
            cat_threshold=drift.cat_threshold,
            prediction_method=str(drift.prediction_method),
            prediction_threshold=float(drift.prediction_threshold or drift.num_threshold),
            drift_share=pol.drift_share,
            max_bad_fraction=float(pol.max_bad_fraction if pol.max_bad_fraction is not None else cls.max_bad_fraction),
            label_lookback_days=int(mon.label_lookback_days or 0),
        )


# -- reading the prediction log and the labels -------------------------------------------------------
def online_prefix(spec: DatasetSpec, day: date) -> str:
    return f"predictions/{spec.name}/dt={day.isoformat()}/"


def batch_prefix(spec: DatasetSpec, day: date) -> str:
    return f"predictions/batch/{spec.name}/dt={day.isoformat()}/"


def prediction_keys(store: ObjectStore, spec: DatasetSpec, days: list[date]) -> list[tuple[str, str]]:
    """(source, key) of every prediction-log object of the days: online requests, then batch scores."""
    out: list[tuple[str, str]] = []
    for day in days:
        out += [
            ("online", k)
            for k in store.list(online_prefix(spec, day))
            if k.endswith(".parquet") and "/batch/" not in k[len(f"predictions/{spec.name}/") :]
        ]
        out += [("batch", k) for k in store.list(batch_prefix(spec, day)) if k.endswith(".parquet")]
    return out


ROWS_KINDS = ("answered", "shadow", "all")


def read_predictions(
    store: ObjectStore, spec: DatasetSpec, days: list[date], *, rows: str = "answered"
) -> tuple[pd.DataFrame, list[str]]:
    """The prediction log of the days, with a `source` column and `variant` and `model_version`
    on every row (`serving.predlog.with_variant_columns`); (frame, keys read).

    `rows`: "answered" (the default: what callers got, every variant but shadow), "shadow" (the
    shadow's own scores, never an answer) or "all".
    """
    import pandas as pd

    from include.mlops.serving.predlog import is_answer, with_variant_columns

    if rows not in ROWS_KINDS:
        raise ValueError(f"rows={rows!r}: use one of {', '.join(ROWS_KINDS)}")
    keys = prediction_keys(store, spec, days)
    frames = []
    for source, key in keys:
        df = store.get_parquet(key)
        df[SOURCE] = source
        frames.append(df)
    if not frames:
        return pd.DataFrame(), []
    df = with_variant_columns(pd.concat(frames, ignore_index=True))
    if "ts" in df.columns:
        df["ts"] = pd.to_datetime(df["ts"], utc=True)
    if spec.timestamp in df.columns:
        df[spec.timestamp] = pd.to_datetime(df[spec.timestamp], utc=True)
    if rows != "all":
        answered = is_answer(df["variant"])
        df = df[answered if rows == "answered" else ~answered].reset_index(drop=True)
    return df, [k for _, k in keys]


def read_labels(store: ObjectStore, spec: DatasetSpec, first_arrival: date, last_arrival: date) -> pd.DataFrame:
    """Ground truth that arrived in [first_arrival, last_arrival]: staged by ml_training's extract,
    else straight from the raw label feed."""
    import pandas as pd

    feed = spec.label_spec.feed_prefix
    frames = []
    day = first_arrival
    while day <= last_arrival:
        staged = f"staging/{spec.name}/labels/dt={day.isoformat()}/labels.parquet"
        if store.exists(staged):
            frames.append(store.get_parquet(staged))
        elif feed:
            frames += [
                store.get_parquet(k) for k in store.list(f"{feed}/dt={day.isoformat()}/") if k.endswith(".parquet")
            ]
        day += timedelta(days=1)
    cols = [spec.entity_key, spec.timestamp, spec.label]
    if not frames:
        return pd.DataFrame(columns=cols)
    labels = pd.concat(frames, ignore_index=True)[cols]
    labels[spec.timestamp] = pd.to_datetime(labels[spec.timestamp], utc=True)
    if spec.entity_is_string:
        from include.mlops.features import entity_column

        labels[spec.entity_key] = entity_column(spec, labels[spec.entity_key])
    return labels.drop_duplicates([spec.entity_key, spec.timestamp], keep="last").reset_index(drop=True)


def join_labels(preds: pd.DataFrame, labels: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """Predictions that have ground truth: on (entity, event time) when the log has the event
    time, else on (entity, date of the request)."""
    import pandas as pd

    if preds.empty or labels.empty:
        return preds.iloc[0:0].assign(**{spec.label: pd.Series(dtype="float64")})
    ent, ts = spec.entity_key, spec.timestamp
    lab = labels[[ent, ts, spec.label]].copy()
    lab[ts] = lab[ts].astype("datetime64[ns, UTC]")
    if spec.entity_is_string:  # text on both sides: the log holds pandas' string, labels may hold objects
        from include.mlops.features import entity_column

        lab[ent] = entity_column(spec, lab[ent])
        preds = preds.assign(**{ent: entity_column(spec, preds[ent])})
    parts = []
    has_ts = preds[ts].notna() if ts in preds.columns else pd.Series(False, index=preds.index)
    if has_ts.any():
        p = preds[has_ts].drop(columns=[spec.label], errors="ignore").copy()
        p[ts] = p[ts].astype("datetime64[ns, UTC]")
        parts.append(p.merge(lab, on=[ent, ts], how="inner"))
    if (~has_ts).any():
        p = preds[~has_ts].drop(columns=[spec.label], errors="ignore").copy()
        p["_day"] = pd.to_datetime(p["ts"], utc=True).dt.date
        by_day = lab.assign(_day=lab[ts].dt.date).drop_duplicates([ent, "_day"], keep="last")
        parts.append(p.merge(by_day[[ent, "_day", spec.label]], on=[ent, "_day"], how="inner").drop(columns="_day"))
    return pd.concat(parts, ignore_index=True) if parts else preds.iloc[0:0]


def sample(df: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """At most n rows, the same ones for the same data and seed."""
    if len(df) <= n:
        return df
    return df.sample(n=n, random_state=seed).sort_index()


# -- the champion and its reference ------------------------------------------------------------------
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
    from include.mlops.registry import CHAMPION, alias_version

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
    from include.mlops.features import model_features
    from include.mlops.scores import score_model

    key = f"monitoring/{spec.name}/reference/v{champ.version}.parquet"
    if store.exists(key):
        return store.get_parquet(key), store.uri(key)
    from include.mlops import model_io

    ref = store.get_parquet(store.key_of(champ.train_uri))
    # the one loader that refuses artifacts able to run code (include.mlops.model_io)
    model = model_io.load(f"models:/{champ.model}/{champ.version}", f"{champ.model} v{champ.version} (the champion)")
    scored = score_model(model, ref[model_features(spec)], spec)
    ref[SCORE], ref[PREDICTION] = scored.score, scored.prediction
    return ref, store.put_parquet(key, ref)


def reference_classes(ref: pd.DataFrame, spec: DatasetSpec) -> list[Any]:
    """The champion's classes: those of its training labels (scikit-learn's `classes_` is exactly
    the sorted distinct training labels), checked against the spec."""
    from include.mlops.scores import training_classes

    return training_classes(ref[spec.label], spec)


def _as_text(values: pd.Series) -> pd.Series:
    """Class values as text, for Evidently (which compares the target with `pos_label` and the
    predictions as they are, and refuses booleans): 1 and 1.0 both read "1"."""
    from include.mlops.scores import label_text, plain

    return values.map(lambda v: None if v is None or (isinstance(v, float) and v != v) else label_text(plain(v)))


# -- Evidently ----------------------------------------------------------------------------------------
def _definition(
    spec: DatasetSpec,
    extra_num: tuple[str, ...] = (),
    extra_cat: tuple[str, ...] = (),
    classification: bool = False,
    only: list[str] | None = None,
    pos_label: Any = None,
) -> Any:
    from evidently import BinaryClassification, DataDefinition, MulticlassClassification, Regression

    from include.mlops.features import derived_features

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
    from evidently import Report
    from evidently.presets import DataDriftPreset

    from include.mlops.features import model_features

    feats = columns or model_features(spec)
    dd = _definition(spec, only=feats)
    report = Report(
        [
            DataDriftPreset(
                columns=feats,
                num_method=cfg.num_method,
                num_threshold=cfg.num_threshold,
                cat_method=cfg.cat_method,
                cat_threshold=cfg.cat_threshold,
                drift_share=cfg.drift_share,
            )
        ],
        include_tests=True,
    )
    return report.run(
        _dataset(cur[feats], dd),
        _dataset(ref[feats], dd),
        timestamp=timestamp,
        name=name,
        metadata={"report": "data_drift"},
    )


def prediction_drift_report(
    ref: pd.DataFrame,
    cur: pd.DataFrame,
    spec: DatasetSpec,
    cfg: MonitoringConfig,
    timestamp: datetime | None = None,
    name: str | None = None,
) -> Any:
    from evidently import DataDefinition, Report
    from evidently.metrics import MeanValue, ValueDrift

    dd = DataDefinition(numerical_columns=[SCORE])
    report = Report(
        [
            ValueDrift(column=SCORE, method=cfg.prediction_method, threshold=cfg.prediction_threshold),
            MeanValue(column=SCORE),
        ],
        include_tests=True,
    )
    return report.run(
        _dataset(cur[[SCORE]], dd),
        _dataset(ref[[SCORE]], dd),
        timestamp=timestamp,
        name=name,
        metadata={"report": "prediction_drift"},
    )


def performance_report(
    ref: pd.DataFrame,
    labelled: pd.DataFrame,
    spec: DatasetSpec,
    cfg: MonitoringConfig,
    timestamp: datetime | None = None,
    name: str | None = None,
) -> Any:
    """Target drift and model quality on the labelled part of the window."""
    from evidently import DataDefinition, Report
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
                f[c] = _as_text(f[c])
    else:
        target_drift = ValueDrift(column=spec.label, method=cfg.num_method, threshold=cfg.num_threshold)
        dd = DataDefinition(numerical_columns=cols, regression=_definition(spec, classification=True).regression)
        preset = RegressionPreset()
        cur, ref = labelled[cols], ref[cols]
    report = Report([target_drift, preset], include_tests=False)
    return report.run(
        _dataset(cur, dd), _dataset(ref, dd), timestamp=timestamp, name=name, metadata={"report": "performance"}
    )


def data_quality_report(
    cur: pd.DataFrame,
    spec: DatasetSpec,
    cfg: MonitoringConfig,
    timestamp: datetime | None = None,
    name: str | None = None,
) -> Any:
    """Nulls in required features, unknown categories and out-of-range values, each a test
    against `max_bad_fraction`; optional features are reported, not tested."""
    from evidently import Report
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
    dd = _definition(spec)
    frame = cur[spec.feature_names].copy()
    for f in spec.features:  # the log may hold anything a client sent: coerce, so bad values count, not crash
        if f.is_numeric:
            import pandas as pd

            frame[f.name] = pd.to_numeric(frame[f.name], errors="coerce")
    return Report(metrics, include_tests=True).run(
        _dataset(frame, dd), None, timestamp=timestamp, name=name, metadata={"report": "data_quality"}
    )


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

    from include.mlops.evaluation import metrics as perf_metrics
    from include.mlops.features import model_features

    feats = model_features(spec)
    missing = [c for c in [*feats, SCORE] if c not in cur.columns]
    if missing:  # a log without a column the contract promises: the quality check will say so
        cur = cur.assign(**{c: float("nan") for c in missing})
    cur_s = sample(cur, cfg.sample_rows, cfg.sample_seed)
    ref_s = sample(ref, cfg.sample_rows, cfg.sample_seed)
    lab_s = sample(labelled, cfg.sample_rows, cfg.sample_seed)
    snaps: dict[str, Any] = {}
    snaps["data_quality"] = data_quality_report(cur_s, spec, cfg, timestamp, f"{day} data_quality")
    dq = quality_numbers(snaps["data_quality"].dict())
    # Evidently refuses a column with no values at all; such a column fails the quality check above
    usable = [c for c in feats if cur_s[c].notna().any() and ref_s[c].notna().any()]
    snaps["data_drift"] = data_drift_report(ref_s, cur_s, spec, cfg, timestamp, f"{day} data_drift", usable)
    drift = drift_numbers(snaps["data_drift"].dict(), cfg)
    drift["empty_columns"] = sorted(set(feats) - set(usable))
    pred = {"score": None, "drifted": False, "mean": None, "reference_mean": float(ref_s[SCORE].mean())}
    if SCORE in cur_s.columns and cur_s[SCORE].notna().any():
        snaps["prediction_drift"] = prediction_drift_report(
            ref_s, cur_s.dropna(subset=[SCORE]), spec, cfg, timestamp, f"{day} prediction_drift"
        )
        pd_d = drift_numbers(snaps["prediction_drift"].dict(), cfg)["columns"].get(SCORE, {})
        pred = {
            "score": pd_d.get("score"),
            "drifted": bool(pd_d.get("drifted")),
            "method": pd_d.get("method"),
            "threshold": pd_d.get("threshold"),
            "mean": float(cur_s[SCORE].mean()),
            "reference_mean": float(ref_s[SCORE].mean()),
        }
    target, perf = None, {}
    lab_ok = lab_s.dropna(subset=[SCORE, spec.label]) if len(lab_s) else lab_s
    if len(lab_ok):
        y = lab_ok[spec.label].to_numpy()
        perf = {
            k: (None if isinstance(v, float) and math.isnan(v) else v)
            for k, v in perf_metrics(y, _logged_scores(lab_ok, ref_s, spec), spec).items()
        }
        if len(lab_ok) >= 2:
            snaps["performance"] = performance_report(ref_s, lab_ok, spec, cfg, timestamp, f"{day} performance")
            td = drift_numbers(snaps["performance"].dict(), cfg)["columns"].get(spec.label, {})
            target = {
                "score": td.get("score"),
                "drifted": bool(td.get("drifted")),
                "method": td.get("method"),
                "threshold": td.get("threshold"),
                **_target_level(y, ref_s, spec),
            }
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


def _logged_scores(labelled: pd.DataFrame, ref: pd.DataFrame, spec: DatasetSpec) -> Any:
    """What `evaluation.metrics` takes for logged predictions: binary, the positive class's
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
        text = _as_text(pd.Series(np.asarray(values, dtype=object)))
        return {str(k): float(v) for k, v in text.value_counts(normalize=True).sort_index().items()}

    return {"shares": shares(y), "reference": shares(ref[spec.label])}


# -- per variant and version ---------------------------------------------------------------------------
def split_answers(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(answered rows, shadow rows) of a frame `read_predictions(rows="all")` returned."""
    from include.mlops.serving.predlog import is_answer

    if "variant" not in df.columns:  # an empty read: no rows of either kind
        return df, df
    answered = is_answer(df["variant"])
    return df[answered].reset_index(drop=True), df[~answered].reset_index(drop=True)


def judged_rows(answered: pd.DataFrame) -> pd.DataFrame:
    """What the window's reports and the drift policy judge: the champion's answers (variant
    `champion`, whichever version held the alias when it answered). A canary's, a pinned
    version's and a shadow's rows are judged per version in `variant_numbers`, not here."""
    from include.mlops.serving.predlog import DEFAULT_VARIANT

    if "variant" not in answered.columns:
        return answered
    return answered[answered["variant"] == DEFAULT_VARIANT].reset_index(drop=True)


def _group_order(variant: str, version: str) -> tuple[int, float, str]:
    rank = {"champion": 0, "challenger": 1, "pinned": 2, "shadow": 9}.get(variant, 5)
    return rank, float(version) if version.isdigit() else math.inf, f"{variant}/{version}"


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
    """One row per (variant, version) of the window: rows, share of the answers, labelled rows,
    performance on them, mean score, prediction drift and (answers only) feature drift share
    against the champion's reference. Shadow rows get their own rows, marked `answered: False`,
    and no feature drift (their inputs are the requests the champion answered).

    `labelled`: the label-joined log of the lookback, every variant (`read_predictions(rows="all")`).
    Each group is sampled like the window (`sample_rows`, `sample_seed`). `headline`: the window's
    analysis of the judged rows; when one champion version answered them all, its drift numbers
    are that group's (the same rows: no second Evidently run)."""
    from include.mlops.evaluation import metrics as perf_metrics
    from include.mlops.features import model_features
    from include.mlops.serving.predlog import DEFAULT_VARIANT

    feats = model_features(spec)
    ref_s = sample(ref, cfg.sample_rows, cfg.sample_seed)
    total = len(answered)
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
            g_s = sample(g.reset_index(drop=True), cfg.sample_rows, cfg.sample_seed)
            row: dict[str, Any] = {
                "variant": str(variant),
                "version": str(version),
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
            scored = g_s.dropna(subset=[SCORE]) if SCORE in g_s.columns else g_s.iloc[0:0]
            if len(scored):
                row["score_mean"] = float(scored[SCORE].mean())
            if headline is not None and is_judged:
                row["prediction_drift"] = headline.prediction_drift.get("score")
                row["prediction_drifted"] = bool(headline.prediction_drift.get("drifted"))
                row["drift_share"] = headline.drift["share"]
            elif len(scored) >= 2:
                snap = prediction_drift_report(ref_s, scored, spec, cfg, timestamp, f"{day} {variant} v{version}")
                pdd = drift_numbers(snap.dict(), cfg)["columns"].get(SCORE, {})
                row["prediction_drift"], row["prediction_drifted"] = pdd.get("score"), bool(pdd.get("drifted"))
            if row["drift_share"] is None and is_ans and len(g_s) >= 2:
                usable = [c for c in feats if c in g_s.columns and g_s[c].notna().any() and ref_s[c].notna().any()]
                if usable:
                    snap = data_drift_report(ref_s, g_s, spec, cfg, timestamp, f"{day} {variant} v{version}", usable)
                    row["drift_share"] = drift_numbers(snap.dict(), cfg)["share"]
            lab = lab_groups.get((variant, version))
            if lab is not None:
                lab = sample(lab.reset_index(drop=True), cfg.sample_rows, cfg.sample_seed)
                lab = lab.dropna(subset=[SCORE, spec.label])
                row["labelled_rows"] = len(lab)
                if len(lab):
                    row["performance"] = {
                        k: (None if isinstance(v, float) and math.isnan(v) else v)
                        for k, v in perf_metrics(
                            lab[spec.label].to_numpy(), _logged_scores(lab, ref_s, spec), spec
                        ).items()
                    }
            out.append(row)
    return sorted(out, key=lambda r: _group_order(r["variant"], r["version"]))


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


# -- history: MLflow and the Evidently workspace --------------------------------------------------------
def monitoring_experiment(spec: DatasetSpec) -> str:
    return f"{spec.name}-monitoring"


def _clean(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_./ " else "_" for ch in name)


def log_history(
    settings: Settings,
    spec: DatasetSpec,
    interval: Interval,
    cfg: MonitoringConfig,
    summary: dict[str, Any],
    analysis: WindowAnalysis,
) -> tuple[str, str]:
    """One MLflow run per window (found again by its tag on a re-run); returns (run_id, experiment_id)."""
    from mlflow.entities import Metric, Param, RunTag

    from include.mlops.registry import ensure_experiment, setup_mlflow

    client = setup_mlflow(settings)
    exp_id = ensure_experiment(client, monitoring_experiment(spec), settings)
    # A re-run replaces the window's run: MLflow keeps every logged value, and one logged again at
    # the same step and time would not be the one the UI shows.
    for old in client.search_runs([exp_id], f"tags.`mlops.window` = '{interval.key}'"):
        client.delete_run(old.info.run_id)
    run_id = client.create_run(
        exp_id, run_name=f"{spec.name}-{summary['window']['day']}", start_time=int(interval.end.timestamp() * 1000)
    ).info.run_id
    ts = int(interval.end.timestamp() * 1000)
    step = interval.end.toordinal()
    nums: dict[str, float | None] = {
        "rows": analysis.rows,
        "rows_used": analysis.rows_used,
        "labelled_rows": analysis.labelled_rows,
        "drift_share": analysis.drift["share"],
        "drifted_features": analysis.drift["count"],
        "prediction_drift_score": analysis.prediction_drift.get("score"),
        "prediction_mean": analysis.prediction_drift.get("mean"),
        "target_drift_score": (analysis.target_drift or {}).get("score"),
        "data_quality_failures": len(analysis.data_quality["failures"]),
        "data_quality_max_bad_share": analysis.data_quality["max_bad_share"],
        "champion_holdout_metric": summary["champion"]["holdout_metric"],
    }
    nums.update({f"drift_{_clean(c)}": v["score"] for c, v in analysis.drift["columns"].items()})
    nums.update({f"perf_{k}": v for k, v in analysis.performance.items()})
    nums.update({"answered_rows": summary.get("answered_rows"), "shadow_rows": summary.get("shadow_rows")})
    for v in summary.get("variants") or []:  # e.g. challenger_v3_rows, shadow_v3_roc_auc
        tag = _clean(f"{v['variant']}_v{v['version']}")
        nums[f"{tag}_rows"] = v["rows"]
        nums[f"{tag}_{spec.primary_metric}"] = v["performance"].get(spec.primary_metric)
        nums[f"{tag}_prediction_drift"] = v["prediction_drift"]
    metrics = [
        Metric(k, float(v), ts, step)
        for k, v in nums.items()
        if v is not None and not (isinstance(v, float) and math.isnan(v))
    ]
    params = [
        Param(k, str(v))
        for k, v in {
            "sample_rows": cfg.sample_rows,
            "sample_seed": cfg.sample_seed,
            "num_method": cfg.num_method,
            "num_threshold": cfg.num_threshold,
            "cat_method": cfg.cat_method,
            "cat_threshold": cfg.cat_threshold,
            "prediction_method": cfg.prediction_method,
            "label_lookback_days": cfg.label_lookback_days,
            "champion_version": summary["champion"]["version"],
            "reference_rows": analysis.reference_rows,
        }.items()
    ]
    tags = [
        RunTag(k, str(v))
        for k, v in {
            "mlops.window": interval.key,
            "mlops.window_day": summary["window"]["day"],
            "mlops.dataset": spec.name,
            "mlops.champion_version": summary["champion"]["version"],
            "mlops.champion_run_id": summary["champion"]["run_id"],
            "mlops.report_uri": summary["report_html"],
            "mlops.summary_uri": summary["summary_uri"],
            "mlops.reference_uri": summary["reference_uri"],
        }.items()
    ]
    client.log_batch(run_id, metrics=metrics, params=params, tags=tags)
    client.log_dict(run_id, summary, "monitoring/summary.json")
    client.log_text(run_id, summary.get("variants_table") or "", "monitoring/variants.md")
    client.set_terminated(run_id, "FINISHED", end_time=ts)
    return run_id, exp_id


def _panels(spec: DatasetSpec) -> list[tuple[str, Any]]:
    from evidently.sdk.models import PanelMetric
    from evidently.sdk.panels import line_plot_panel

    from include.mlops.features import model_features

    drift_share = line_plot_panel(
        title="Share of drifted features",
        values=[PanelMetric(legend="share", metric="DriftedColumnsCount", metric_labels={"value_type": "share"})],
    )
    per_feature = line_plot_panel(
        title="Drift score per feature",
        values=[PanelMetric(legend=c, metric="ValueDrift", metric_labels={"column": c}) for c in model_features(spec)],
    )
    prediction = line_plot_panel(
        title="Prediction drift (score)",
        values=[PanelMetric(legend="drift score", metric="ValueDrift", metric_labels={"column": SCORE})],
        size="half",
    )
    pred_mean = line_plot_panel(
        title="Mean score",
        values=[PanelMetric(legend="mean", metric="MeanValue", metric_labels={"column": SCORE})],
        size="half",
    )
    if spec.is_multiclass:  # from the predicted class: the log keeps no per-class probabilities
        perf_metrics = [("F1", "F1Score"), ("Accuracy", "Accuracy")]
    elif spec.is_classification:
        perf_metrics = [("ROC AUC", "RocAuc"), ("F1", "F1Score"), ("Accuracy", "Accuracy")]
    else:
        perf_metrics = [("RMSE", "RMSE"), ("MAE", "MAE"), ("R2", "R2Score")]
    perf = line_plot_panel(
        title="Model quality on the labelled part",
        values=[PanelMetric(legend=leg, metric=m) for leg, m in perf_metrics],
    )
    target = line_plot_panel(
        title="Target drift",
        values=[PanelMetric(legend="drift score", metric="ValueDrift", metric_labels={"column": spec.label})],
        size="half",
    )
    rows = line_plot_panel(
        title="Rows in the window", values=[PanelMetric(legend="rows", metric="RowCount")], size="half"
    )
    missing = line_plot_panel(
        title="Missing share per required feature",
        values=[
            PanelMetric(
                legend=f.name, metric="MissingValueCount", metric_labels={"column": f.name, "value_type": "share"}
            )
            for f in spec.features
            if f.required
        ],
    )
    return [
        ("Drift", drift_share),
        ("Drift", per_feature),
        ("Drift", prediction),
        ("Drift", pred_mean),
        ("Performance", perf),
        ("Performance", target),
        ("Data quality", rows),
        ("Data quality", missing),
    ]


def add_to_workspace(settings: Settings, spec: DatasetSpec, day: str, snapshots: dict[str, Any]) -> dict[str, str]:
    """Add the window's snapshots to the Evidently workspace, replacing the window's earlier ones.

    Our own small index (a dot-file Evidently ignores) maps window -> snapshot ids, so a re-run
    replaces rather than duplicates, without reading every snapshot back.
    """
    from evidently.ui.workspace import Workspace

    path = settings.home / "evidently"
    path.mkdir(parents=True, exist_ok=True)
    ws = Workspace.create(str(path))
    name = monitoring_experiment(spec)
    found = ws.search_project(name)
    if found:
        project = found[0]
    else:
        project = ws.create_project(
            name, description=f"Monitoring of {spec.model_name}: one snapshot per report and window"
        )
        for tab, panel in _panels(spec):
            project.dashboard.add_panel(panel, tab=tab)
        _dedupe_dashboard(ws, project)
    index_path = path / f".mlops-index-{project.id}.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {}
    for sid in index.get(day, {}).values():
        try:
            ws.delete_run(project.id, sid)
        except Exception:  # already gone
            pass
    ids = {}
    for kind, snap in snapshots.items():
        ids[kind] = str(ws.add_run(project.id, snap).id)
    index[day] = ids
    tmp = index_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(index, indent=1, sort_keys=True))
    tmp.replace(index_path)
    return {"project_id": str(project.id), **ids}


def _dedupe_dashboard(ws: Any, project: Any) -> None:
    """Evidently 0.7 lists a panel twice when it is added to an existing tab; keep one of each."""
    model = project.dashboard.model()
    changed = False
    for tab in model.tabs:
        seen: list[Any] = []
        for p in tab.panels:
            if p not in seen:
                seen.append(p)
        if len(seen) != len(tab.panels):
            tab.panels, changed = seen, True
    if changed:
        ws.save_dashboard(project.id, model)


# -- the monitoring task ------------------------------------------------------------------------------
def window_of(interval: Interval) -> dict[str, str]:
    return {
        "start": interval.start.isoformat(),
        "end": interval.end.isoformat(),
        "day": interval.days[-1].isoformat(),
        "key": interval.key,
    }


def report_prefix(spec: DatasetSpec, day: str) -> str:
    return f"reports/monitoring/{spec.name}/dt={day}"


def _save(store: ObjectStore, prefix: str, kind: str, snap: Any) -> dict[str, str]:
    html = snap.get_html_str(as_iframe=False)
    return {
        "html": store.put_text(f"{prefix}/{kind}.html", html),
        "json": store.put_text(f"{prefix}/{kind}.json", snap.json()),
    }


def monitor(interval: Interval, spec_name: str | None = None, *, history: bool = True) -> dict[str, Any]:
    """Monitor one window: reports to the store, numbers to the history, a summary for the policy.

    Idempotent: reports and the summary are overwritten at window-keyed paths, the MLflow run and
    the workspace snapshots of the window are replaced, not added.
    """
    from include.mlops.config import get_settings, quiet_telemetry
    from include.mlops.registry import setup_mlflow
    from include.mlops.spec import load_spec
    from include.mlops.storage import ObjectStore

    quiet_telemetry()
    settings = get_settings()
    spec = load_spec(spec_name or settings.dataset)
    store = ObjectStore(settings.store_uri, settings.s3_endpoint_url)
    cfg = MonitoringConfig.from_spec(spec)
    client = setup_mlflow(settings)
    champ = champion_info(client, spec)
    window = window_of(interval)
    day = window["day"]
    prefix = report_prefix(spec, day)

    logged, keys = read_predictions(store, spec, interval.days, rows="all")
    answered, shadow = split_answers(logged)
    cur = judged_rows(answered)
    first_event = interval.days[0] - timedelta(days=cfg.label_lookback_days)
    lab_days = [first_event + timedelta(days=i) for i in range((interval.days[-1] - first_event).days + 1)]
    lab_preds, _ = read_predictions(store, spec, lab_days, rows="all")
    labels = read_labels(store, spec, first_event, interval.days[-1])
    labelled_all = join_labels(lab_preds, labels, spec)
    labelled = judged_rows(split_answers(labelled_all)[0])
    base = {
        "dataset": spec.name,
        "spec": spec_name or spec.name,
        "window": window,
        "champion": asdict(champ),
        "rows": len(cur),
        "answered_rows": len(answered),
        "shadow_rows": len(shadow),
        "judged": "the champion's answers (variant champion); every version's and the shadow's own numbers are in `variants`",
        "labelled_rows": len(labelled),
        "prediction_objects": len(keys),
        "sample": {"rows": cfg.sample_rows, "seed": cfg.sample_seed},
        "labelled_event_days": [lab_days[0].isoformat(), lab_days[-1].isoformat()],
    }
    store.delete_prefix(f"{prefix}/")
    ref, ref_uri = reference_frame(store, spec, champ) if len(logged) else (None, "")

    def per_version(headline: WindowAnalysis | None = None) -> None:
        variants: list[dict[str, Any]] = []
        if ref is not None:
            variants = variant_numbers(
                ref, answered, shadow, labelled_all, spec, cfg, interval.end, day, headline=headline
            )
        base["variants"] = variants
        base["variants_table"] = variants_table(variants, spec.primary_metric)
        if variants:
            store.put_text(f"{prefix}/variants.md", base["variants_table"] + "\n")
        log.info(
            "window %s per variant and version (%d answered, %d shadow rows, never counted as answers):\n%s",
            day,
            len(answered),
            len(shadow),
            base["variants_table"],
        )

    if cur.empty:
        per_version()
        log.warning(
            "no answers of the champion logged for %s in window %s (%d rows in the log)", spec.name, day, len(logged)
        )
        summary = {
            **base,
            "rows_used": 0,
            "drift_share": 0.0,
            "drifted_features": [],
            "reports": {},
            "report_html": "",
            "data_quality": {"passed": True, "failures": []},
            "performance": {},
            "reference_uri": ref_uri,
            "run_id": None,
            "experiment_id": None,
            "note": "no predictions in the window" if logged.empty else "no answers of the champion in the window",
        }
        summary["summary_uri"] = store.put_json(f"{prefix}/summary.json", summary)
        return summary

    analysis = analyse(ref, cur, labelled, spec, cfg, timestamp=interval.end, day=day)
    per_version(analysis)
    reports = {kind: _save(store, prefix, kind, snap) for kind, snap in analysis.snapshots.items()}
    summary = {
        **base,
        "rows_used": analysis.rows_used,
        "reference_uri": ref_uri,
        "reference_rows": analysis.reference_rows,
        "reference_rows_used": analysis.reference_rows_used,
        "drift_share": analysis.drift["share"],
        "drifted_features": analysis.drifted_features,
        "feature_drift": {
            c: {
                "score": round(v["score"], 6),
                "drifted": v["drifted"],
                "method": v["method"],
                "threshold": v["threshold"],
            }
            for c, v in analysis.drift["columns"].items()
        },
        "prediction_drift": analysis.prediction_drift,
        "target_drift": analysis.target_drift,
        "performance": analysis.performance,
        "data_quality": {k: v for k, v in analysis.data_quality.items() if k != "shares"},
        "reports": {k: v["html"] for k, v in reports.items()},
        "report_html": reports["data_drift"]["html"],
    }
    summary["summary_uri"] = store.uri(f"{prefix}/summary.json")
    summary["run_id"], summary["experiment_id"] = (None, None)
    if history:
        summary["run_id"], summary["experiment_id"] = log_history(settings, spec, interval, cfg, summary, analysis)
        try:
            summary["evidently"] = add_to_workspace(settings, spec, day, analysis.snapshots)
        except Exception as exc:  # the dashboard is a view; the reports and MLflow hold the record
            log.warning("could not add snapshots to the Evidently workspace: %s", exc)
    store.put_json(f"{prefix}/summary.json", summary)
    log.info(
        "window %s: %d rows (%d used, seed %d), drift share %.3f, drifted %s, labelled %d, perf %s, dq %s",
        day,
        analysis.rows,
        analysis.rows_used,
        cfg.sample_seed,
        analysis.drift["share"],
        analysis.drifted_features,
        analysis.labelled_rows,
        analysis.performance,
        "passed" if analysis.data_quality["passed"] else analysis.data_quality["failures"],
    )
    return summary


# -- simulated prediction logs (tests, benchmarks, the demo) ---------------------------------------------
def simulate_predictions(
    spec: DatasetSpec,
    model: Any,
    day: date,
    scenario: Any = None,
    rows: int | None = None,
    seed: int | None = None,
    version: str = "1",
    variant: str = "champion",
    with_event_time: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A day of the generator scored by `model`, in the prediction-log layout; (log, labels)."""
    import numpy as np
    import pandas as pd

    from include.mlops.data.generator import Scenario, generate_day
    from include.mlops.features import build_features, model_features
    from include.mlops.scores import score_model

    raw, labels = generate_day(spec, day, scenario or Scenario(), rows=rows, seed=seed)
    feats = build_features(raw, spec)
    X = feats[model_features(spec)]
    scored = score_model(model, X, spec)
    out = pd.DataFrame({"request_id": [f"{day:%Y%m%d}-{i:07d}" for i in range(len(feats))]})
    ts = pd.to_datetime(raw[spec.timestamp], utc=True)
    rng = np.random.default_rng([int(seed or 0), day.toordinal(), 17])
    out["ts"] = (ts + pd.to_timedelta(rng.integers(1, 600, len(ts)), unit="s")).to_numpy()
    out[spec.entity_key] = raw[spec.entity_key].to_numpy()
    for c in model_features(spec):
        out[c] = X[c].to_numpy()
    out[PREDICTION] = scored.prediction
    out[SCORE] = np.asarray(scored.score, dtype=float)
    out["model_name"], out["model_version"], out["variant"] = spec.model_name, str(version), variant
    if with_event_time:
        out[spec.timestamp] = ts.to_numpy()
    return out, labels


def write_prediction_log(
    store: ObjectStore, spec: DatasetSpec, day: date, log_df: pd.DataFrame, source: str = "online", part: str = "part-0"
) -> str:
    """Write a frame where the scoring service (online) or batch scoring would."""
    if source == "batch":
        return store.put_parquet(f"{batch_prefix(spec, day)}predictions.parquet", log_df)
    return store.put_parquet(f"{online_prefix(spec, day)}{part}.parquet", log_df)
