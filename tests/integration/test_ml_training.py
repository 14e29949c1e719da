"""`ml_training` end to end with `dag.test()`: real GX, Feast, MLflow, on file:// and s3://."""

from __future__ import annotations

import hashlib
import os
from datetime import timedelta
from pathlib import Path

import pytest

from include.mlops.results import TrainResult
from tests.conftest import (
    DEMO_START,
    day_interval,
    demo_home,
    run_dag_day,
    s3_env,
    small_spec,
    ti_state,
    use_home,
    write_spec,
)

pytestmark = pytest.mark.integration
ROWS = 300
INGEST_DAYS = 8  # day 9 is the first full run: labels (3 days late) cover days 1-6


def _client():
    from include.mlops.config import get_settings
    from include.mlops.registry import setup_mlflow

    return setup_mlflow(get_settings())


def _aliases(client, model):
    from include.mlops.registry import alias_version

    return {a: alias_version(client, model, a) for a in ("champion", "challenger", "previous")}


@pytest.fixture(scope="module")
def file_home(tmp_path_factory, airflow_db):
    home = tmp_path_factory.mktemp("file_home")
    with demo_home(home, small_spec(home), days=12, rows=ROWS) as (spec_name, spec, _):
        yield {"home": home, "spec_name": spec_name, "spec": spec}


def _ingest(dag, spec_name, days):
    for i in range(days):
        run, tis = run_dag_day(dag, DEMO_START + timedelta(days=i), dataset=spec_name, train=False)
        assert ti_state(tis["prepare"]) == "success" and ti_state(tis["train"]) == "skipped", i


def _staging_digest(store, spec):
    h = hashlib.sha256()
    for key in store.list(f"staging/{spec.name}/"):
        h.update(key.encode())
        h.update(store.get_bytes(key))
    return h.hexdigest()


@pytest.fixture(scope="module")
def first_run(training_dag, file_home):
    """The history ingested and the first full day run: champion v1. What the registry and the
    ledger held right then is recorded, so the tests that read it pass in any order."""
    from include.mlops.ledger import read_ledger
    from include.mlops.storage import get_store

    spec, spec_name = file_home["spec"], file_home["spec_name"]
    _ingest(training_dag, spec_name, INGEST_DAYS)
    run, tis = run_dag_day(training_dag, DEMO_START + timedelta(days=INGEST_DAYS), dataset=spec_name, train=True)
    client = _client()
    return {
        "run": run,
        "states": {t: ti_state(ti) for t, ti in tis.items()},
        "versions": client.search_model_versions(f"name='{spec.model_name}'"),
        "aliases": _aliases(client, spec.model_name),
        "ledger": read_ledger(get_store(), spec.model_name),
    }


@pytest.fixture(scope="module")
def rejected(training_dag, file_home, first_run, tmp_path_factory):
    """A day run under a gate no model passes: v2 is registered as challenger, not promoted."""
    import yaml

    strict = yaml.safe_load(Path(file_home["spec"].path).read_text())
    strict["gate"]["minimums"] = {"roc_auc": 0.999}
    strict_dir = write_spec(tmp_path_factory.mktemp("strict"), strict).parent
    with pytest.MonkeyPatch.context() as mp:  # the same name, found first: MLOPS_SPEC_DIRS
        mp.setenv("MLOPS_SPEC_DIRS", str(strict_dir))
        run, tis = run_dag_day(
            training_dag, DEMO_START + timedelta(days=INGEST_DAYS + 1), dataset=strict["name"], train=True
        )
    return {
        "deploy_state": ti_state(tis["deploy"]),
        "deploy": tis["deploy"].xcom_pull(task_ids="deploy"),
        "aliases": _aliases(_client(), file_home["spec"].model_name),
    }


