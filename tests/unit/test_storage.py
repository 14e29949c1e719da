"""The object store on both backends: a directory (`file://`) and a real S3 API (moto's server
on loopback). Every public method runs against each; the S3 side also from threads, inside a
running event loop, in a forked child, and after another process has written."""

import asyncio
import multiprocessing
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

from include.mlops.storage import ObjectStore, StoreError, UnsafeKeyError, ensure_bucket

ROOT = Path(__file__).resolve().parents[2]
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture
def aws_env(monkeypatch):
    for k, v in AWS.items():
        monkeypatch.setenv(k, v)


@pytest.fixture(params=["file", "s3"])
def store(request, tmp_path) -> ObjectStore:
    """A fresh store on each backend (a new directory, or a new bucket on the moto server)."""
    if request.param == "file":
        s = ObjectStore(f"file://{tmp_path}/root")
    else:
        request.getfixturevalue("aws_env")
        bucket = f"unit-{os.urandom(4).hex()}"
        s = ObjectStore(f"s3://{bucket}/prefix", endpoint_url=request.getfixturevalue("moto_server"))
    ensure_bucket(s)
    ensure_bucket(s)  # idempotent: a second call finds the root and leaves it
    return s


def test_objects_and_tables_round_trip(store):
    df = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    uri = store.put_parquet("staging/t/dt=2026-10-01/part.parquet", df)
    assert uri == store.uri("staging/t/dt=2026-10-01/part.parquet")
    assert store.key_of(uri) == "staging/t/dt=2026-10-01/part.parquet"
    assert store.get_parquet("staging/t/dt=2026-10-01/part.parquet").equals(df)
    assert list(store.get_parquet("staging/t/dt=2026-10-01/part.parquet", columns=["b"]).columns) == ["b"]
    store.put_parquet("staging/t/dt=2026-10-01/part.parquet", df.head(1))  # overwrite, never append
    assert len(store.get_parquet("staging/t/dt=2026-10-01/part.parquet")) == 1
    assert store.put_json("reports/r.json", {"ok": True}) == store.uri("reports/r.json")
    assert store.get_json("reports/r.json") == {"ok": True}
    store.put_text("notes/a.txt", "héllo")
    assert store.get_text("notes/a.txt") == "héllo" and store.get_bytes("notes/a.txt") == "héllo".encode()
    store.put_bytes("/notes/b.bin", b"\x00\x01")  # leading slashes are dropped
    assert store.get_bytes("notes/b.bin") == b"\x00\x01"


def test_exists_is_about_objects_not_prefixes(store):
    store.put_json("reports/r.json", {})
    assert store.exists("reports/r.json")
    assert not store.exists("reports/r.jso") and not store.exists("reports/r.json.x")
    assert not store.exists("reports/") and not store.exists("reports")  # a prefix is not an object
    assert not store.exists("reports/r.json/below")


def test_list_copy_delete(store):
    df = pd.DataFrame({"a": [1, 2]})
    for day in ("01", "02"):
        store.put_parquet(f"staging/t/dt=2026-10-{day}/part.parquet", df)
    store.put_bytes("staging/t/.hidden", b"x")  # dot files are never listed
    store.put_bytes("staging/tx/other.parquet", b"x")  # a prefix names a directory, not part of a name
    assert store.list("staging/t/") == ["staging/t/dt=2026-10-01/part.parquet", "staging/t/dt=2026-10-02/part.parquet"]
    assert store.list("staging/t") == store.list("staging/t/")
    assert store.list("staging/t/dt=2026-10-01/part.parquet") == ["staging/t/dt=2026-10-01/part.parquet"]
    assert store.list("nothing/here/") == []
    assert len(store.read_parquet_prefix("staging/t/")) == 4
    assert store.read_parquet_prefix("nothing/").empty
    assert store.copy("staging/t/dt=2026-10-01/part.parquet", "quarantine/p.parquet") == store.uri(
        "quarantine/p.parquet"
    )
    assert store.get_parquet("quarantine/p.parquet").equals(df)
    assert store.delete_prefix("staging/t/dt=2026-10-01/") == 1
    assert store.list("staging/t/") == ["staging/t/dt=2026-10-02/part.parquet"]
    assert store.delete_prefix("staging/t/dt=2026-10-02/part.parquet") == 1  # one object by its key
    assert store.delete_prefix("staging/t/") == 0 and store.delete_prefix("never/written/") == 0
    assert store.list("staging/tx/") == ["staging/tx/other.parquet"]
    with pytest.raises(ValueError, match="not the whole store"):
        store.delete_prefix("/")


