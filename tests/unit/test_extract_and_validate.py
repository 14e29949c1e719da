"""Teams' own data through `extract` and `validate`: every file of a day, parquet or CSV, renamed
columns, inline labels; unreadable files quarantined with their cause; plain column-set and
event-time messages; a day without data. Real files in a tmp `MLOPS_HOME` store, real GX."""

from __future__ import annotations

import gzip
import io
import logging
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest
import yaml

from include.mlops import layout
from include.mlops import pipeline as P
from include.mlops.data.generator import Scenario, generate_day
from include.mlops.spec import load_spec
from include.mlops.validation.checks import BadBatchError, DataValidationError, NoDataError, validate_frame
from tests.conftest import day_interval, small_spec, use_home, write_spec

DAY = date(2026, 10, 3)
GX_NOISE = ("'list' object", "attribute", "Traceback", "MetricResolutionError", "Error:")


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh store; `make(**changes)` installs the churn spec with changed sections in the home's
    spec directory and returns (spec, spec name)."""
    from include.mlops.storage import ensure_bucket, get_store

    use_home(monkeypatch, tmp_path)
    store = get_store()
    ensure_bucket(store)

    def make(**sections):
        raw = yaml.safe_load(small_spec(tmp_path).read_text())
        for section, values in sections.items():
            if isinstance(values, dict):
                raw.setdefault(section, {}).update(values)
            else:
                raw[section] = values
        write_spec(tmp_path, raw)
        return load_spec(raw["name"]), raw["name"]

    return store, make


def _parquet(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def _day(spec, rows: int = 120, scenario: str = "none") -> tuple[pd.DataFrame, pd.DataFrame]:
    return generate_day(spec, DAY, Scenario(scenario, DAY), rows=rows)


def _events(spec, name: str) -> str:
    return layout.events_landing_prefix(spec, DAY) + name


# -- reading every file of the day ---------------------------------------------------------------
def test_one_parquet_file_is_staged_byte_for_byte_and_validates(home):
    store, make = home
    spec, spec_name = make()
    events, _ = _day(spec)
    data = _parquet(events)
    store.put_bytes(_events(spec, "part-0.parquet"), data)

    out = P.extract(day_interval(DAY), spec_name)

    assert out.rows == len(events)
    assert store.get_bytes(layout.staging_events_key(spec, DAY)) == data
    assert P.validate(day_interval(DAY), spec_name).rows == len(events)


def test_every_parquet_file_of_the_day_is_read_in_name_order(home, caplog):
    store, make = home
    spec, spec_name = make()
    events, _ = _day(spec, rows=150)
    parts = {"part-b.parquet": events.iloc[50:100], "part-a.parquet": events.iloc[:50], "part-c.parquet": events[100:]}
    for name, part in parts.items():
        store.put_bytes(_events(spec, name), _parquet(part))
    store.put_bytes(_events(spec, "_SUCCESS"), b"")
    store.put_text(_events(spec, "notes.txt"), "hello")

    with caplog.at_level(logging.INFO, logger="include.mlops"):
        out = P.extract(day_interval(DAY), spec_name)

    staged = store.get_parquet(layout.staging_events_key(spec, DAY))
    assert out.rows == 150 and len(staged) == 150
    expected = pd.concat([parts["part-a.parquet"], parts["part-b.parquet"], parts["part-c.parquet"]])
    assert staged[spec.entity_key].tolist() == expected[spec.entity_key].tolist()
    log = caplog.text
    for name, part in parts.items():
        assert f"{name}: {len(part)} rows" in log
    assert "ignored" in log and "notes.txt" in log
    assert P.validate(day_interval(DAY), spec_name).rows == 150


def _csv(df: pd.DataFrame, sep: str = ",") -> bytes:
    return df.to_csv(index=False, sep=sep).encode()


def test_csv_files_with_delimiter_text_keys_rename_and_utc_times(home):
    store, make = home
    spec, spec_name = make(
        source={"format": "csv", "csv_delimiter": ";", "rename": {"Customer": "customer_id", "Plan": "plan"}},
        entity={"name": "customer", "key": "customer_id", "dtype": "string"},
    )
    events, labels = _day(spec, rows=100)
    ids = [f"{i:08d}" for i in range(100)]  # leading zeros survive only if read as text
    events[spec.entity_key] = ids
    labels[spec.entity_key] = ids
    # the same instants written in another time zone, as ISO 8601 with an offset
    local = events[spec.timestamp].dt.tz_convert("Europe/Berlin").map(lambda t: t.isoformat())
    raw = events.assign(**{spec.timestamp: local}).rename(columns={"customer_id": "Customer", "plan": "Plan"})
    store.put_bytes(_events(spec, "part-0.csv"), _csv(raw.iloc[:60], ";"))
    store.put_bytes(_events(spec, "part-1.csv.gz"), gzip.compress(_csv(raw.iloc[60:], ";")))
    store.put_bytes(_events(spec, "old.parquet"), _parquet(events))  # another format: ignored
    arrived = labels.rename(columns={"customer_id": "Customer"})
    store.put_bytes(layout.labels_landing_prefix(spec, DAY) + "labels.csv", _csv(arrived, ";"))

    out = P.extract(day_interval(DAY), spec_name)

    assert out.rows == 100 and out.labels == 100
    staged = store.get_parquet(layout.staging_events_key(spec, DAY))
    assert list(staged.columns) == list(events.columns)
    assert staged[spec.entity_key].tolist() == ids
    assert str(staged[spec.timestamp].dt.tz) == "UTC"
    assert (staged[spec.timestamp] == events[spec.timestamp]).all()
    staged_labels = store.get_parquet(layout.staging_labels_key(spec, DAY))
    assert staged_labels[spec.entity_key].tolist() == ids
    assert (staged_labels[spec.timestamp] == labels[spec.timestamp]).all()
    assert P.validate(day_interval(DAY), spec_name).rows == 100


def test_inline_labels_are_split_off_into_the_days_labels(home):
    store, make = home
    spec, spec_name = make(label={"feed": "inline", "delay_days": 0})
    events, labels = _day(spec, rows=80)
    store.put_bytes(_events(spec, "part-0.parquet"), _parquet(events.assign(**{spec.label: labels[spec.label]})))

    out = P.extract(day_interval(DAY), spec_name)

    staged = store.get_parquet(layout.staging_events_key(spec, DAY))
    assert spec.label not in staged.columns and len(staged) == 80
    staged_labels = store.get_parquet(layout.staging_labels_key(spec, DAY))
    assert list(staged_labels.columns) == [spec.entity_key, spec.timestamp, spec.label]
    assert staged_labels[spec.label].tolist() == labels[spec.label].tolist()
    assert out.labels == 80
    assert P.validate(day_interval(DAY), spec_name).rows == 80


def test_rename_applies_to_parquet_files(home):
    store, make = home
    spec, spec_name = make(source={"rename": {"Tenure": "tenure_months"}})
    events, _ = _day(spec, rows=40)
    store.put_bytes(_events(spec, "part-0.parquet"), _parquet(events.rename(columns={"tenure_months": "Tenure"})))

    P.extract(day_interval(DAY), spec_name)

    staged = store.get_parquet(layout.staging_events_key(spec, DAY))
    assert list(staged.columns) == list(events.columns)
    assert staged["tenure_months"].tolist() == events["tenure_months"].tolist()


def test_inline_label_missing_from_the_events_is_named(home):
    store, make = home
    spec, spec_name = make(label={"feed": "inline", "delay_days": 0})
    events, _ = _day(spec, rows=50)
    store.put_bytes(_events(spec, "part-0.parquet"), _parquet(events))
    P.extract(day_interval(DAY), spec_name)

    with pytest.raises(DataValidationError, match=rf"missing column\(s\) {spec.label}:"):
        P.validate(day_interval(DAY), spec_name)


# -- unreadable files ------------------------------------------------------------------------------
def _truncated(spec) -> bytes:
    data = _parquet(_day(spec, rows=200)[0])
    return data[: len(data) // 2]


BAD_PARQUET = {
    "empty": (lambda spec: b"", "empty"),
    "garbage": (lambda spec: bytes(np.random.default_rng(1).integers(128, 256, 4000, dtype=np.uint8)), "not a parquet"),
    "truncated": (_truncated, "truncated"),
    "csv_named_parquet": (lambda spec: _csv(_day(spec, rows=20)[0]), "CSV?) under a .parquet name"),
}


@pytest.mark.parametrize("case", sorted(BAD_PARQUET))
def test_unreadable_parquet_is_quarantined_with_its_cause(home, case):
    store, make = home
    spec, spec_name = make()
    make_bytes, cause = BAD_PARQUET[case]
    data = make_bytes(spec)
    good, _ = _day(spec, rows=40)
    store.put_bytes(_events(spec, "part-0.parquet"), _parquet(good))
    store.put_bytes(_events(spec, "part-1.parquet"), data)
    # what an earlier, good run of the day left downstream
    store.put_bytes(layout.staging_events_key(spec, DAY), b"old")
    store.put_bytes(f"features/{spec.name}/part-{DAY.isoformat()}.parquet", b"old")

    with pytest.raises(BadBatchError) as err:
        P.extract(day_interval(DAY), spec_name)

    msg = str(err.value)
    assert "part-1.parquet" in msg and cause in msg and "part-0.parquet" not in msg
    assert not any(noise in msg for noise in GX_NOISE)
    q = layout.quarantine_prefix(spec, DAY)
    assert store.get_bytes(f"{q}part-1.parquet") == data
    why = store.get_json(f"{q}cause.json")
    assert [f["file"].rsplit("/", 1)[-1] for f in why["files"]] == ["part-1.parquet"]
    assert cause in why["files"][0]["cause"]
    assert not store.list(layout.staging_events_prefix(spec, DAY))
    assert not store.exists(f"features/{spec.name}/part-{DAY.isoformat()}.parquet")


@pytest.mark.parametrize(
    "text, cause",
    [
        ("customer_id,event_timestamp\n1,2026-10-03T01:00:00Z,extra\n", "a row has 3 field(s) where the header has 2"),
        ("customer_id,event_timestamp\n1,yesterday\n", "column event_timestamp has 1 value(s) that are not date-times"),
    ],
)
def test_a_csv_that_does_not_parse_is_quarantined(home, text, cause):
    store, make = home
    spec, spec_name = make(source={"format": "csv"})
    store.put_text(_events(spec, "day.csv"), text)

    with pytest.raises(BadBatchError) as err:
        P.extract(day_interval(DAY), spec_name)

    assert "day.csv" in str(err.value) and cause in str(err.value)
    q = layout.quarantine_prefix(spec, DAY)
    assert store.get_text(f"{q}day.csv") == text
    assert cause in store.get_json(f"{q}cause.json")["files"][0]["cause"]


def test_files_of_a_day_with_different_columns_are_rejected(home):
    store, make = home
    spec, spec_name = make()
    events, _ = _day(spec, rows=60)
    store.put_bytes(_events(spec, "a.parquet"), _parquet(events.iloc[:30]))
    store.put_bytes(_events(spec, "b.parquet"), _parquet(events.iloc[30:].drop(columns=["plan"])))

    with pytest.raises(BadBatchError, match=r"b\.parquet: its columns differ from those of a\.parquet \(lacks plan\)"):
        P.extract(day_interval(DAY), spec_name)


def test_no_data_for_a_day_says_where_it_looked(home):
    store, make = home
    spec, spec_name = make()
    store.put_text(_events(spec, "events.csv"), "a,b\n")  # the wrong format for this spec

    with pytest.raises(NoDataError) as err:
        P.extract(day_interval(DAY), spec_name)

    msg = str(err.value)
    assert f"dataset {spec.name} on {DAY.isoformat()}" in msg
    assert store.uri(layout.events_landing_prefix(spec, DAY)) in msg and msg.count("file://") == 1
    assert "no .parquet file" in msg and "events.csv" in msg and '"Bring your own data"' in msg


# -- column set and event times --------------------------------------------------------------------
@pytest.fixture(scope="module")
def churn():
    return load_spec("churn")


def _message(outcome) -> str:
    from include.mlops.validation.checks import failure_message

    return failure_message(outcome, "churn 2026-10-03", "file:///r.json", "file:///q/")


def _column_failure(outcome) -> str:
    (item,) = [f for f in outcome.failures if f["type"] == "expect_table_columns_to_match_set"]
    return item["message"]


def test_missing_column_is_named_and_its_expectations_skipped(churn):
    events, _ = _day(churn, scenario="schema_missing")
    out = validate_frame(events, churn)
    text = _column_failure(out)
    missing = churn.categorical_features[0]
    assert f"missing column(s) {missing}:" in text and "unexpected" not in text
    assert [f for f in out.failures if f["type"] != "expect_table_columns_to_match_set"] == []
    assert not any(f.get("error") for f in out.failures)
    assert not any(noise in _message(out) for noise in GX_NOISE)


def test_renamed_column_points_to_source_rename(churn):
    events, _ = _day(churn, scenario="schema_renamed")
    target = churn.numeric_features[1]
    text = _column_failure(validate_frame(events, churn))
    assert f"missing column(s) {target}:" in text and f"unexpected column(s) {target}_renamed:" in text
    assert f"source.rename: {{{target}_renamed: {target}}}" in text


def test_extra_column_is_named(churn):
    events, _ = _day(churn)
    out = validate_frame(events.assign(coupon_code="X"), churn)
    text = _column_failure(out)
    assert "unexpected column(s) coupon_code:" in text and "missing" not in text
    assert "unexpected column(s) coupon_code" in _message(out)


def test_label_in_the_events_of_a_separate_feed_says_how_to_fix(churn):
    events, labels = _day(churn)
    out = validate_frame(events.assign(**{churn.label: labels[churn.label]}), churn)
    text = _column_failure(out)
    assert (
        f"the label column {churn.label} is in the events file: set label.feed: inline, or drop it from the events"
        in text
    )
    assert "unexpected" not in text


def test_entity_key_type_follows_entity_dtype(churn):
    text_key = churn.model_copy(update={"entity": churn.entity.model_copy(update={"dtype": "string"})})
    events, _ = _day(churn)
    as_text = events.assign(**{churn.entity_key: events[churn.entity_key].map(lambda i: f"C-{i}")})
    assert validate_frame(as_text, text_key).success
    assert not validate_frame(as_text, churn).success
    failed = {(f["type"], f["column"]) for f in validate_frame(events, text_key).failures}
    assert ("expect_column_values_to_be_in_type_list", churn.entity_key) in failed


def test_a_batch_stamped_2099_fails_with_count_and_range(churn):
    events, _ = _day(churn, rows=100)
    events.loc[:9, churn.timestamp] = events.loc[:9, churn.timestamp] + pd.DateOffset(years=73)
    out = validate_frame(events, churn, DAY)
    assert not out.success
    (item,) = [f for f in out.failures if f["type"] == "event_times_in_batch_day"]
    assert item["unexpected_count"] == 10
    assert item["observed"]["max"].startswith("2099-10-03") and item["observed"]["min"].startswith("2026-10-03")
    assert "10 of 100 row(s) fall outside the batch's day 2026-10-03" in _message(out)
    assert validate_frame(events.iloc[10:], churn, DAY).success


def test_time_tolerance_lets_times_spill_over_midnight(churn):
    events, _ = _day(churn, rows=50)
    events.loc[0, churn.timestamp] = pd.Timestamp(DAY + timedelta(days=1), tz="UTC") + pd.Timedelta(minutes=30)
    assert not validate_frame(events, churn, DAY).success
    lenient = churn.model_copy(update={"validation": churn.validation.model_copy(update={"time_tolerance_hours": 1})})
    assert validate_frame(events, lenient, DAY).success


def test_validate_quarantines_a_2099_batch_and_discards_the_day(home):
    store, make = home
    spec, spec_name = make()
    events, _ = _day(spec, rows=60)
    events[spec.timestamp] = events[spec.timestamp] + pd.DateOffset(years=73)
    store.put_bytes(_events(spec, "part-0.parquet"), _parquet(events))
    P.extract(day_interval(DAY), spec_name)

    with pytest.raises(DataValidationError, match="60 of 60 row"):
        P.validate(day_interval(DAY), spec_name)

    q = layout.quarantine_prefix(spec, DAY)
    assert len(store.get_parquet(f"{q}events.parquet")) == 60
    assert store.get_json(f"{q}validation.json")["failed"]
    assert not store.exists(layout.staging_events_key(spec, DAY))


def test_damaged_pages_behind_a_good_footer_are_quarantined_by_validate(home):
    """extract copies one parquet file's bytes (its footer proves it is a table); pages that do
    not decode are caught when validate reads them, quarantined like any bad file, not retried."""
    import pyarrow.parquet as pq

    store, make = home
    spec, spec_name = make()
    events, _ = _day(spec)
    data = bytearray(_parquet(events))
    footer = int.from_bytes(data[-8:-4], "little") + 8
    for i in range(8, len(data) - footer - 8, 7):  # scramble the pages, keep the footer
        data[i] ^= 0x5A
    pq.read_metadata(io.BytesIO(bytes(data)))  # the footer still reads
    store.put_bytes(layout.events_landing_key(spec, DAY), bytes(data))
    P.extract(day_interval(DAY), spec_name)
    with pytest.raises(BadBatchError, match="data does not decode") as err:
        P.validate(day_interval(DAY), spec_name)
    assert not any(noise in str(err.value) for noise in GX_NOISE)
    assert store.exists(layout.quarantine_prefix(spec, DAY) + "cause.json")
    assert not store.list(layout.staging_events_prefix(spec, DAY))
