"""The prediction log: batched writes off the request path, nothing lost on shutdown or on a
failed write."""

from __future__ import annotations

import time

import pandas as pd
import pytest

from include.mlops.features.build import model_features
from include.mlops.serving.frames import FrameBuilder
from include.mlops.serving.predlog import LogBatch, PredictionLog, log_columns
from include.mlops.spec import load_spec
from include.mlops.storage import ObjectStore


@pytest.fixture(scope="module")
def spec():
    return load_spec("churn")


def batch(spec, start: int, n: int, variant: str = "champion") -> LogBatch:
    b = FrameBuilder(spec)
    return LogBatch(
        rows=b.probe_rows(n),
        request_id=[f"r{start + i}" for i in range(n)],
        ts=[time.time()] * n,
        entity=[start + i if i % 2 else None for i in range(n)],
        prediction=[i % 2 for i in range(n)],
        score=[0.25] * n,
        model_version=["3"] * n,
        variant=[variant] * n,
    )


def read_all(store: ObjectStore, spec) -> pd.DataFrame:
    return store.read_parquet_prefix(f"predictions/{spec.name}/")


def test_batches_are_written_on_close_with_the_documented_columns(tmp_path, spec):
    store = ObjectStore(f"file://{tmp_path}")
    plog = PredictionLog(store, spec, "churn_model", flush_seconds=60, max_rows=10_000)
    plog.start()
    for k in range(5):
        plog.submit(batch(spec, k * 10, 10))
    assert store.list("predictions/") == []  # nothing yet: batched
    plog.close()
    df = read_all(store, spec)
    assert list(df.columns) == log_columns(spec)
    assert sorted(df["request_id"]) == sorted(f"r{i}" for i in range(50))
    assert str(df["ts"].dtype) == "datetime64[us, UTC]" or str(df["ts"].dtype).endswith("UTC]")
    assert df["customer_id"].isna().sum() == 25 and df["model_name"].eq("churn_model").all()
    assert set(model_features(spec)) <= set(df.columns)
    keys = store.list("predictions/")
    assert len(keys) == 1 and "/dt=" in keys[0] and keys[0].endswith(".parquet")


def test_size_and_time_trigger_writes(tmp_path, spec):
    store = ObjectStore(f"file://{tmp_path}")
    plog = PredictionLog(store, spec, "churn_model", flush_seconds=0.2, max_rows=15)
    plog.start()
    plog.submit(batch(spec, 0, 20))  # over max_rows
    deadline = time.time() + 5
    while not store.list("predictions/") and time.time() < deadline:
        time.sleep(0.05)
    assert store.list("predictions/")
    plog.submit(batch(spec, 100, 3))
    assert plog.flush(10)
    assert len(read_all(store, spec)) == 23
    plog.close()


class FlakyStore(ObjectStore):
    failures = 1

    def put_parquet(self, key, df):  # type: ignore[override]
        if FlakyStore.failures:
            FlakyStore.failures -= 1
            raise OSError("store down")
        return super().put_parquet(key, df)


def test_a_failed_write_is_retried_not_lost(tmp_path, spec):
    store = FlakyStore(f"file://{tmp_path}")
    plog = PredictionLog(store, spec, "churn_model", flush_seconds=60)
    plog.start()
    plog.submit(batch(spec, 0, 7))
    plog.flush(10)  # fails: kept
    assert store.list("predictions/") == []
    plog.submit(batch(spec, 7, 3, variant="shadow"))
    plog.close()
    df = read_all(store, spec)
    assert sorted(df["request_id"]) == sorted(f"r{i}" for i in range(10))
    assert df["variant"].value_counts().to_dict() == {"champion": 7, "shadow": 3}


def test_records_are_filed_under_their_event_day_else_the_request_day(tmp_path, spec):
    """A record sent with its event time lands in that day's partition with the time logged, so
    monitoring can join the late ground truth on (entity, event time)."""
    store = ObjectStore(f"file://{tmp_path}")
    plog = PredictionLog(store, spec, "churn_model", flush_seconds=60)
    plog.start()
    b = batch(spec, 0, 4)
    event = pd.Timestamp("2026-10-05T13:30:00Z").timestamp()
    b.event_ts = [event, event, None, event - 86_400]
    plog.submit(b)
    plog.close()
    days = sorted({k.split("dt=")[1].split("/")[0] for k in store.list("predictions/")})
    today = pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%d")
    assert days == sorted({"2026-10-04", "2026-10-05", today})
    df = read_all(store, spec).set_index("request_id")
    assert df.loc["r0", spec.timestamp] == pd.Timestamp("2026-10-05T13:30:00Z")
    assert pd.isna(df.loc["r2", spec.timestamp]) and list(df.columns[:2]) == ["ts", spec.timestamp]


def test_every_row_names_its_variant_and_version_and_shadow_rows_are_not_answers(tmp_path, spec):
    """One request answered by the champion and scored by the shadow, another answered by the
    canary: each row keeps who scored it, and only the shadow's is not an answer."""
    from include.mlops.serving.predlog import is_answer

    store = ObjectStore(f"file://{tmp_path}")
    plog = PredictionLog(store, spec, "churn_model", flush_seconds=60)
    plog.start()
    answered = batch(spec, 0, 4)
    shadowed = batch(spec, 0, 4, variant="shadow")  # the same request ids, scored by the shadow
    shadowed.model_version = ["4"] * 4
    canary = batch(spec, 10, 2, variant="challenger")
    canary.model_version = ["4"] * 2
    for b in (answered, shadowed, canary):
        plog.submit(b)
    plog.close()
    df = read_all(store, spec)
    rows = df.groupby(["variant", "model_version"]).size().to_dict()
    assert rows == {("champion", "3"): 4, ("shadow", "4"): 4, ("challenger", "4"): 2}
    assert df["variant"].notna().all() and df["model_version"].notna().all()
    answers = df[is_answer(df["variant"])]
    assert len(answers) == 6 and answers["request_id"].is_unique  # each request answered once