def test_errors_name_the_key_and_the_store(store):
    with pytest.raises(FileNotFoundError) as err:
        store.get_bytes("missing/key")
    assert "missing/key" in str(err.value) and store.root in str(err.value)
    with pytest.raises(FileNotFoundError, match="missing/src"):
        store.copy("missing/src", "dst/x")
    gone = ObjectStore(f"{store.root}-gone", store.endpoint_url)  # a root that was never created
    with pytest.raises(FileNotFoundError, match="gone"):
        gone.get_bytes("a/b")


def test_local_path_only_for_a_directory_store(store):
    if store.scheme == "file":
        path = Path(store.local_path("staging/t/"))
        assert path == Path(store.root.removeprefix("file://")) / "staging" / "t"
    else:
        with pytest.raises(ValueError, match="not a local store"):
            store.local_path("staging/t/")


def test_file_writes_are_atomic_and_leave_no_temp_files(tmp_path):
    """A reader racing a writer only ever sees a whole version of the object."""
    store = ObjectStore(f"file://{tmp_path}/root")
    versions = [b"a" * 2_000_000, b"b" * 3_000_000]
    store.put_bytes("big/obj.bin", versions[0])
    seen: list[bytes] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.append(store.get_bytes("big/obj.bin"))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(60):
            store.put_bytes("big/obj.bin", versions[i % 2])
    finally:
        stop.set()
        reader.join(timeout=60)
    assert seen and all(s in versions for s in seen)
    assert sorted(p.name for p in (tmp_path / "root" / "big").iterdir()) == ["obj.bin"]


def test_an_unknown_scheme_is_refused_naming_the_setting(tmp_path):
    with pytest.raises(ValueError, match="MLOPS_STORE_URI"):
        ObjectStore("gs://bucket/x").get_bytes("a")


# -- S3 only -----------------------------------------------------------------------------------
def test_s3_objects_land_under_the_root_prefix(moto_server, aws_env):
    import boto3

    store = ObjectStore("s3://unit-bucket/prefix", endpoint_url=moto_server)
    ensure_bucket(store)
    store.put_json("reports/r.json", {"ok": True})
    listed = boto3.client("s3", endpoint_url=moto_server).list_objects_v2(Bucket="unit-bucket")["Contents"]
    assert "prefix/reports/r.json" in [o["Key"] for o in listed]


def test_s3_endpoint_and_credentials_come_from_settings_and_aws_variables(moto_server, monkeypatch, tmp_path):
    from include.mlops.storage import get_store

    for k, v in AWS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("MLOPS_STORE_URI", "s3://settings-bucket/store")
    monkeypatch.setenv("MLOPS_S3_ENDPOINT_URL", moto_server)
    store = get_store()
    assert store.endpoint_url == moto_server
    ensure_bucket(store)
    store.put_text("a/b.txt", "ok")
    assert store.get_text("a/b.txt") == "ok"
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # no credentials anywhere: refused
        monkeypatch.delenv(k)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(
        StoreError, match=r"could not read 'a/b\.txt' in the store s3://settings-bucket/store.*redential"
    ):
        store.get_text("a/b.txt")


