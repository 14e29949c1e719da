"""String entity keys (`entity.dtype: string`) outside the stores: demo ids, request validation,
the prediction log's entity column and monitoring's join of predictions to labels.

The int64 path is checked alongside each time: it must behave as before.
"""

from __future__ import annotations

import io
import time
from datetime import UTC, date, datetime

import pandas as pd
import pyarrow.parquet as pq
import pytest

from include.mlops.spec import DatasetSpec, load_spec, parse_spec
from include.mlops.storage import ObjectStore

DAY = date(2026, 10, 1)


def string_spec(name: str = "churn") -> DatasetSpec:
    raw = load_spec(name).to_dict()
    raw["entity"]["dtype"] = "string"
    return parse_spec(raw)


@pytest.fixture(scope="module")
def spec() -> DatasetSpec:
    return string_spec()


@pytest.fixture(scope="module")
def int_spec() -> DatasetSpec:
    return load_spec("churn")


def good(spec) -> dict:
    rec = {}
    for f in spec.features:
        if f.is_numeric:
            rec[f.name] = int(f.range[0]) if f.type == "int" else float(f.range[0]) + 0.5
        else:
            rec[f.name] = f.values[0]
    return rec


# -- demo data ------------------------------------------------------------------------------------
def test_the_generator_emits_text_ids_for_a_string_key(spec, int_spec):
    from include.mlops.data.generator import generate_day

    raw, labels = generate_day(spec, DAY, rows=200, seed=3)
    ids = raw[spec.entity_key]
    assert ids.dtype == object and ids.map(type).eq(str).all()
    assert ids.str.fullmatch(r"C-\d{7}").all() and ids.is_unique
    assert labels[spec.entity_key].tolist() == ids.tolist()
    # the same customers as the int64 spec draws, only written as text; the int64 path is unchanged
    int_raw, _ = generate_day(int_spec, DAY, rows=200, seed=3)
    assert int_raw[spec.entity_key].dtype == "int64"
    assert [f"C-{i:07d}" for i in int_raw[spec.entity_key]] == ids.tolist()
    pd.testing.assert_frame_equal(raw.drop(columns=spec.entity_key), int_raw.drop(columns=spec.entity_key))


def test_offline_frame_keeps_the_key_as_text(spec, int_spec):
    from include.mlops.features.build import build_features, entity_column, offline_frame

    raw = pd.DataFrame({spec.entity_key: [7, 8], spec.timestamp: [datetime(2026, 10, 1, tzinfo=UTC)] * 2})
    for f in spec.features:
        raw[f.name] = [1.0, 2.0] if f.is_numeric else ["a", "b"]
    off = offline_frame(spec, build_features(raw, spec), datetime(2026, 10, 2, tzinfo=UTC))
    assert off[spec.entity_key].tolist() == ["7", "8"] and off[spec.entity_key].dtype == object
    assert (
        offline_frame(int_spec, build_features(raw, int_spec), datetime(2026, 10, 2))[spec.entity_key].dtype == "int64"
    )
    with_null = entity_column(spec, pd.Series(["a", None, "b"], dtype="string"))
    assert with_null.dtype == object and with_null.tolist() == ["a", None, "b"]


# -- requests -------------------------------------------------------------------------------------
def errors_of(validator, records) -> list[dict]:
    from include.mlops.serving.validation import ValidationFailed

    with pytest.raises(ValidationFailed) as ei:
        validator.check(records, ("body", "records"))
    return ei.value.errors


def test_a_string_key_takes_string_ids_only(spec):
    from include.mlops.serving.validation import RecordValidator, predict_records

    v = RecordValidator(spec)
    [lookup] = v.check([{"customer_id": "C-0000123"}], ("body", "records"))
    assert lookup.entity == "C-0000123" and lookup.row is None
    [full] = v.check([{**good(spec), "customer_id": "00123"}], ("body", "records"))
    assert full.entity == "00123" and full.row is not None  # text stays text: no leading zero lost
    records = predict_records({"entity_ids": ["C-1", 5]}, spec.entity_key)
    [err] = errors_of(v, records)
    assert err["loc"] == ["body", "records", 1, "customer_id"] and err["type"] == "type_error.str"
    assert "expected a string customer_id" in err["msg"] and "int 5" in err["msg"]
    for bad in (5.0, True, ["C-1"], {"id": "C-1"}):
        [err] = errors_of(v, [{"customer_id": bad}])
        assert err["loc"][-1] == "customer_id", bad


