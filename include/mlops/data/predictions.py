"""Simulated prediction logs: a generated day scored by a model, in the prediction-log layout.

For tests, benchmarks and the demo; written where the scoring service (online) or batch scoring
would write them (`include.mlops.layout`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from include.mlops import layout
from include.mlops.monitoring.reading import PREDICTION, SCORE

if TYPE_CHECKING:
    from datetime import date

    import pandas as pd

    from include.mlops.spec import DatasetSpec
    from include.mlops.storage import ObjectStore


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
    from include.mlops.features.build import build_features, model_features
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
        return store.put_parquet(layout.batch_predictions_key(spec, day), log_df)
    return store.put_parquet(layout.online_predictions_key(spec, day, part), log_df)
