"""The lifecycle steps as plain functions: what each `ml_training` task does, minus Airflow.

Each step takes the spec, the data interval and small inputs, reads and writes the object store,
and returns a small dict for XCom (URIs, versions, metrics). Every step is idempotent for its
interval: outputs are overwritten at interval-keyed paths and a re-run trains and registers
nothing new.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from include.mlops.config import Settings
    from include.mlops.spec import DatasetSpec
    from include.mlops.storage import ObjectStore

log = logging.getLogger(__name__)


class NotEnoughData(Exception):
    """Too few labelled rows to train yet; the DAG skips training rather than failing."""


@dataclass(frozen=True)
class Interval:
    start: datetime
    end: datetime

    @property
    def days(self) -> list[date]:
        """Calendar days whose batches belong to the interval [start, end)."""
        first = self.start.date()
        last = (self.end - timedelta(microseconds=1)).date() if self.end > self.start else first
        return [first + timedelta(days=i) for i in range((last - first).days + 1)]

    @property
    def key(self) -> str:
        return f"{self.start:%Y%m%dT%H%M%S}_{self.end:%Y%m%dT%H%M%S}"

    @property
    def label(self) -> str:
        return f"{self.start.isoformat()}/{self.end.isoformat()}"


def _ctx(spec_name: str | None = None) -> tuple[DatasetSpec, ObjectStore, Settings]:
    from include.mlops.config import get_settings
    from include.mlops.spec import load_spec
    from include.mlops.storage import ObjectStore

    s = get_settings()
    return load_spec(spec_name or s.dataset), ObjectStore(s.store_uri, s.s3_endpoint_url), s


def staging_key(spec: DatasetSpec, day: date, what: str = "events") -> str:
    if what == "labels":
        return f"staging/{spec.name}/labels/dt={day.isoformat()}/labels.parquet"
    return f"staging/{spec.name}/events/dt={day.isoformat()}/events.parquet"


# -- extract ------------------------------------------------------------------------------------
def extract(interval: Interval, spec_name: str | None = None) -> dict[str, Any]:
    """Copy the interval's raw batches (and the labels that arrived in it) to staging/, overwriting.

    The bytes are copied as they are: no decoding and re-encoding of the table (a second per
    200k rows); the parquet footer gives the row counts and proves each object is a table."""
    from include.mlops.data.generator import events_key, labels_key

    spec, store, _ = _ctx(spec_name)
    staged, rows, labels = [], 0, 0
    for day in interval.days:
        src = events_key(spec, day)
        if not store.exists(src):
            raise FileNotFoundError(f"no raw batch for {spec.name} on {day}: expected {store.uri(src)}")
        store.delete_prefix(f"staging/{spec.name}/events/dt={day.isoformat()}/")
        n, uri = _copy_parquet(store, src, staging_key(spec, day))
        staged.append(uri)
        rows += n
        lsrc = labels_key(spec, day)
        if store.exists(lsrc):
            labels += _copy_parquet(store, lsrc, staging_key(spec, day, "labels"))[0]
    log.info("staged %d rows from %d batch(es) and %d late labels for %s", rows, len(staged), labels, interval.label)
    return {"staged": staged, "rows": rows, "labels": labels, "days": [d.isoformat() for d in interval.days]}


def _copy_parquet(store: ObjectStore, src: str, dst: str) -> tuple[int, str]:
    """Copy one parquet object; (rows, destination URI). Fails on an object that is not parquet."""
    import io

    import pyarrow.parquet as pq

    data = store.get_bytes(src)
    try:
        rows = pq.read_metadata(io.BytesIO(data)).num_rows
    except Exception as exc:
        raise ValueError(f"{store.uri(src)} is not a readable parquet table: {exc}") from exc
    return rows, store.put_bytes(dst, data)


# -- validate -----------------------------------------------------------------------------------
def validate(interval: Interval, spec_name: str | None = None) -> dict[str, Any]:
    """Run the spec's GX suite on each staged batch; quarantine and raise on a broken contract."""
    from include.mlops.data.generator import events_key
    from include.mlops.validation import DataValidationError, failure_message, render_html, validate_frame

    spec, store, _ = _ctx(spec_name)
    reports, warnings, rows = [], [], 0
    for day in interval.days:
        # text columns arrive as categories (dictionary-decoded): quicker to read, and GX tests
        # categories far faster than Python strings (see validation._batch_frame)
        df = store.get_parquet(staging_key(spec, day), read_dictionary=spec.categorical_features)
        outcome = validate_frame(df, spec)
        base = f"reports/validation/{spec.name}/dt={day.isoformat()}"
        report_uri = store.put_json(
            f"{base}/validation.json",
            {
                **outcome.summary(),
                "failures": outcome.failures,
                "warnings_detail": outcome.warnings,
                "gx_result": outcome.result,
            },
        )
        store.put_text(f"{base}/validation.html", render_html(outcome, f"{spec.name} batch {day}"))
        reports.append(report_uri)
        rows += outcome.rows
        for w in outcome.warnings:
            log.warning(
                "value skew on %s (recorded, not blocking): %s unexpected=%s", day, w["label"], w["unexpected_count"]
            )
            warnings.append(f"{day}: {w['label']}")
        qprefix = f"quarantine/{spec.name}/dt={day.isoformat()}"
        if not outcome.success:
            store.delete_prefix(f"{qprefix}/")
            store.copy(events_key(spec, day), f"{qprefix}/events.parquet")
            store.put_json(
                f"{qprefix}/validation.json",
                {**outcome.summary(), "failures": outcome.failures, "gx_result": outcome.result},
            )
            # downstream steps must never see the bad batch
            store.delete_prefix(f"staging/{spec.name}/events/dt={day.isoformat()}/")
            store.delete_prefix(f"features/{spec.name}/part-{day.isoformat()}.parquet")
            raise DataValidationError(failure_message(outcome, f"{spec.name} {day}", report_uri, store.uri(qprefix)))
        store.delete_prefix(f"{qprefix}/")  # a fixed batch re-run leaves no stale quarantine
    return {"reports": reports, "report_uri": reports[-1], "warnings": warnings, "rows": rows}