def test_first_run_registers_and_promotes_with_lineage(file_home, first_run):
    spec = file_home["spec"]
    run, states = first_run["run"], first_run["states"]
    assert states == {t: "success" for t in states}

    client = _client()
    versions = first_run["versions"]
    assert [str(v.version) for v in versions] == ["1"]
    assert first_run["aliases"] == {"champion": "1", "challenger": "1", "previous": None}
    tags = versions[0].tags
    for key in (
        "data_interval",
        "data_hash",
        "gx_result_uri",
        "feast_feature_service",
        "airflow.dag_id",
        "airflow.run_id",
        "git_commit",
        "rows",
    ):
        assert tags.get(key), key
    assert tags["airflow.run_id"] == run.run_id and tags["feast_feature_service"] == spec.feature_service_name
    assert tags["gx_result_uri"].endswith("validation.json")
    assert day_interval(DEMO_START + timedelta(days=INGEST_DAYS)).label == tags["data_interval"]

    run_id = versions[0].run_id
    arts = {a.path for a in client.list_artifacts(run_id)} | {a.path for a in client.list_artifacts(run_id, "plots")}
    assert {"evaluation", "plots/roc_curve.png", "plots/confusion_matrix.png", "plots/feature_importance.png"} <= arts
    mlrun = client.get_run(run_id)
    assert "holdout_roc_auc" in mlrun.data.metrics and mlrun.data.tags["mlops.gate"] == "passed"
    assert mlrun.inputs.dataset_inputs, "training data must be logged as an MLflow dataset input"
    ledger = first_run["ledger"]
    assert [(e["action"], e["to_version"]) for e in ledger] == [("promote", "1")]


def test_rerun_of_same_interval_is_idempotent(training_dag, file_home, first_run):
    from include.mlops.storage import get_store

    spec, spec_name = file_home["spec"], file_home["spec_name"]
    store = get_store()
    before = _staging_digest(store, spec)
    versions_before = len(_client().search_model_versions(f"name='{spec.model_name}'"))
    run, tis = run_dag_day(training_dag, DEMO_START + timedelta(days=INGEST_DAYS), dataset=spec_name, train=True)
    assert ti_state(tis["deploy"]) == "success"
    assert _staging_digest(store, spec) == before
    client = _client()
    assert len(client.search_model_versions(f"name='{spec.model_name}'")) == versions_before
    assert TrainResult.from_xcom(tis["train"].xcom_pull(task_ids="train")).reused is True


def test_rejected_challenger_is_not_promoted_and_run_succeeds(rejected):
    assert rejected["deploy_state"] == "success"
    assert rejected["deploy"]["message"].startswith("not promoted: minimum roc_auc")
    assert rejected["aliases"] == {"champion": "1", "challenger": "2", "previous": None}


@pytest.mark.parametrize("scenario", ["corrupted", "schema_renamed"])
def test_bad_batch_is_quarantined_and_champion_untouched(training_dag, file_home, first_run, scenario):
    from include.mlops.data.generator import Scenario, events_key, generate_day
    from include.mlops.storage import get_store

    spec, spec_name = file_home["spec"], file_home["spec_name"]
    store = get_store()
    day = DEMO_START + timedelta(days=11 if scenario == "corrupted" else 10)
    events, _ = generate_day(spec, day, Scenario(scenario, day), rows=ROWS)
    store.put_parquet(events_key(spec, day), events)
    champion_before = _aliases(_client(), spec.model_name)["champion"]
    run, tis = run_dag_day(training_dag, day, dataset=spec_name, train=True)
    assert ti_state(tis["validate"]) == "failed"
    assert all(ti_state(tis[t]) != "success" for t in ("prepare", "train", "register", "deploy"))
    q = f"quarantine/{spec.name}/dt={day.isoformat()}"
    assert store.exists(f"{q}/events.parquet") and store.exists(f"{q}/validation.json")
    report = store.get_json(f"{q}/validation.json")
    assert report["success"] is False and report["failed"]
    assert not store.exists(f"staging/{spec.name}/events/dt={day.isoformat()}/events.parquet")
    assert _aliases(_client(), spec.model_name)["champion"] == champion_before


