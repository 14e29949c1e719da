"""String entity keys (`entity.dtype: string`, ids like "C-0100123") through the real stores.

- Feast's definitions follow the spec: a STRING entity, a String entity column.
- Our SQLite online store: the vectorised writer (`materialize_frame` / `write_frame`) stores the
  bytes Feast's own interface (`write_to_online_store` -> `online_write_batch`) stores, and both
  answer `get_online_features` as Feast's own SQLite store does.
- Feast's point-in-time join (`historical_features`) on text keys.
- A string-keyed champion behind the scoring service: lookups by string id, a wrong-typed id is a
  422 naming the field, and the prediction log's entity column is text that monitoring joins to
  the labels.
"""

from __future__ import annotations

import io
import os
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from include.mlops.results import TrainResult
from tests.conftest import DEMO_START, day_interval, demo_home, run_dag_day, small_spec, ti_state, use_home
from tests.support.feast_homes import feast_home, feast_join, join_inputs, online_answers, online_rows

pytestmark = pytest.mark.integration
DAY = date(2026, 10, 1)
ENTITIES = 400
AWKWARD = ["é", "日本-" + "x" * 300, "00123", "123", "a b\tc", "C-0000000"]  # unicode, long, numeric-looking


def string_spec_file(tmp: Path) -> Path:
    """The tests' small churn spec with `entity.dtype: string`, installed in `tmp`'s spec directory
    (see small_spec): steps take its name, `path.stem`."""
    import yaml

    path = small_spec(tmp)
    raw = yaml.safe_load(path.read_text())
    raw["entity"]["dtype"] = "string"
    path.write_text(yaml.safe_dump(raw))
    return path


def _frame(spec) -> pd.DataFrame:
    """A generated day with text ids (some awkward), missing values and stale duplicates."""
    from include.mlops.data.generator import generate_day
    from include.mlops.features import build as F

    raw, _ = generate_day(spec, DAY, rows=ENTITIES, seed=11)
    raw.loc[raw.index[: len(AWKWARD)], spec.entity_key] = AWKWARD
    feats = F.build_features(raw, spec)
    rng = np.random.default_rng(5)
    feats.loc[rng.random(len(feats)) < 0.2, "avg_session_min"] = np.nan
    feats["plan"] = feats["plan"].astype(object)
    feats.loc[rng.random(len(feats)) < 0.1, "plan"] = None
    offline = F.offline_frame(spec, feats, datetime(2026, 10, 2, tzinfo=UTC))
    stale = offline.sample(40, random_state=1).copy()
    stale[spec.timestamp] = stale[spec.timestamp] - pd.Timedelta(minutes=5)
    stale["monthly_charges"] = 1.0
    return pd.concat([stale, offline], ignore_index=True).sample(frac=1.0, random_state=2, ignore_index=True)


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    from include.mlops.spec import load_spec_file

    return load_spec_file(string_spec_file(tmp_path_factory.mktemp("spec")))


def test_definitions_follow_the_entity_dtype(tmp_path, monkeypatch, spec):
    from feast.types import Int64, String
    from feast.value_type import ValueType

    from include.mlops.spec import load_spec

    fs, _, _ = feast_home(monkeypatch, tmp_path / "s", tmp_path / "store", spec)
    assert fs.get_entity(spec.entity_name).value_type == ValueType.STRING
    assert [(c.name, c.dtype) for c in fs.get_feature_view(spec.feature_view_name).entity_columns] == [
        (spec.entity_key, String)
    ]
    int_spec = load_spec("churn")
    fs, _, _ = feast_home(monkeypatch, tmp_path / "i", tmp_path / "store", int_spec)
    assert fs.get_entity(int_spec.entity_name).value_type == ValueType.INT64
    assert [(c.name, c.dtype) for c in fs.get_feature_view(int_spec.feature_view_name).entity_columns] == [
        (int_spec.entity_key, Int64)
    ]


