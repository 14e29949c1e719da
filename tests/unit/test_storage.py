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


@pytest.mark.parametrize("key", ["../../elsewhere/x", "staging/../../x/y.parquet", "a/..", "a\\..\\b", "a\x00b"])
def test_keys_never_leave_the_store_root(tmp_path, key):
    from include.mlops.storage import UnsafeKeyError

    root = tmp_path / "store"
    store = ObjectStore(f"file://{root}")
    ensure_bucket(store)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "keep.txt").write_text("kept")
    for op in (
        lambda: store.put_bytes(key, b"x"),
        lambda: store.delete_prefix(key),
        lambda: store.list(key),
        lambda: store.exists(key),
    ):
        with pytest.raises(UnsafeKeyError, match="would leave the store root"):
            op()
    assert (tmp_path / "elsewhere" / "keep.txt").read_text() == "kept"
    s3 = ObjectStore("s3://bucket/prefix")
    with pytest.raises(UnsafeKeyError):
        s3._bucket_key(key)