# -- prepare ------------------------------------------------------------------------------------
def prepare(interval: Interval, spec_name: str | None = None) -> dict[str, Any]:
    """Feature functions -> Feast offline source; apply the definitions; materialise the interval."""
    from include.mlops import features as F

    spec, store, settings = _ctx(spec_name)
    frames, uris = [], []
    for day in interval.days:
        raw = store.get_parquet(staging_key(spec, day))
        offline = F.offline_frame(spec, F.build_features(raw, spec), interval.end)
        uris.append(F.write_offline(store, spec, day.isoformat(), offline))
        frames.append(offline)
    fs = F.get_feature_store(settings)
    F.apply_definitions(fs, spec, store)
    import pandas as pd

    materialized = F.materialize_frame(fs, spec, pd.concat(frames, ignore_index=True))
    log.info("wrote %s; materialised %d entities to the online store", uris, materialized)
    return {"feature_uris": uris, "feature_service": spec.feature_service_name, "materialized": materialized}


# -- train --------------------------------------------------------------------------------------
def labelled_events(store: ObjectStore, spec: DatasetSpec, interval: Interval, window_days: int) -> pd.DataFrame:
    """Labels that have arrived by the interval's end for events in the window, restricted to
    days whose features exist (quarantined days have none and would be dropped by the join).

    Only label files that arrived within the window are read (a label never arrives before its
    event), so the cost follows the window, not the length of the history."""
    import pandas as pd

    end_day = interval.days[-1]
    first_event_day = end_day - timedelta(days=window_days + spec.label_delay_days - 1)
    frames = []
    for key in store.list(f"staging/{spec.name}/labels/"):
        arrival = date.fromisoformat(key.split("dt=")[1].split("/")[0])
        if first_event_day <= arrival <= end_day:
            frames.append(store.get_parquet(key))
    if not frames:
        return pd.DataFrame(columns=[spec.entity_key, spec.timestamp, spec.label])
    labels = pd.concat(frames, ignore_index=True)
    labels[spec.timestamp] = pd.to_datetime(labels[spec.timestamp], utc=True)
    # event days as UTC midnights, compared in bulk (per-row date objects cost seconds at 1M rows)
    ev_day = labels[spec.timestamp].dt.floor("D")
    have = [
        pd.Timestamp(k.split("part-")[1][:10], tz="UTC") for k in store.list(f"features/{spec.name}/") if "part-" in k
    ]
    featured = ev_day.isin(have)
    after_first = ev_day >= pd.Timestamp(first_event_day, tz="UTC")
    keep = after_first & (ev_day <= pd.Timestamp(end_day, tz="UTC")) & featured
    dropped = int((after_first & ~featured).sum())
    if dropped:
        log.warning("%d labelled events fall on days without features (quarantined or not ingested); excluded", dropped)
    return labels[keep].sort_values([spec.timestamp, spec.entity_key], ignore_index=True)


