"""Feast homes for the online-store tests (tests/integration/test_online_store.py and
test_string_entities.py): a home with the spec's definitions applied on a given store and online
store (`feast_home`), one whose offline store holds a frame for a point-in-time join
(`join_inputs`), Feast's own join (`feast_join`), and what an online store holds and answers
(`online_rows`, `online_answers`).
"""

from __future__ import annotations

import sqlite3
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from tests.conftest import use_home

DAY = date(2026, 10, 1)  # the offline snapshot's day (`join_inputs`)


def feast_home(monkeypatch, home: Path, store_dir: Path, spec, online: str = "sqlite"):
    """A home on `store_dir` with the spec's Feast definitions applied: (feature store, object
    store, online database path); `online` names the online store (ours, or Feast's SQLite)."""
    from include.mlops.config import get_settings
    from include.mlops.features import build as F
    from include.mlops.storage import ObjectStore, ensure_bucket

    use_home(monkeypatch, home, MLOPS_STORE_URI=f"file://{store_dir}", FEAST_ONLINE_STORE=online)
    settings = get_settings()
    store = ObjectStore(settings.store_uri)
    ensure_bucket(store)
    fs = F.get_feature_store(settings)
    F.apply_definitions(fs, spec, store)
    return fs, store, Path(settings.feast_online_path)


def join_inputs(monkeypatch, tmp_path: Path, spec, frame: pd.DataFrame, day: date = DAY):
    """A home whose offline store holds `frame`: its feature store, each entity's newest row, and
    the entity frame that asks for each entity's features a minute after that row."""
    from include.mlops.features import build as F

    fs, store, _ = feast_home(monkeypatch, tmp_path / "home", tmp_path / "store", spec)
    F.write_offline(store, spec, day.isoformat(), frame)
    latest = frame.iloc[F.latest_rows(spec, frame)]
    entity_df = pd.DataFrame(
        {
            spec.entity_key: latest[spec.entity_key].to_numpy(),
            spec.timestamp: latest[spec.timestamp] + pd.Timedelta(minutes=1),
            spec.label: np.arange(len(latest)) % 2,
        }
    )
    return fs, latest, entity_df


def feast_join(fs, spec, entity_df: pd.DataFrame) -> pd.DataFrame:
    """Feast's own point-in-time join of `entity_df` (its times as pytz UTC, as Feast takes them)."""
    import pytz

    plain = entity_df.assign(**{spec.timestamp: entity_df[spec.timestamp].dt.tz_convert(pytz.UTC)})
    return fs.get_historical_features(
        entity_df=plain, features=fs.get_feature_service(spec.feature_service_name)
    ).to_df()


def online_rows(fs, spec) -> list[tuple]:
    """Every row of the feature view's online table, as stored, by entity key."""
    from include.mlops.features import online_store

    table = online_store.table_name(fs.config, fs.get_feature_view(spec.feature_view_name))
    with sqlite3.connect(online_store.db_path(fs.config)) as con:
        return con.execute(f'SELECT * FROM "{table}" ORDER BY entity_key').fetchall()


def online_answers(fs, spec, ids: list[int]) -> pd.DataFrame:
    """`get_online_features` for `ids`, its columns sorted (to compare stores)."""
    from include.mlops.features.build import online_features

    return online_features(fs, spec, ids).sort_index(axis=1)