def test_batch_scoring_and_one_click_rollback(training_dag, file_home, first_run, rejected):
    from airflow.dag_processing.dagbag import DagBag

    from include.mlops.ledger import read_ledger
    from include.mlops.storage import get_store
    from tests.conftest import ROOT

    spec, spec_name = file_home["spec"], file_home["spec_name"]
    bag = DagBag(dag_folder=str(ROOT / "dags"))
    store = get_store()
    day = DEMO_START + timedelta(days=INGEST_DAYS)
    scoring = bag.get_dag("ml_batch_scoring")
    outs = []
    for _ in range(2):  # idempotent: the same file, the same rows
        run, tis = run_dag_day(scoring, day, dataset=spec_name)
        assert ti_state(tis["score"]) == "success"
        outs.append(tis["score"].xcom_pull(task_ids="score"))
    key = store.key_of(outs[0]["uri"])
    assert key == f"predictions/batch/{spec.name}/dt={day.isoformat()}/predictions.parquet"
    assert [k for k in store.list(f"predictions/batch/{spec.name}/") if k.endswith(".parquet")] == [key]
    df = store.get_parquet(key)
    assert len(df) == ROWS and not df.duplicated([spec.entity_key, spec.timestamp]).any()
    assert (df["model_version"].astype(str) == "1").all() and df["score"].between(0, 1).all()

    rollback = bag.get_dag("ml_rollback")
    rollback.test(run_conf={"dataset": spec_name, "to_version": "2", "reason": "test"})
    assert _aliases(_client(), spec.model_name)["champion"] == "2"
    assert _aliases(_client(), spec.model_name)["previous"] == "1"
    rollback.test(run_conf={"dataset": spec_name, "to_version": None, "reason": "test"})  # back to previous
    assert _aliases(_client(), spec.model_name)["champion"] == "1"
    actions = [(e["action"], e["from_version"], e["to_version"]) for e in read_ledger(store, spec.model_name)]
    assert actions[-2:] == [("rollback", "1", "2"), ("rollback", "2", "1")]


def test_ml_training_on_s3(training_dag, moto_server, tmp_path_factory):
    import boto3

    from include.mlops.data.generator import write_days
    from include.mlops.spec import load_spec
    from include.mlops.storage import ensure_bucket, get_store

    home = tmp_path_factory.mktemp("s3_home")
    with pytest.MonkeyPatch.context() as mp:
        use_home(mp, home, **s3_env(moto_server, "mlops-it"))
        spec_name = small_spec(home).stem  # installed in the home: the name
        spec = load_spec(spec_name)
        store = get_store()
        ensure_bucket(store)
        write_days(store, spec, DEMO_START, INGEST_DAYS + 1, rows=ROWS)
        _ingest(training_dag, spec_name, INGEST_DAYS)
        run, tis = run_dag_day(training_dag, DEMO_START + timedelta(days=INGEST_DAYS), dataset=spec_name, train=True)
        assert {t: ti_state(ti) for t, ti in tis.items()} == {t: "success" for t in tis}
        assert _aliases(_client(), spec.model_name)["champion"] == "1"
        s3 = boto3.client("s3", endpoint_url=moto_server)
        keys = [
            o["Key"]
            for p in s3.get_paginator("list_objects_v2").paginate(Bucket="mlops-it")
            for o in p.get("Contents", [])
        ]
        assert any(k.startswith("store/staging/churn/") for k in keys)
        assert any(k.startswith("store/features/churn/part-") for k in keys)
        assert any(k.startswith("store/reports/validation/") and k.endswith(".html") for k in keys)
        assert any(k.startswith("mlflow/") and k.endswith("model.skops") for k in keys), "model artifacts in S3"
        assert not (home / "store").exists(), "nothing may land on local disk in s3 mode"
        assert os.environ["MLOPS_STORE_URI"].startswith("s3://")