def _pinned_requirements() -> list[str]:
    from importlib.metadata import version

    pkgs = ["scikit-learn", "pandas", "numpy", "scipy", "skops", "cloudpickle", "mlflow-skinny", "pyarrow"]
    out = []
    for p in pkgs:
        try:
            out.append(f"{p}=={version(p)}")
        except Exception:
            continue
    return out


def train(
    interval: Interval, lineage: dict[str, str], spec_name: str | None = None, window_days: int | None = None
) -> dict[str, Any]:
    """Point-in-time training set from Feast, time split, budgeted search, logged to MLflow.

    Idempotent: a FINISHED run with the same interval and training-data hash is reused.
    """
    import mlflow

    from include.mlops import features as F
    from include.mlops import training as T
    from include.mlops.registry import ensure_experiment, setup_mlflow

    spec, store, settings = _ctx(spec_name)
    window = int(window_days or spec.training.window_days)
    entity_df = labelled_events(store, spec, interval, window)
    min_rows = spec.training.min_rows
    if len(entity_df) < min_rows:
        raise NotEnoughData(f"{len(entity_df)} labelled rows in the last {window} days, need {min_rows}")
    fs = F.get_feature_store(settings)
    joined = F.historical_features(fs, spec, entity_df)
    cols = [spec.entity_key, spec.timestamp, *F.model_features(spec), spec.label]
    joined = joined[cols].sort_values([spec.timestamp, spec.entity_key], ignore_index=True)
    digest = T.data_hash(joined)
    train_df, holdout = T.time_split(joined, spec, spec.training.holdout_days)

    client = setup_mlflow(settings)
    exp_id = ensure_experiment(client, spec.name, settings)
    prior = client.search_runs(
        [exp_id],
        f"tags.`mlops.interval` = '{interval.key}' and tags.`mlops.data_hash` = '{digest}' and attributes.status = 'FINISHED'",
        max_results=1,
    )
    base = f"training/{spec.name}/{interval.key}"
    rows = {"labelled": len(entity_df), "joined": len(joined), "train": len(train_df), "holdout": len(holdout)}
    if prior:
        run = prior[0]
        log.info("reusing run %s: same interval %s and data hash %s", run.info.run_id, interval.key, digest)
        return {
            "run_id": run.info.run_id,
            "model_uri": run.data.tags["mlops.model_uri"],
            "data_hash": digest,
            "rows": rows,
            "train_uri": store.uri(f"{base}/train.parquet"),
            "holdout_uri": store.uri(f"{base}/holdout.parquet"),
            "reused": True,
            "experiment_id": exp_id,
        }

    train_uri = store.put_parquet(f"{base}/train.parquet", train_df)
    holdout_uri = store.put_parquet(f"{base}/holdout.parquet", holdout)
    model, result = T.fit(spec, train_df)
    with mlflow.start_run(experiment_id=exp_id, run_name=f"{spec.name}-{interval.key}") as run:
        mlflow.set_tags(
            {
                **lineage,
                "mlops.interval": interval.key,
                "mlops.data_hash": digest,
                "mlops.train_uri": train_uri,
                "mlops.holdout_uri": holdout_uri,
                "mlops.dataset": spec.name,
            }
        )
        mlflow.log_params(
            {
                "family": spec.model.family,
                "window_days": window,
                **{f"best.{k}": v for k, v in result.best_params.items()},
                "search.candidates": len(result.candidates),
                "search.stopped_by_budget": result.stopped_by_budget,
            }
        )
        mlflow.log_metrics(
            {
                f"cv_{result.scoring}": result.best_score,
                "search_seconds": result.seconds,
                **{f"rows_{k}": v for k, v in rows.items()},
            }
        )
        for i, c in enumerate(result.candidates):
            mlflow.log_metric(f"cv_candidate_{result.scoring}", c["mean"], step=i)
        mlflow.log_dict({"scoring": result.scoring, "candidates": result.candidates}, "search/cv_results.json")
        mlflow.log_input(
            training_dataset(train_df, train_uri, f"{spec.name}-train-{interval.key}", spec.label, digest),
            context="training",
        )
        info = log_model(model, spec, train_df.head(5)[F.model_features(spec)])
        mlflow.set_tag("mlops.model_uri", info.model_uri)
    return {
        "run_id": run.info.run_id,
        "model_uri": info.model_uri,
        "data_hash": digest,
        "rows": rows,
        "train_uri": train_uri,
        "holdout_uri": holdout_uri,
        "reused": False,
        "experiment_id": exp_id,
        "candidates": len(result.candidates),
    }