def test_string_keys_are_stored_and_answered_as_feast_does(tmp_path, monkeypatch, spec):
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    from include.mlops.features import build as F
    from include.mlops.features import online_store

    frame = _frame(spec)
    latest = frame.iloc[F.latest_rows(spec, frame)]
    assert len(latest) == ENTITIES and latest[spec.entity_key].is_unique
    older = latest.assign(monthly_charges=latest["monthly_charges"] + 1, plan="basic")
    store_dir = tmp_path / "store"

    fs_feast, store, _ = feast_home(monkeypatch, tmp_path / "feast", store_dir, spec, online="feast-sqlite")
    F.write_offline(store, spec, DAY.isoformat(), frame)
    fs_feast.write_to_online_store(spec.feature_view_name, older)
    fs_feast.write_to_online_store(spec.feature_view_name, latest)

    fs_batch, _, _ = feast_home(monkeypatch, tmp_path / "batch", store_dir, spec)
    fs_batch.write_to_online_store(spec.feature_view_name, older)  # our online_write_batch, row by row
    fs_batch.write_to_online_store(spec.feature_view_name, latest)

    fs_ours, _, _ = feast_home(monkeypatch, tmp_path / "ours", store_dir, spec)
    online_store.write_frame(fs_ours, spec.feature_view_name, older, chunk_rows=64)
    assert F.materialize_frame(fs_ours, spec, frame, chunk_rows=97) == ENTITIES  # several chunks

    ours = online_rows(fs_ours, spec)
    assert len(ours) == ENTITIES
    assert ours == online_rows(fs_batch, spec)
    # the keys are exactly Feast's serialisation of each text id
    expected = {
        serialize_entity_key(EntityKey(join_keys=[spec.entity_key], entity_values=[Value(string_val=i)]), 3)
        for i in latest[spec.entity_key]
    }
    assert {r[0] for r in ours} == expected

    ids = [*latest[spec.entity_key].tolist(), "C-9999999", "0123"]  # two ids no writer has seen
    got = online_answers(fs_ours, spec, ids)
    assert got[spec.entity_key].tolist() == ids
    pd.testing.assert_frame_equal(got, online_answers(fs_feast, spec, ids))
    pd.testing.assert_frame_equal(got, online_answers(fs_batch, spec, ids))
    assert got.iloc[-2:].drop(columns=spec.entity_key).isna().all().all()
    newest = latest.set_index(spec.entity_key)
    by_id = got.set_index(spec.entity_key)
    for awkward in AWKWARD:
        assert by_id.loc[awkward, "monthly_charges"] == newest.loc[awkward, "monthly_charges"], awkward


def test_a_string_key_refuses_frames_with_numbers(tmp_path, monkeypatch, spec):
    from include.mlops.features import online_store

    fs, _, _ = feast_home(monkeypatch, tmp_path / "home", tmp_path / "store", spec)
    frame = _frame(spec).head(5)
    frame[spec.entity_key] = np.arange(5, dtype="int64")
    with pytest.raises(ValueError, match=r"customer_id.*string key.*int64.*convert the ids to text"):
        online_store.write_frame(fs, spec.feature_view_name, frame)


def test_point_in_time_join_on_string_keys(tmp_path, monkeypatch, spec):
    from include.mlops.features import build as F

    fs, latest, entity_df = join_inputs(monkeypatch, tmp_path, spec, _frame(spec), DAY)
    got = F.historical_features(fs, spec, entity_df)
    assert len(got) == len(entity_df) and got[spec.entity_key].dtype == object
    assert set(got[spec.entity_key]) == set(entity_df[spec.entity_key])
    # every row joined the newest features of its own entity (not the stale snapshot)
    want = latest.set_index(spec.entity_key)["monthly_charges"]
    joined = got.set_index(spec.entity_key)["monthly_charges"]
    pd.testing.assert_series_equal(joined.loc[want.index], want, check_names=False)
    pd.testing.assert_frame_equal(got, feast_join(fs, spec, entity_df))


