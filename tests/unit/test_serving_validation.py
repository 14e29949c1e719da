"""Request parsing and field-level validation of the scoring service (no server, no model)."""

from __future__ import annotations

import math

import pytest

from include.mlops.serving.validation import (
    RecordValidator,
    SchemaMismatch,
    ValidationFailed,
    invocation_records,
    predict_records,
)
from include.mlops.spec import load_spec


@pytest.fixture(scope="module")
def spec():
    return load_spec("churn")


@pytest.fixture(scope="module")
def validator(spec):
    return RecordValidator(spec)


def good(spec) -> dict:
    rec = {}
    for f in spec.features:
        if f.is_numeric:
            rec[f.name] = int(f.range[0]) if f.type == "int" else float(f.range[0]) + 0.5
        else:
            rec[f.name] = f.values[0]
    return rec


def errors_of(validator, records) -> list[dict]:
    with pytest.raises(ValidationFailed) as ei:
        validator.check(records, ("body", "records"))
    return ei.value.errors


def test_a_full_row_is_normalised_in_spec_order(spec, validator):
    [item] = validator.check([{**good(spec), "customer_id": 7}], ("body", "records"))
    assert item.entity == 7
    assert len(item.row) == len(spec.features)
    for f, v in zip(spec.features, item.row, strict=True):
        assert isinstance(v, float) if f.is_numeric else isinstance(v, str)


def test_an_entity_only_record_asks_for_a_lookup(validator):
    [item] = validator.check([{"customer_id": 123}], ("body", "records"))
    assert item.entity == 123 and item.row is None


def test_optional_features_may_be_missing_or_null(spec, validator):
    optional = [f.name for f in spec.features if not f.required]
    rec = good(spec)
    del rec[optional[0]]
    rec[optional[1]] = None
    [item] = validator.check([rec], ("body", "records"))
    names = spec.feature_names
    assert math.isnan(item.row[names.index(optional[0])]) and math.isnan(item.row[names.index(optional[1])])


@pytest.mark.parametrize(
    ("change", "field", "kind"),
    [
        (lambda r: r.pop("tenure_months"), "tenure_months", "value_error.missing"),
        (lambda r: r.update(tenure_months=None), "tenure_months", "value_error.missing"),
        (lambda r: r.update(monthly_charges="cheap"), "monthly_charges", "type_error.number"),
        (lambda r: r.update(monthly_charges=True), "monthly_charges", "type_error.number"),
        (lambda r: r.update(num_devices=2.5), "num_devices", "type_error.integer"),
        (lambda r: r.update(monthly_charges=float("inf")), "monthly_charges", "value_error.number"),
        (lambda r: r.update(tenure_months=500), "tenure_months", "value_error.range"),
        (lambda r: r.update(plan="platinum"), "plan", "value_error.category"),
        (lambda r: r.update(plan=3), "plan", "type_error.str"),
        (lambda r: r.update(customer_id="abc"), "customer_id", "type_error.integer"),
        (lambda r: r.update(event_timestamp="yesterday"), "event_timestamp", "type_error.datetime"),
        (lambda r: r.update(event_timestamp=True), "event_timestamp", "type_error.datetime"),
    ],
)
def test_each_bad_field_is_named(spec, validator, change, field, kind):
    rec = good(spec)
    change(rec)
    errs = errors_of(validator, [good(spec), rec])
    assert errs == [{"loc": ["body", "records", 1, field], "msg": errs[0]["msg"], "type": kind}]


@pytest.mark.parametrize(
    "sent",
    [
        "2026-10-05T13:30:00Z",
        "2026-10-05T13:30:00+00:00",
        "2026-10-05T15:30:00+02:00",
        "2026-10-05 13:30:00",
        1791207000,
    ],
)
def test_an_event_time_is_read_as_utc_epoch_seconds(spec, validator, sent):
    expected = 1791207000.0  # 2026-10-05T13:30:00Z
    [full, lookup] = validator.check(
        [{**good(spec), "event_timestamp": sent}, {"customer_id": 5, "event_timestamp": sent}], ("body", "records")
    )
    assert full.event_ts == expected and lookup.event_ts == expected
    [plain] = validator.check([good(spec)], ("body", "records"))
    assert plain.event_ts is None


def test_all_errors_are_reported_at_once(spec, validator):
    rec = good(spec)
    del rec["plan"]
    rec["tenure_months"] = "x"
    errs = errors_of(validator, [rec, "not a record", {}])
    locs = [tuple(e["loc"]) for e in errs]
    assert ("body", "records", 0, "plan") in locs and ("body", "records", 0, "tenure_months") in locs
    assert ("body", "records", 1) in locs and ("body", "records", 2) in locs


def test_signature_types_must_agree_with_the_spec(spec):
    sig = [(f.name, "double" if f.is_numeric else "string") for f in spec.features]
    RecordValidator(spec, sig)  # agrees
    with pytest.raises(SchemaMismatch, match="plan"):
        RecordValidator(spec, [("plan", "double")])
    with pytest.raises(SchemaMismatch, match="not_in_spec"):
        RecordValidator(spec, [*sig, ("not_in_spec", "double")])


def test_predict_bodies():
    assert predict_records({"records": [{"a": 1}]}, "customer_id") == [{"a": 1}]
    assert predict_records({"entity_ids": [1, 2]}, "customer_id") == [{"customer_id": 1}, {"customer_id": 2}]
    assert predict_records({"a": 1}, "customer_id") == [{"a": 1}]
    assert predict_records([{"a": 1}], "customer_id") == [{"a": 1}]
    for bad in ({"records": {}}, {"entity_ids": 3}, {"records": []}, "text", 3):
        with pytest.raises(ValidationFailed):
            predict_records(bad, "customer_id")


def test_mlflow_scoring_formats():
    rows = [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]
    assert invocation_records(
        {"dataframe_split": {"columns": ["a", "b"], "data": [[1, "x"], [2, "y"]], "index": [0, 1]}}
    ) == (rows, "dataframe_split")
    assert invocation_records({"dataframe_records": rows}) == (rows, "dataframe_records")
    assert invocation_records({"inputs": rows, "params": {}}) == (rows, "inputs")
    assert invocation_records({"inputs": {"a": [1, 2], "b": ["x", "y"]}}) == (rows, "inputs")
    assert invocation_records({"instances": rows}) == (rows, "instances")


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"dataframe_records": [], "inputs": []},
        {"nothing": 1},
        {"dataframe_split": {"columns": ["a"], "data": [[1, 2]]}},
        {"dataframe_split": {"columns": [1], "data": [[1]]}},
        {"dataframe_split": [1]},
        {"inputs": {"a": [1], "b": [1, 2]}},
        {"dataframe_records": []},
        {"dataframe_records": "x"},
    ],
)
def test_malformed_mlflow_bodies_are_422s(body):
    with pytest.raises(ValidationFailed):
        invocation_records(body)