def schema_probe(df: pd.DataFrame) -> pd.DataFrame:
    """A few rows of `df` from which MLflow infers the same schema as from all of it: the first
    row, the first occurrence of every distinct value of each object (text) column, and each
    column's first missing value. MLflow reads types from the dtype, except for object columns,
    whose distinct values decide; `required` means "no missing value"."""
    import numpy as np

    rows = {0} if len(df) else set()
    for col in df.columns:
        values = df[col]
        if values.dtype.kind == "O":
            rows.update(np.flatnonzero(~values.duplicated().to_numpy()).tolist())
        missing = values.isna().to_numpy()
        if missing.any():
            rows.add(int(missing.argmax()))
    return df.iloc[sorted(rows)]


def training_dataset(df: pd.DataFrame, source: str, name: str, targets: str, digest: str) -> Any:
    """The training split as an MLflow dataset (source, digest, schema, row count).

    MLflow would infer the schema by walking every value of every column in Python (22-35 s
    for 800k rows x 21 columns); the schema is inferred on `schema_probe(df)` instead, which
    gives the same result in well under a second.
    """
    import mlflow

    dataset = mlflow.data.from_pandas(df, source=source, name=name, targets=targets, digest=digest)
    probe = mlflow.data.from_pandas(schema_probe(df), source=dataset.source, targets=targets, digest=digest)
    dataset.schema = probe.schema  # a cached property: set here, it is never inferred from `df`
    return dataset


def log_model(model: Any, spec: DatasetSpec, X: pd.DataFrame) -> Any:
    """Log the Pipeline with signature, input example (the first rows of `X`) and pinned
    requirements (skops format)."""
    import mlflow
    import skops.io
    from mlflow.models import infer_signature

    from include.mlops.features import model_features

    example = X.head(5)
    out = model.predict_proba(example) if spec.is_classification else model.predict(example)
    signature = infer_signature(example, out)
    with warnings.catch_warnings():  # skops' module scan trips ~1,000 Airflow deprecation warnings
        warnings.simplefilter("ignore")
        trusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    return mlflow.sklearn.log_model(
        model,
        name="model",
        signature=signature,
        input_example=example,
        pip_requirements=_pinned_requirements(),
        pyfunc_predict_fn="predict_proba" if spec.is_classification else "predict",
        skops_trusted_types=trusted,
        metadata={"features": model_features(spec), "dataset": spec.name, "task": spec.task},
    )


# -- evaluate -----------------------------------------------------------------------------------
def load_sklearn(model_uri: str) -> Any:
    import mlflow

    return mlflow.sklearn.load_model(model_uri)