def test_s3_listing_sees_what_another_process_just_wrote_and_deleted(moto_server, aws_env):
    store = ObjectStore(f"s3://listing-{os.urandom(4).hex()}/store", endpoint_url=moto_server)
    ensure_bucket(store)
    store.put_bytes("feed/a.bin", b"a")
    assert store.list("feed/") == ["feed/a.bin"]

    prog = (  # another process: runs each line it is sent, answers "ok"
        f"import sys; from include.mlops.storage import ObjectStore; s = ObjectStore({store.root!r}, {moto_server!r})\n"
        "for line in sys.stdin:\n    exec(line); print('ok', flush=True)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(
        [sys.executable, "-c", prog], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as other:

        def run(code: str) -> None:
            other.stdin.write(code + "\n")
            other.stdin.flush()
            assert other.stdout.readline().strip() == "ok", f"the other process failed on {code}"

        try:
            run("s.put_bytes('feed/b.bin', b'b')")
            assert store.list("feed/") == ["feed/a.bin", "feed/b.bin"] and store.exists("feed/b.bin")
            run("s.delete_prefix('feed/a.bin')")
            assert store.list("feed/") == ["feed/b.bin"] and not store.exists("feed/a.bin")
        finally:
            other.stdin.close()
            other.wait(timeout=60)


def test_s3_store_works_from_threads_and_inside_a_running_event_loop(moto_server, aws_env):
    """The service calls the store from its worker threads and from async handlers."""
    store = ObjectStore(f"s3://threads-{os.urandom(4).hex()}/store", endpoint_url=moto_server)
    ensure_bucket(store)

    def round_trip(i: int) -> bytes:
        store.put_bytes(f"t/{i}.bin", str(i).encode())
        return store.get_bytes(f"t/{i}.bin")

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(round_trip, range(40))) == [str(i).encode() for i in range(40)]
    assert len(store.list("t/")) == 40

    async def handler() -> bytes:
        store.put_bytes("t/async.bin", b"async")
        return store.get_bytes("t/async.bin")

    assert asyncio.run(handler()) == b"async"


def _child(store: ObjectStore, queue) -> None:
    try:
        store.put_bytes("fork/child.bin", b"child")
        queue.put((store.get_bytes("fork/parent.bin"), store.list("fork/")))
    except BaseException as exc:  # the parent reports it
        queue.put(exc)


def test_s3_store_works_in_a_forked_child(moto_server, aws_env):
    """Celery and Airflow fork their workers after the parent may have used the store."""
    store = ObjectStore(f"s3://fork-{os.urandom(4).hex()}/store", endpoint_url=moto_server)
    ensure_bucket(store)
    store.put_bytes("fork/parent.bin", b"parent")  # the parent's client and event loop exist now
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(store, queue))
    proc.start()
    try:
        got = queue.get(timeout=120)
    finally:
        proc.join(timeout=30)
        if proc.is_alive():
            proc.kill()
    assert not isinstance(got, BaseException), got
    assert got == (b"parent", ["fork/child.bin", "fork/parent.bin"])
    assert store.get_bytes("fork/child.bin") == b"child"  # and the parent's client still works


# -- keys ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["../../elsewhere/x", "staging/../../x/y.parquet", "a/..", "a\\..\\b", "a\x00b"])
def test_keys_never_leave_the_store_root(tmp_path, key):
    root = tmp_path / "store"
    store = ObjectStore(f"file://{root}")
    ensure_bucket(store)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "keep.txt").write_text("kept")
    s3 = ObjectStore("s3://bucket/prefix", endpoint_url="http://127.0.0.1:9")  # refused before any request
    calls = [("put_bytes", key, b"x"), ("get_bytes", key), ("delete_prefix", key), ("list", key), ("exists", key)]
    for s in (store, s3):
        for method, *args in [*calls, ("copy", "ok", key)]:
            with pytest.raises(UnsafeKeyError, match="would leave the store root"):
                getattr(s, method)(*args)
    assert (tmp_path / "elsewhere" / "keep.txt").read_text() == "kept"
    with pytest.raises(UnsafeKeyError):
        s3._bucket_key(key)