# -- a string-keyed lifecycle behind the scoring service ------------------------------------------------
@pytest.fixture(scope="module")
def string_lifecycle(tmp_path_factory):
    """10 ingested days of string-keyed churn data (400 rows/day) and a promoted champion, as the
    session's `lifecycle` fixture builds for int64 keys (validation of text keys has its own tests)."""
    from dataclasses import replace

    from include.mlops import pipeline as P
    from include.mlops.data.generator import write_days
    from include.mlops.spec import load_spec
    from include.mlops.storage import ObjectStore, ensure_bucket

    home = tmp_path_factory.mktemp("string_lifecycle")
    mp = pytest.MonkeyPatch()
    use_home(mp, home)
    name = string_spec_file(home).stem
    spec = load_spec(name)
    store = ObjectStore(f"file://{home / 'store'}")
    ensure_bucket(store)
    write_days(store, spec, DEMO_START, 10, rows=400)
    for i in range(10):
        iv = day_interval(DEMO_START + timedelta(days=i))
        P.extract(iv, name)
        P.prepare(iv, name)
    lineage = {"dag_id": "fixture", "run_id": "fixture"}
    iv = day_interval(DEMO_START + timedelta(days=9))
    tr = P.train(iv, lineage, name)
    ev = P.evaluate(tr, name)
    forced = replace(ev, passed=True, reasons=[])
    rg = P.register(tr, forced, None, lineage, iv, name)
    P.promote(rg, forced, "fixture", "fixture", spec_name=name)
    env = {k: os.environ[k] for k in os.environ if k.startswith(("MLOPS_", "MLFLOW_", "FEAST_"))}
    env["MLOPS_DATASET"] = name
    yield {"home": home, "spec": spec, "store": store, "env": env, "train": tr, "version": rg.version}
    mp.undo()


def test_a_string_keyed_champion_serves_lookups_by_string_id(string_lifecycle):
    from include.mlops.delivery.service import start_service
    from include.mlops.layout import staging_key
    from include.mlops.monitoring.reading import join_labels, read_labels, read_predictions

    spec, store = string_lifecycle["spec"], string_lifecycle["store"]
    key = spec.entity_key
    assert store.get_parquet(store.key_of(string_lifecycle["train"].train_uri))[key].map(type).eq(str).all()
    day = DEMO_START + timedelta(days=9)
    raw = store.get_parquet(staging_key(spec, day)).head(12)
    ids = raw[key].tolist()
    assert all(isinstance(i, str) and i.startswith("C-") for i in ids)
    frame = raw[[key, spec.timestamp, *spec.feature_names]].astype(object)
    frame[spec.timestamp] = pd.to_datetime(raw[spec.timestamp], utc=True).map(lambda t: t.isoformat())
    records = frame.to_dict(orient="records")

    h = start_service({**string_lifecycle["env"], "MLOPS_SERVE_LOG_FLUSH_SECONDS": "1"}, timeout=240)
    try:
        with httpx.Client(base_url=h.url, timeout=60) as http:
            by_feat = http.post("/predict", json={"records": records})
            assert by_feat.status_code == 200, by_feat.text
            feat_preds = by_feat.json()["predictions"]
            assert [p[key] for p in feat_preds] == ids
            assert all(p["model_version"] == string_lifecycle["version"] for p in feat_preds)

            by_id = http.post("/predict", json={"entity_ids": ids})  # features from the online store
            assert by_id.status_code == 200, by_id.text
            for a, b in zip(by_id.json()["predictions"], feat_preds, strict=True):
                assert a[key] == b[key] and a["score"] == pytest.approx(b["score"], abs=1e-12)
            single = http.post("/predict", json={key: ids[0]})
            assert single.status_code == 200 and single.json()["predictions"][0][key] == ids[0]

            csv = pd.DataFrame(records).drop(columns=spec.timestamp).head(3).to_csv(index=False)
            r = http.post("/invocations", content=csv, headers={"Content-Type": "text/csv"})
            assert r.status_code == 200, r.text
            expected = [list(p["probabilities"].values()) for p in feat_preds[:3]]
            np.testing.assert_allclose(r.json()["predictions"], expected, atol=1e-9)

            for body, loc in (
                ({"entity_ids": [ids[0], 100123]}, ["body", "records", 1, key]),
                ({key: 100123}, ["body", "records", 0, key]),
                ({"records": [{**records[0], key: 7.0}]}, ["body", "records", 0, key]),
            ):
                r = http.post("/predict", json=body)
                assert r.status_code == 422, (body, r.text)
                assert any(d["loc"] == loc and d["type"] == "type_error.str" for d in r.json()["detail"]), r.text
            unknown = http.post("/predict", json={"entity_ids": ["C-9999999"]})
            assert unknown.status_code == 422
            assert unknown.json()["detail"][0]["type"] == "value_error.unknown_entity"
            flushed = http.post("/admin/flush", headers=h.headers())
            assert flushed.status_code == 200 and flushed.json()["flushed"], flushed.text
    finally:
        h.close()
        h.cleanup()

    import pyarrow.parquet as pq

    keys = [k for k in store.list(f"predictions/{spec.name}/dt={day.isoformat()}/") if k.endswith(".parquet")]
    assert keys
    for k in keys:
        assert str(pq.read_schema(io.BytesIO(store.get_bytes(k))).field(key).type) == "string"
    preds, _ = read_predictions(store, spec, [day])
    assert set(preds[key]) == set(ids)
    labels = read_labels(store, spec, day, day + timedelta(days=spec.label_delay_days))
    joined = join_labels(preds, labels, spec)
    feed = labels.set_index([key, spec.timestamp])[spec.label]
    assert len(joined) == len(preds) and set(joined[key]) == set(ids)
    for _, row in joined.iterrows():
        assert row[spec.label] == feed.loc[(row[key], row[spec.timestamp])]