def test_an_int64_key_refuses_numeric_strings(int_spec):
    from include.mlops.serving.validation import RecordValidator

    v = RecordValidator(int_spec)
    [item] = v.check([{"customer_id": 42}], ("body", "records"))
    assert item.entity == 42
    for bad in ("42", "C-1", 1.5, True):
        [err] = errors_of(v, [{"customer_id": bad}])
        assert err["loc"] == ["body", "records", 0, "customer_id"] and err["type"] == "type_error.integer", bad
        assert "expected an integer customer_id" in err["msg"]


def test_csv_reads_a_string_key_as_text():
    from include.mlops.serving.bodies import parse_csv

    body = b"customer_id,tenure_months\n00123,4\n,5\n"
    assert [r["customer_id"] for r in parse_csv(body, "customer_id")] == ["00123", None]
    assert [r["customer_id"] for r in parse_csv(b"customer_id\n00123\n")] == [123]  # an int64 key, as before


# -- the prediction log and monitoring --------------------------------------------------------------
def log_batch(spec, ids: list) -> object:
    from include.mlops.serving.frames import FrameBuilder
    from include.mlops.serving.predlog import LogBatch

    n = len(ids)
    return LogBatch(
        rows=FrameBuilder(spec).probe_rows(n),
        request_id=[f"r{i}" for i in range(n)],
        ts=[time.time()] * n,
        entity=ids,
        prediction=[i % 2 for i in range(n)],
        score=[0.25] * n,
        model_version=["1"] * n,
        variant=["champion"] * n,
        event_ts=[datetime(2026, 10, 1, 8, i, tzinfo=UTC).timestamp() for i in range(n)],
    )


def parquet_type(df: pd.DataFrame, column: str) -> str:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return str(pq.read_schema(io.BytesIO(buf.getvalue())).field(column).type)


def test_the_prediction_log_records_ids_in_their_own_type(spec, int_spec):
    from include.mlops.serving.frames import FrameBuilder
    from include.mlops.serving.predlog import to_frame

    df = to_frame([log_batch(spec, ["C-1", None, "00123"])], spec, "m", FrameBuilder(spec))
    assert parquet_type(df, spec.entity_key) == "string"
    assert df[spec.entity_key].tolist()[0] == "C-1" and df[spec.entity_key].tolist()[2] == "00123"
    nulls = to_frame([log_batch(spec, [None, None])], spec, "m", FrameBuilder(spec))
    assert parquet_type(nulls, spec.entity_key) == "string"  # a string column even without any id
    ints = to_frame([log_batch(int_spec, [5, None])], int_spec, "m", FrameBuilder(int_spec))
    assert parquet_type(ints, spec.entity_key) == "int64" and str(ints[spec.entity_key].dtype) == "Int64"


def test_monitoring_joins_logged_string_ids_to_their_labels(tmp_path, spec):
    from include.mlops.monitoring.reading import join_labels, read_labels, read_predictions
    from include.mlops.serving.predlog import PredictionLog

    store = ObjectStore(f"file://{tmp_path}")
    plog = PredictionLog(store, spec, "churn_model", flush_seconds=60)
    plog.start()
    plog.submit(log_batch(spec, ["C-1", "00123", "123", None]))
    plog.close()
    preds, _ = read_predictions(store, spec, [DAY])
    assert len(preds) == 4
    # the label feed: ids as plain object strings, event times as sent; "123" has no label
    labels = pd.DataFrame(
        {
            spec.entity_key: ["C-1", "00123", "C-9"],
            spec.timestamp: [datetime(2026, 10, 1, 8, i, tzinfo=UTC) for i in (0, 1, 2)],
            spec.label: [1, 0, 1],
        }
    )
    store.put_parquet(f"staging/{spec.name}/labels/dt={DAY.isoformat()}/labels.parquet", labels)
    got = join_labels(preds, read_labels(store, spec, DAY, DAY), spec)
    assert sorted(zip(got[spec.entity_key], got[spec.label], strict=True)) == [("00123", 0), ("C-1", 1)]
