import pandas as pd
import pytest

from include.mlops.storage import ObjectStore, ensure_bucket


def _exercise(store: ObjectStore) -> None:
    ensure_bucket(store)
    df = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    uri = store.put_parquet("staging/t/dt=2026-10-01/part.parquet", df)
    assert uri == store.uri("staging/t/dt=2026-10-01/part.parquet")
    assert store.get_parquet("staging/t/dt=2026-10-01/part.parquet").equals(df)
    store.put_parquet("staging/t/dt=2026-10-01/part.parquet", df.head(1))  # overwrite, never append
    assert len(store.get_parquet("staging/t/dt=2026-10-01/part.parquet")) == 1
    store.put_json("reports/r.json", {"ok": True})
    assert store.get_json("reports/r.json") == {"ok": True}
    assert store.exists("reports/r.json") and not store.exists("reports/r.jso")
    store.put_parquet("staging/t/dt=2026-10-02/part.parquet", df)
    assert store.list("staging/t/") == ["staging/t/dt=2026-10-01/part.parquet", "staging/t/dt=2026-10-02/part.parquet"]
    assert len(store.read_parquet_prefix("staging/t/")) == 4
    store.copy("reports/r.json", "quarantine/r.json")
    assert store.get_json("quarantine/r.json") == {"ok": True}
    assert store.key_of(store.uri("a/b")) == "a/b"
    assert store.delete_prefix("staging/t/dt=2026-10-01/") == 1
    assert store.list("staging/t/") == ["staging/t/dt=2026-10-02/part.parquet"]
    with pytest.raises(FileNotFoundError):
        store.get_bytes("missing/key")


def test_file_store(tmp_path):
    _exercise(ObjectStore(f"file://{tmp_path}/root"))


def test_s3_store_against_a_real_s3_api(moto_server, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    store = ObjectStore("s3://unit-bucket/prefix", endpoint_url=moto_server)
    _exercise(store)
    import boto3

    keys = [
        o["Key"] for o in boto3.client("s3", endpoint_url=moto_server).list_objects_v2(Bucket="unit-bucket")["Contents"]
    ]
    assert "prefix/reports/r.json" in keys