# -- ml_training end to end ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def string_dag_home(tmp_path_factory, airflow_db):
    home = tmp_path_factory.mktemp("string_dag")
    with demo_home(home, string_spec_file(home), days=9, rows=300) as (spec_name, spec, _):
        yield {"spec": spec, "spec_name": spec_name}


def test_ml_training_runs_end_to_end_on_string_keys(training_dag, string_dag_home):
    """Ingest 8 days, then a full day: extract, validate, prepare, train, evaluate, register and
    deploy (whose smoke test looks up string ids in the online store through the service)."""
    from include.mlops.config import get_settings
    from include.mlops.features.build import get_feature_store, online_features
    from include.mlops.layout import staging_key
    from include.mlops.registry import alias_version, setup_mlflow
    from include.mlops.storage import get_store

    spec, spec_name = string_dag_home["spec"], string_dag_home["spec_name"]
    for i in range(8):
        _, tis = run_dag_day(training_dag, DEMO_START + timedelta(days=i), dataset=spec_name, train=False)
        assert ti_state(tis["prepare"]) == "success", (i, {t: ti_state(ti) for t, ti in tis.items()})
    _, tis = run_dag_day(training_dag, DEMO_START + timedelta(days=8), dataset=spec_name, train=True)
    assert {t: ti_state(ti) for t, ti in tis.items()} == {t: "success" for t in tis}
    assert alias_version(setup_mlflow(get_settings()), spec.model_name, "champion") == "1"

    store = get_store()
    train = store.get_parquet(store.key_of(TrainResult.from_xcom(tis["train"].xcom_pull(task_ids="train")).train_uri))
    assert train[spec.entity_key].map(type).eq(str).all() and train[spec.entity_key].str.startswith("C-").all()
    staged = store.get_parquet(staging_key(spec, DEMO_START + timedelta(days=8)))
    ids = [str(i) for i in staged[spec.entity_key].head(5)]
    online = online_features(get_feature_store(get_settings()), spec, ids)
    assert online[spec.entity_key].tolist() == ids and online[spec.feature_names].notna().any(axis=1).all()
