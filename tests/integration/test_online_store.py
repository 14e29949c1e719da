"""Our SQLite online store (one row per entity) against Feast's own SQLite store.

The same frame goes into four homes: Feast's SQLite store through Feast's `write_to_online_store`;
ours through Feast's `write_to_online_store` and through Feast's `materialize` (both call our
`online_write_batch`); and ours through `materialize_frame`, the vectorised writer the `prepare`
task uses (in small chunks: several transactions). `get_online_features` must answer the same in
all four, and our two writers must store the same bytes.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from tests.support.feast_homes import feast_home, feast_join, join_inputs, online_answers, online_rows

pytestmark = pytest.mark.integration
DAY = date(2026, 10, 1)
ENTITIES = 500


def _frame(spec) -> pd.DataFrame:
    """500 churn entities plus awkward values: missing optional numbers and categories, -0.0,
    infinities, an empty category, ids whose int64 bytes end in zeros, and stale duplicates."""
    from include.mlops.data.generator import generate_day
    from include.mlops.features import build as F

    raw, _ = generate_day(spec, DAY, rows=ENTITIES, seed=11)
    raw.loc[raw.index[:3], spec.entity_key] = [256, 2**40, 2**62 + 1]
    feats = F.build_features(raw, spec)
    rng = np.random.default_rng(5)
    for col in ("avg_session_min", "satisfaction_score"):
        feats.loc[rng.random(len(feats)) < 0.2, col] = np.nan
    for col in ("plan", "region"):
        feats[col] = feats[col].astype(object)
        feats.loc[rng.random(len(feats)) < 0.1, col] = None
    feats.loc[feats.index[3], "region"] = ""
    feats.loc[feats.index[4], "monthly_charges"] = -0.0
    feats.loc[feats.index[5], "total_charges"] = np.inf
    offline = F.offline_frame(spec, feats, datetime(2026, 10, 2, tzinfo=UTC))
    # an earlier snapshot of 50 entities: every writer must keep the newer row
    stale = offline.sample(50, random_state=1).copy()
    stale[spec.timestamp] = stale[spec.timestamp] - pd.Timedelta(minutes=5)
    stale["monthly_charges"] = 1.0
    return pd.concat([stale, offline], ignore_index=True).sample(frac=1.0, random_state=2, ignore_index=True)


def test_our_store_answers_as_feasts_sqlite_store(tmp_path, monkeypatch):
    from include.mlops.features import build as F
    from include.mlops.features import online_store
    from include.mlops.features.online_encoding import _double_column
    from include.mlops.spec import load_spec

    spec = load_spec("churn")
    frame = _frame(spec)
    latest = frame.iloc[F.latest_rows(spec, frame)]
    assert len(latest) == ENTITIES and latest[spec.entity_key].is_unique
    store_dir = tmp_path / "store"
    older = latest.assign(monthly_charges=latest["monthly_charges"] + 1, plan="basic")

    fs_feast, store, _ = feast_home(monkeypatch, tmp_path / "feast", store_dir, spec, online="feast-sqlite")
    assert not online_store.supports(fs_feast.config)
    F.write_offline(store, spec, DAY.isoformat(), frame)
    fs_feast.write_to_online_store(spec.feature_view_name, older)  # then upserted over
    fs_feast.write_to_online_store(spec.feature_view_name, latest)

    fs_batch, _, _ = feast_home(monkeypatch, tmp_path / "batch", store_dir, spec)
    fs_batch.write_to_online_store(spec.feature_view_name, older)
    fs_batch.write_to_online_store(spec.feature_view_name, latest)

    fs_mat, _, _ = feast_home(monkeypatch, tmp_path / "materialize", store_dir, spec)
    start = datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC)
    fs_mat.materialize(start - timedelta(hours=1), start + timedelta(days=1))

    fs_ours, _, db = feast_home(monkeypatch, tmp_path / "ours", store_dir, spec)
    assert online_store.supports(fs_ours.config) and db.parent == tmp_path / "ours"
    online_store.write_frame(fs_ours, spec.feature_view_name, older, chunk_rows=128)
    assert F.materialize_frame(fs_ours, spec, frame, chunk_rows=97) == ENTITIES  # 6 chunks

    # one row per entity, the same bytes from the vectorised writer and from Feast's interface
    ours = online_rows(fs_ours, spec)
    assert len(ours) == ENTITIES and len(ours[0]) == 3 + len(F.model_features(spec))
    assert ours == online_rows(fs_batch, spec) == online_rows(fs_mat, spec)
    # the awkward values really are in there: nulls (empty ValueProto), -0.0 apart from 0.0
    values = {v for r in ours for v in r[3:]}
    assert b"" in values
    assert _double_column(np.array([-0.0]))[0] in values

    ids = [*latest[spec.entity_key].tolist(), 1]  # and one entity no writer has seen
    got = online_answers(fs_ours, spec, ids)
    assert got[spec.entity_key].tolist() == ids
    pd.testing.assert_frame_equal(got, online_answers(fs_feast, spec, ids))
    pd.testing.assert_frame_equal(got, online_answers(fs_batch, spec, ids))
    pd.testing.assert_frame_equal(got, online_answers(fs_mat, spec, ids))
    assert got["plan"].isna().any() and got["avg_session_min"].isna().any()
    assert got.iloc[-1].drop(spec.entity_key).isna().all()  # the unknown entity: no features
    assert (got["region"] == "").any() and np.isinf(got["total_charges"]).any()


def test_a_partial_write_keeps_the_other_features(tmp_path, monkeypatch):
    """Feast's upsert is per feature: writing some features of an entity keeps the others."""
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    from include.mlops.features import build as F
    from include.mlops.spec import load_spec

    spec = load_spec("churn")
    latest = _frame(spec).pipe(lambda f: f.iloc[F.latest_rows(spec, f)])
    fs, _, _ = feast_home(monkeypatch, tmp_path / "home", tmp_path / "store", spec)
    F.materialize_frame(fs, spec, latest)
    entity = int(latest[spec.entity_key].iloc[7])
    before = online_answers(fs, spec, [entity])

    view = fs.get_feature_view(spec.feature_view_name)
    key = EntityKey(join_keys=[spec.entity_key], entity_values=[Value(int64_val=entity)])
    later = datetime(2026, 10, 3, tzinfo=UTC)
    fs._get_provider().online_write_batch(
        fs.config, view, [(key, {"plan": Value(string_val="gold")}, later, None)], None
    )

    after = online_answers(fs, spec, [entity])
    assert after["plan"].tolist() == ["gold"]
    pd.testing.assert_frame_equal(after.drop(columns="plan"), before.drop(columns="plan"))
    ((ts, _),) = fs._get_provider().online_store.online_read(fs.config, view, [key], ["plan"])
    assert ts == later


