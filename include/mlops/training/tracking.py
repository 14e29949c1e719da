"""What the training and evaluation steps record in MLflow, and how models come back out.

The steps decide; this module writes their runs: the training run (params, search metrics, the
dataset, the model in the skops format with pinned requirements), the gate decisions kept in the
evaluated run, and the cleanup of runs a killed attempt left RUNNING; `log_to_run` writes files,
numbers, params and tags to a run, for these and for the monitoring history. `load_sklearn` and
`quiet_deprecations` are the other direction: a platform model back, without skops' warning flood.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from include.mlops.spec import DatasetSpec
    from include.mlops.training.fit import SearchResult

log = logging.getLogger(__name__)


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


def close_orphan_runs(client: Any, experiment_id: str, interval_key: str, digest: str) -> list[str]:
    """Close as FAILED, tagged `mlops.closed_reason`, the runs of this interval and data hash
    still RUNNING: what a killed training attempt leaves behind (Airflow runs one try of a task
    instance at a time, so when a try starts none of them is alive). Returns their ids."""
    from datetime import UTC

    orphans = client.search_runs(
        [experiment_id],
        f"tags.`mlops.interval` = '{interval_key}' and tags.`mlops.data_hash` = '{digest}' "
        "and attributes.status = 'RUNNING'",
        max_results=1000,
    )
    at = datetime.now(UTC).isoformat()
    for r in orphans:
        reason = f"left RUNNING by a killed training attempt; closed as FAILED by the retry at {at}"
        client.set_tag(r.info.run_id, "mlops.closed_reason", reason)
        client.set_terminated(r.info.run_id, status="FAILED")
        log.warning("run %s of interval %s: %s", r.info.run_id, interval_key, reason)
    return [r.info.run_id for r in orphans]


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
    requirements, in the skops format with the code's trusted-types allowlist
    (`include.mlops.model_io`); `UnsafeModelError` if the pipeline holds a type outside it.
    A classifier's pyfunc answers `predict_proba` (one column per class, in the order of the
    `classes` metadata), binary or multiclass alike."""
    import mlflow
    from mlflow.models import infer_signature

    from include.mlops.features.build import model_features
    from include.mlops.model_io import FORMAT, check_writable, trusted_types
    from include.mlops.scores import class_values

    example = X.head(5)
    out = model.predict_proba(example) if spec.is_classification else model.predict(example)
    signature = infer_signature(example, out)
    check_writable(model)  # a type outside the allowlist fails here, not when the service loads it
    with quiet_deprecations("logged the model"):  # log_model loads it back to check the format
        return mlflow.sklearn.log_model(
            model,
            name="model",
            signature=signature,
            input_example=example,
            pip_requirements=_pinned_requirements(),
            pyfunc_predict_fn="predict_proba" if spec.is_classification else "predict",
            serialization_format=FORMAT,  # explicit: the only format the platform loads
            skops_trusted_types=trusted_types(),
            metadata={
                "features": model_features(spec),
                "dataset": spec.name,
                "task": spec.task,
                **({"classes": [str(c) for c in class_values(model.classes_)]} if spec.is_classification else {}),
            },
        )


_DEPRECATIONS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)


