"""Batch scoring: the interval's staged batch scored by the champion, for `ml_batch_scoring`.

Each day of the interval becomes `predictions/batch/<dataset>/dt=<day>/predictions.parquet`,
overwritten on a re-run (the same rows and, while the champion is the same, the same scores).
The features come from the same `build_features` as training and the scoring service, and the
champion is resolved to a version once, so every row of a run names the model that scored it.
Rows carry what `/predict` answers: `prediction` (a class value, or the regression value),
`score` (see `include.mlops.scores`) and, for a classifier, `probability_<class>` per class,
and, like every prediction-log row, `model_version` and `variant` ("champion": batch rows are
the champion's answers).

No champion (the registry says the alias does not exist) raises `NoChampion` (the DAG skips);
any other failed registry read raises `registry.RegistryUnavailable` (the task fails and
retries): a registry fault never reads as "nothing to score with".
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from include.mlops.pipeline import Interval

log = logging.getLogger(__name__)


def probability_column(cls: Any) -> str:
    """The batch output's column for one class's probability (`probability_yes`, `probability_1`)."""
    return f"probability_{cls}"


def score_batch(interval: Interval, spec_name: str | None = None) -> dict[str, Any]:
    """Score every staged event of the interval with the champion; returns uri, rows, version."""
    import numpy as np

    from include.mlops import layout, model_io
    from include.mlops.constants import CHAMPION
    from include.mlops.context import context
    from include.mlops.features.build import build_features, model_features
    from include.mlops.registry import NoChampion, alias_version, registry_error
    from include.mlops.scores import score_model
    from include.mlops.serving.predlog import DEFAULT_VARIANT

    ctx = context(spec_name)
    spec, store, client = ctx.spec, ctx.store, ctx.client
    model_name = spec.model_name
    try:
        version = alias_version(client, model_name, CHAMPION)
    except Exception as exc:  # alias_version returns None for "not found" and raises the rest
        raise registry_error(f"the champion alias of {model_name}", exc) from exc
    if version is None:
        raise NoChampion(f"{model_name} has no champion yet: train and promote a model before batch scoring")
    # by version (the alias may move meanwhile), through the loader that refuses artifacts able to run code
    model = model_io.load(f"models:/{model_name}/{version}", f"{model_name} v{version} (the champion)")
    cols = model_features(spec)
    uris, rows, days = [], 0, []
    for day in interval.days:
        key = layout.staging_events_key(spec, day)
        if not store.exists(key):
            raise FileNotFoundError(
                f"no staged batch of {spec.name} for {day}: expected {store.uri(key)} "
                f"(run ml_training's extract/validate for this interval first)"
            )
        raw = store.get_parquet(key)
        X = build_features(raw, spec)[cols]
        scored = score_model(model, X, spec)
        out = raw[[spec.entity_key, spec.timestamp]].reset_index(drop=True).copy()
        out["prediction"] = scored.prediction
        out["score"] = np.asarray(scored.score, dtype="float64")
        for j, c in enumerate(scored.classes or []):  # one probability column per class, as /predict answers
            out[probability_column(c)] = scored.proba[:, j] if scored.proba is not None else np.nan
        out["model_name"] = model_name
        out["model_version"] = str(version)
        out["variant"] = DEFAULT_VARIANT
        out["interval"] = interval.label
        uri = store.put_parquet(layout.batch_predictions_key(spec, day), out)
        uris.append(uri)
        rows += len(out)
        days.append(day.isoformat())
        log.info("scored %d rows of %s on %s with %s v%s -> %s", len(out), spec.name, day, model_name, version, uri)
    return {
        "uri": uris[-1] if uris else None,
        "uris": uris,
        "rows": rows,
        "version": str(version),
        "model": model_name,
        "days": days,
    }