def evaluate(train_out: dict[str, Any], spec_name: str | None = None) -> dict[str, Any]:
    """Challenger and current champion on the same holdout; the gate decides; all of it in the run."""
    import numpy as np

    from include.mlops import evaluation as E
    from include.mlops import plots
    from include.mlops.features import model_features
    from include.mlops.registry import CHAMPION, alias_version, setup_mlflow

    spec, store, settings = _ctx(spec_name)
    client = setup_mlflow(settings)
    holdout = store.get_parquet(store.key_of(train_out["holdout_uri"]))
    X, y = holdout[model_features(spec)], holdout[spec.label]
    challenger = load_sklearn(train_out["model_uri"])
    scores = E.predict_scores(challenger, X, spec)
    nan_preds = int(np.isnan(np.asarray(scores, dtype=float)).sum())
    ch_metrics = E.metrics(y, np.nan_to_num(scores, nan=0.5), spec)
    ch_slices = E.slice_metrics(holdout, np.nan_to_num(scores, nan=0.5), spec)

    champ_version = alias_version(client, spec.model_name, CHAMPION)
    champ_metrics = champ_slices = None
    champ_note = "no champion yet"
    if champ_version is not None:
        try:
            champ = load_sklearn(f"models:/{spec.model_name}@{CHAMPION}")
            cs = E.predict_scores(champ, X, spec)
            champ_metrics, champ_slices = E.metrics(y, cs, spec), E.slice_metrics(holdout, cs, spec)
            champ_note = f"champion v{champ_version} scored on the same holdout"
        except Exception as exc:  # e.g. the champion expects columns the spec no longer has
            champ_note = f"champion v{champ_version} could not score this holdout ({exc}); compared on minimums only"
            log.warning(champ_note)
    decision = E.gate(spec, ch_metrics, ch_slices, nan_preds, champ_metrics, champ_slices)
    table = decision.table()
    log.info("gate for run %s (%s):\n%s", train_out["run_id"], champ_note, table)

    run_id = train_out["run_id"]
    for k, v in ch_metrics.items():
        client.log_metric(run_id, f"holdout_{k}", v)
    for k, v in (champ_metrics or {}).items():
        client.log_metric(run_id, f"champion_holdout_{k}", v)
    client.log_text(run_id, table + f"\n{champ_note}\n", "evaluation/gate.txt")
    client.log_dict(
        run_id,
        {
            **decision.to_dict(),
            "challenger": ch_metrics,
            "champion": champ_metrics,
            "champion_version": champ_version,
            "slices": ch_slices,
            "champion_slices": champ_slices,
        },
        "evaluation/gate.json",
    )
    client.set_tag(run_id, "mlops.gate", "passed" if decision.passed else "failed")
    plots.log_evaluation_plots(client, run_id, spec, challenger, holdout, scores)
    return {
        "passed": decision.passed,
        "reasons": decision.reasons,
        "metrics": ch_metrics,
        "champion_metrics": champ_metrics,
        "champion_version": champ_version,
        "nan_predictions": nan_preds,
    }


# -- register -----------------------------------------------------------------------------------
def register(
    train_out: dict[str, Any],
    eval_out: dict[str, Any],
    validate_out: dict[str, Any] | None,
    lineage: dict[str, str],
    interval: Interval,
    spec_name: str | None = None,
) -> dict[str, Any]:
    """A model version tagged with its lineage, alias `challenger`; one version per run."""
    from include.mlops.registry import register as reg
    from include.mlops.registry import setup_mlflow

    spec, _, settings = _ctx(spec_name)
    client = setup_mlflow(settings)
    tags = {
        **lineage,
        "data_interval": interval.label,
        "data_hash": train_out["data_hash"],
        "gx_result_uri": (validate_out or {}).get("report_uri", ""),
        "feast_feature_service": spec.feature_service_name,
        "git_commit": settings.git_commit,
        "rows": ",".join(f"{k}={v}" for k, v in train_out["rows"].items()),
        "gate": "passed" if eval_out["passed"] else "failed",
    }
    tags = {k: str(v) for k, v in tags.items()}
    version, created = reg(client, spec.model_name, train_out["model_uri"], train_out["run_id"], tags)
    log.info(
        "%s version %s %s (alias challenger)",
        spec.model_name,
        version,
        "registered" if created else "already registered",
    )
    return {"model": spec.model_name, "version": version, "created": created, "run_id": train_out["run_id"]}


# -- deploy (promotion) -------------------------------------------------------------------------
def promote(
    reg_out: dict[str, Any],
    eval_out: dict[str, Any],
    run_id: str,
    dag_id: str,
    strategy: str = "direct",
    spec_name: str | None = None,
) -> dict[str, Any]:
    """Move `champion` if the gate passed; otherwise keep it and say why (not a failure)."""
    from include.mlops.registry import CHAMPION, alias_version, move_champion, setup_mlflow

    spec, store, settings = _ctx(spec_name)
    client = setup_mlflow(settings)
    model, version = reg_out["model"], reg_out["version"]
    if not eval_out["passed"]:
        msg = "not promoted: " + "; ".join(eval_out["reasons"])
        log.info("%s (champion stays v%s)", msg, alias_version(client, model, CHAMPION))
        return {"promoted": False, "message": msg, "champion": alias_version(client, model, CHAMPION)}
    entry = move_champion(
        client,
        store,
        model,
        version,
        action="promote",
        strategy=strategy,
        reason="gate passed: " + ", ".join(f"{k}={v:.4f}" for k, v in eval_out["metrics"].items()),
        run_id=run_id,
        dag_id=dag_id,
    )
    if entry is None:
        msg = f"v{version} already champion"
    else:
        msg = f"promoted v{version} to champion (previous: v{entry.from_version})"
    log.info(msg)
    return {
        "promoted": entry is not None,
        "message": msg,
        "champion": version,
        "previous": entry.from_version if entry else None,
    }