def test_the_store_refuses_feasts_layout_and_ambiguous_columns(tmp_path):
    from include.mlops.features.online_store import _ensure_table

    path = tmp_path / "online.db"
    with sqlite3.connect(path) as con:
        con.execute(
            "CREATE TABLE old (entity_key BLOB, feature_name TEXT, value BLOB, PRIMARY KEY(entity_key, feature_name))"
        )
        with pytest.raises(RuntimeError, match="Feast's own SQLite layout.*delete the file"):
            _ensure_table(con, "old", ["tenure"], path)
        with pytest.raises(ValueError, match="ignore case"):
            _ensure_table(con, "new", ["Plan", "plan"], path)
        with pytest.raises(ValueError, match="event_ts"):
            _ensure_table(con, "new", ["event_ts"], path)
        _ensure_table(con, "new", ["a"], path)
        _ensure_table(con, "new", ["a", "b"], path)  # a feature added later: a new column
        assert [r[1] for r in con.execute('PRAGMA table_info("new")')] == [
            "entity_key",
            "event_ts",
            "created_ts",
            "a",
            "b",
        ]


def test_latest_rows_prefers_newer_event_then_newer_created():
    from include.mlops.features.build import CREATED, latest_rows
    from include.mlops.spec import load_spec

    spec = load_spec("churn")
    t0 = pd.Timestamp("2026-10-01", tz="UTC")
    df = pd.DataFrame(
        {
            spec.entity_key: [1, 1, 2, 2, 3],
            spec.timestamp: [t0 + pd.Timedelta(s, "s") for s in (5, 1, 2, 2, 0)],
            CREATED: [t0, t0, t0 + pd.Timedelta(1, "h"), t0, t0],
        }
    )
    assert sorted(latest_rows(spec, df).tolist()) == [0, 2, 4]


def test_fast_encoders_match_feast_converters():
    """Per value, the column encoders give what Feast's own `python_values_to_proto_values` gives."""
    import pyarrow as pa
    from feast.value_type import ValueType

    from include.mlops.features import online_encoding as O

    doubles = pa.chunked_array([[0.0, -0.0, None, float("inf"), -float("inf"), 1e-300, 5e-324, 1.7976931348623157e308]])
    doubles = pa.chunked_array([doubles.combine_chunks(), pa.array(np.random.default_rng(0).normal(size=1000))])
    strings = pa.chunked_array([["a", "", None, "été", "a", "日本", None, "standard"]])
    assert O._double_column(doubles.to_numpy(zero_copy_only=False)) == O._generic_column(doubles, ValueType.DOUBLE)
    assert O._string_column(strings) == O._generic_column(strings, ValueType.STRING)
    nulls = pa.chunked_array([pa.nulls(3, pa.string())])
    assert O._string_column(nulls) == O._generic_column(nulls, ValueType.STRING) == [b""] * 3


def test_point_in_time_join_keeps_object_strings_and_dask_setting(tmp_path, monkeypatch):
    """`historical_features` runs Feast's join with dask's Arrow strings on (faster hashing), but
    answers exactly what Feast answers with them off: object columns, None for a missing category;
    and Feast's process-wide setting is left as Feast set it."""
    import dask

    from include.mlops.features import build as F
    from include.mlops.spec import load_spec

    spec = load_spec("churn")
    fs, _, entity_df = join_inputs(monkeypatch, tmp_path, spec, _frame(spec))
    assert dask.config.get("dataframe.convert-string") is False  # what Feast's file store sets
    got = F.historical_features(fs, spec, entity_df)
    assert dask.config.get("dataframe.convert-string") is False

    pd.testing.assert_frame_equal(got, feast_join(fs, spec, entity_df))
    assert got["region"].dtype == object and got["region"].isna().any()
    assert got["region"][got["region"].isna()].map(type).eq(type(None)).all()
    assert got["region"].eq("").any()