@contextlib.contextmanager
def quiet_deprecations(what: str) -> Iterator[None]:
    """Around a model save or load only: skops' module scan touches every imported module's
    deprecated attributes, ~1,160 Airflow deprecation warnings per call inside a task, which
    buried the gate table. They are counted in one line; other warnings pass through."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    quiet = 0
    for w in caught:
        if issubclass(w.category, _DEPRECATIONS):
            quiet += 1
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if quiet:
        log.info("%s (%d deprecation warnings from skops' module scan not shown)", what, quiet)


def load_sklearn(model_uri: str) -> Any:
    """A platform model (sklearn flavour, skops format, allowlisted types) from `model_uri`;
    `model_io.UnsafeModelError` for anything else, before any of it is deserialized."""
    from include.mlops import model_io

    return model_io.load(model_uri)


def recorded_gate(client: Any, run_id: str) -> dict[str, Any] | None:
    """The newest gate decision recorded in the run (`evaluation/gate-*.json`, else the first,
    `evaluation/gate.json`); None when the run has none. A read error propagates."""
    import json
    import tempfile

    paths = sorted(a.path for a in client.list_artifacts(run_id, "evaluation") if a.path.endswith(".json"))
    history = [p for p in paths if p.startswith("evaluation/gate-")]
    chosen = history[-1] if history else ("evaluation/gate.json" if "evaluation/gate.json" in paths else None)
    if chosen is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        local = client.download_artifacts(run_id, chosen, tmp)
        with open(local) as fh:
            return json.load(fh)


# -- the training run -------------------------------------------------------------------------------
def finished_run(client: Any, experiment_id: str, interval_key: str, digest: str) -> Any | None:
    """The FINISHED run of this interval and training-data hash, when an earlier attempt made one."""
    prior = client.search_runs(
        [experiment_id],
        f"tags.`mlops.interval` = '{interval_key}' and tags.`mlops.data_hash` = '{digest}' and attributes.status = 'FINISHED'",
        max_results=1,
    )
    return prior[0] if prior else None


def log_training_run(
    spec: DatasetSpec,
    experiment_id: str,
    interval_key: str,
    lineage: dict[str, str],
    digest: str,
    rows: dict[str, int],
    *,
    model: Any,
    result: SearchResult,
    window: int,
    train_df: pd.DataFrame,
    uris: dict[str, str],
) -> tuple[str, str]:
    """One training run: the search, the training split as a dataset, the model. The interval,
    data hash and split URIs are tags given at the run's creation, so a run killed at any later
    point can be found by them (`close_orphan_runs`). Returns (run id, model URI)."""
    import mlflow

    from include.mlops.features.build import model_features

    tags = {**lineage, "mlops.interval": interval_key, "mlops.data_hash": digest, "mlops.train_uri": uris["train_uri"]}
    tags |= {"mlops.holdout_uri": uris["holdout_uri"], "mlops.dataset": spec.name}
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{spec.name}-{interval_key}", tags=tags) as run:
        log_search(result, {"family": spec.model.family, "window_days": window}, rows)
        dataset = training_dataset(train_df, uris["train_uri"], f"{spec.name}-train-{interval_key}", spec.label, digest)
        mlflow.log_input(dataset, context="training")
        info = log_model(model, spec, train_df.head(5)[model_features(spec)])
        mlflow.set_tag("mlops.model_uri", info.model_uri)
    return run.info.run_id, info.model_uri


def log_search(result: SearchResult, params: dict[str, Any], rows: dict[str, int]) -> None:
    """The hyperparameter search in the active run: the chosen params beside `params`, the best
    cross-validated score, every candidate's score (one step each) and the full results."""
    import mlflow

    mlflow.log_params(
        {
            **params,
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


def log_to_run(
    client: Any,
    run_id: str,
    *,
    files: Mapping[str, dict[str, Any] | str] | None = None,
    metrics: Mapping[str, float] | None = None,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
    at_ms: int | None = None,
    step: int = 0,
) -> None:
    """Record in a run: each of `files` at its artifact path (a dict as JSON, a string as text),
    then the metrics (at `at_ms`, default now, and `step`), params and tags in one batch."""
    from mlflow.entities import Metric, Param, RunTag

    for path, content in (files or {}).items():
        if isinstance(content, str):
            client.log_text(run_id, content, path)
        else:
            client.log_dict(run_id, content, path)
    if not (metrics or params or tags):
        return
    ts = int(time.time() * 1000) if at_ms is None else at_ms
    client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), ts, step) for k, v in (metrics or {}).items()],
        params=[Param(k, str(v)) for k, v in (params or {}).items()],
        tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
    )


# -- the gate's decisions ---------------------------------------------------------------------------
def log_holdout_metrics(client: Any, run_id: str, challenger: dict[str, float], champion: dict[str, float]) -> None:
    """The challenger's and the champion's holdout metrics in the evaluated run."""
    metrics = {f"holdout_{k}": v for k, v in challenger.items()}
    log_to_run(client, run_id, metrics=metrics | {f"champion_holdout_{k}": v for k, v in champion.items()})


def log_gate_decision(client: Any, run_id: str, record: dict[str, Any], text: str, passed: bool, at: datetime) -> None:
    """Keep a gate decision in the run: every decision as `evaluation/gate-<UTC time>.json` and
    `.txt` (the history a re-run reads back, `recorded_gate`), the first one also as
    `evaluation/gate.json`, never overwritten; the run's `mlops.gate` tag says the latest."""
    kept = {a.path for a in client.list_artifacts(run_id, "evaluation")}
    stamp = at.strftime("%Y%m%dT%H%M%S%fZ")
    files: dict[str, dict[str, Any] | str] = {
        f"evaluation/gate-{stamp}.json": record,
        f"evaluation/gate-{stamp}.txt": text,
    }
    if "evaluation/gate.json" not in kept:
        files |= {"evaluation/gate.json": record, "evaluation/gate.txt": text}
    log_to_run(client, run_id, files=files, tags={"mlops.gate": "passed" if passed else "failed"})
