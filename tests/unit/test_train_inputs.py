"""What `train` reads and records: the labelled window, and the training set's MLflow schema."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from include.mlops import layout
from include.mlops import pipeline as P
from include.mlops.data.landing import labelled_events
from include.mlops.spec import load_spec
from include.mlops.storage import ObjectStore
from include.mlops.training import tracking

END = date(2026, 10, 9)


@pytest.fixture(scope="module")
def churn():
    return load_spec("churn")


def _labels(spec, event_day: date, n: int = 4) -> pd.DataFrame:
    start = datetime(event_day.year, event_day.month, event_day.day, tzinfo=UTC)
    return pd.DataFrame(
        {
            spec.entity_key: np.arange(n, dtype="int64") + 1000 * event_day.day,
            spec.timestamp: [start + timedelta(hours=5 * i) for i in range(n)],
            spec.label: np.arange(n) % 2,
        }
    )


def test_labelled_events_window_and_feature_days(tmp_path, churn):
    store = ObjectStore(f"file://{tmp_path}")
    delay = churn.label_delay_days
    for i in range(12):
        event_day = END - timedelta(days=i)
        arrival = event_day + timedelta(days=delay)
        store.put_parquet(layout.staging_labels_key(churn, arrival), _labels(churn, event_day))
        if i != 5:  # one day has no features (quarantined)
            store.put_bytes(f"features/{churn.name}/part-{event_day.isoformat()}.parquet", b"")
    iv = P.Interval(datetime(2026, 10, 9, tzinfo=UTC), datetime(2026, 10, 10, tzinfo=UTC))

    out = labelled_events(store, churn, iv.days[-1], window_days=5)

    days = sorted({d.date() for d in out[churn.timestamp]})
    first = END - timedelta(days=5 + delay - 1)
    # labels arrived by the end: events up to END - delay; features missing on END - 5 days
    expected = [first + timedelta(days=k) for k in range(5) if first + timedelta(days=k) != END - timedelta(days=5)]
    assert days == expected
    assert list(out.columns) == [churn.entity_key, churn.timestamp, churn.label]
    assert out[churn.timestamp].is_monotonic_increasing and out.index.equals(pd.RangeIndex(len(out)))
    assert str(out[churn.timestamp].dt.tz) == "UTC"


def test_labelled_events_none_arrived(tmp_path, churn):
    store = ObjectStore(f"file://{tmp_path}")
    iv = P.Interval(datetime(2026, 10, 9, tzinfo=UTC), datetime(2026, 10, 10, tzinfo=UTC))
    out = labelled_events(store, churn, iv.days[-1], window_days=5)
    assert out.empty and list(out.columns) == [churn.entity_key, churn.timestamp, churn.label]


def test_training_dataset_schema_is_mlflows_own(tmp_path):
    import mlflow

    rng = np.random.default_rng(0)
    n = 3000
    df = pd.DataFrame(
        {
            "id": np.arange(n, dtype="int64"),
            "ts": pd.date_range("2026-10-01", periods=n, freq="min", tz="UTC"),
            "x": rng.normal(size=n),
            "x_missing": np.where(rng.random(n) < 0.01, np.nan, 1.0),
            "k": rng.integers(0, 5, n).astype("int32"),
            "plan": rng.choice(["basic", "premium", "unlimited"], n).astype(object),
            "region": pd.Series(rng.choice(["north", "south"], n), dtype=object).where(rng.random(n) > 0.02, None),
            "flag": rng.random(n) > 0.5,
            "y": rng.integers(0, 2, n),
        }
    )
    source = f"file://{tmp_path}/train.parquet"
    ours = tracking.training_dataset(df, source, "train", "y", "abc")
    theirs = mlflow.data.from_pandas(df, source=source, name="train", targets="y", digest="abc")
    assert ours.to_dict() == theirs.to_dict()
    required = {c.name: c.required for c in ours.schema.inputs}
    assert required["x_missing"] is False and required["region"] is False and required["plan"] is True
    assert len(tracking.schema_probe(df)) < 10
