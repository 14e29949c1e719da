"""Our vectorised SQLite online writer against Feast's own writers, on a real Feast SQLite store.

Three homes get the same frame: Feast's `write_to_online_store`, Feast's `materialize` from the
parquet source, and our `materialize_frame` (in small chunks: several transactions, multi-row
statements and their remainders). The raw SQLite rows must be byte-identical and
`get_online_features` must answer the same.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import use_home

pytestmark = pytest.mark.integration
DAY = date(2026, 10, 1)
ENTITIES = 500


def _frame(spec) -> pd.DataFrame:
    """500 churn entities plus awkward values: missing optional numbers and categories, -0.0,
    infinities, an empty category, ids whose int64 bytes end in zeros, and stale duplicates."""
    from include.mlops import features as F
    from include.mlops.data.generator import generate_day

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


def _home(monkeypatch, home: Path, store_dir: Path, spec):
    from include.mlops import features as F
    from include.mlops.config import get_settings
    from include.mlops.storage import ObjectStore, ensure_bucket

    use_home(monkeypatch, home, MLOPS_STORE_URI=f"file://{store_dir}")
    settings = get_settings()
    store = ObjectStore(settings.store_uri)
    ensure_bucket(store)
    fs = F.get_feature_store(settings)
    F.apply_definitions(fs, spec, store)
    return fs, store, Path(settings.feast_online_path)


def _rows(db: Path, table: str, order: str) -> list[tuple]:
    with sqlite3.connect(db) as con:
        return con.execute(
            f'SELECT entity_key, feature_name, value, value_text, vector_value, event_ts, created_ts FROM "{table}" '
            f"ORDER BY {order}"
        ).fetchall()


def _online(fs, spec, ids: list[int]) -> pd.DataFrame:
    from include.mlops.features import online_features

    return online_features(fs, spec, ids).sort_index(axis=1)


def test_sqlite_writer_matches_feast(tmp_path, monkeypatch):
    from include.mlops import features as F
    from include.mlops import online_store
    from include.mlops.spec import load_spec

    spec = load_spec("churn")
    frame = _frame(spec)
    latest = frame.iloc[F.latest_rows(spec, frame)]
    assert len(latest) == ENTITIES and latest[spec.entity_key].is_unique
    store_dir = tmp_path / "store"
    older = latest.assign(monthly_charges=latest["monthly_charges"] + 1, plan="basic")

    fs_feast, store, db_feast = _home(monkeypatch, tmp_path / "feast", store_dir, spec)
    F.write_offline(store, spec, DAY.isoformat(), frame)
    fs_feast.write_to_online_store(spec.feature_view_name, older)  # then upserted over
    fs_feast.write_to_online_store(spec.feature_view_name, latest)

    fs_mat, _, db_mat = _home(monkeypatch, tmp_path / "materialize", store_dir, spec)
    start = datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC)
    fs_mat.materialize(start - timedelta(hours=1), start + timedelta(days=1))

    fs_ours, _, db_ours = _home(monkeypatch, tmp_path / "ours", store_dir, spec)
    assert online_store.supports(fs_ours.config)
    online_store.write_frame(fs_ours, spec.feature_view_name, older, chunk_rows=128)
    assert F.materialize_frame(fs_ours, spec, frame, chunk_rows=97) == ENTITIES  # 6 chunks

    table = online_store.table_name(fs_ours.config, fs_ours.get_feature_view(spec.feature_view_name))
    by_key = "entity_key, feature_name"  # the primary key; rowids follow each writer's insert order
    ours = _rows(db_ours, table, by_key)
    assert len(ours) == ENTITIES * len(F.model_features(spec))
    # the same bytes in every column as both of Feast's writers
    assert ours == _rows(db_feast, table, by_key)
    assert ours == _rows(db_mat, table, by_key)
    # the awkward values really are in there
    values = {r[2] for r in ours}
    assert b"" in values and any(r[3] == "-0.0" for r in ours) and any(r[3] == "inf" for r in ours)
    assert any(r[1] == "region" and r[3] == "" for r in ours)

    ids = [*latest[spec.entity_key].tolist(), 1]  # and one entity no writer has seen
    got = _online(fs_ours, spec, ids)
    pd.testing.assert_frame_equal(got, _online(fs_feast, spec, ids))
    pd.testing.assert_frame_equal(got, _online(fs_mat, spec, ids))
    assert got["plan"].isna().any() and got["avg_session_min"].isna().any()


def test_latest_rows_prefers_newer_event_then_newer_created():
    from include.mlops.features import CREATED, latest_rows
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

    from include.mlops import online_store as O

    doubles = pa.chunked_array([[0.0, -0.0, None, float("inf"), -float("inf"), 1e-300, 5e-324, 1.7976931348623157e308]])
    doubles = pa.chunked_array([doubles.combine_chunks(), pa.array(np.random.default_rng(0).normal(size=1000))])
    strings = pa.chunked_array([["a", "", None, "été", "a", "日本", None, "standard"]])
    assert O._double_column(doubles.to_numpy(zero_copy_only=False)) == O._generic_column(doubles, ValueType.DOUBLE)
    assert O._string_column(strings) == O._generic_column(strings, ValueType.STRING)
    nulls = pa.chunked_array([pa.nulls(3, pa.string())])
    assert O._string_column(nulls) == O._generic_column(nulls, ValueType.STRING) == ([b""] * 3, [None] * 3)
