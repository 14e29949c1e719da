"""S3 faults: moto's server behind the fault proxy (tests/support/fault_proxy.py), the store
pointed at the proxy; `extract` meets 500s on GETs of the landing zone.

Each test stages one demo day cleanly first (the reference bytes), then runs `extract` with the
fault, then the retry without it. The end state asserted: the task failed with a message naming
what it could not read, staging holds either the complete day or nothing of it (never half of
it), and the retry stages exactly the reference bytes.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from typing import Any

import pytest

from tests.conftest import DEMO_START, day_interval, s3_env, small_spec, use_home
from tests.support.fault_proxy import S3_ERROR, FaultProxy

pytestmark = pytest.mark.integration

SPEC = "churn"
CLIENT_ENV = {"AWS_MAX_ATTEMPTS": "2", "AWS_RETRY_MODE": "standard"}


@pytest.fixture(scope="module")
def s3_proxy(moto_server):
    with FaultProxy(moto_server) as proxy:
        yield proxy


@pytest.fixture
def s3_home(s3_proxy, tmp_path, monkeypatch) -> dict[str, Any]:
    """A home whose store is a fresh bucket behind the proxy, with 4 demo days landed (day 4
    has the labels of day 1 and its own events)."""
    from include.mlops.data.generator import write_days
    from include.mlops.spec import load_spec
    from include.mlops.storage import ensure_bucket, get_store

    bucket = f"faults-{secrets.token_hex(4)}"
    use_home(monkeypatch, tmp_path, **s3_env(s3_proxy.url, bucket), **CLIENT_ENV)
    (tmp_path / "specs").mkdir()
    small_spec(tmp_path / "specs", SPEC)
    spec = load_spec(SPEC)
    store = get_store()
    ensure_bucket(store)
    write_days(store, spec, DEMO_START, 4, rows=200)
    s3_proxy.clear()
    s3_proxy.reset_records()
    yield {"bucket": bucket, "spec": spec, "store": store, "proxy": s3_proxy, "day": DEMO_START.replace(day=4)}
    s3_proxy.clear()


def _staging(store, spec, day) -> dict[str, str]:
    """The day's staged objects: key -> sha256 of the bytes."""
    from include.mlops import layout

    keys = store.list(layout.staging_events_prefix(spec, day)) + store.list(layout.staging_labels_prefix(spec, day))
    return {k: hashlib.sha256(store.get_bytes(k)).hexdigest() for k in keys}


def _landing_get(h: dict[str, Any], what: str) -> str:
    """A regex for GETs of the day's landed objects (`events` or `labels`), not of listings."""
    from include.mlops import layout

    spec, bucket, day = h["spec"], h["bucket"], h["day"]
    prefix = layout.events_landing_prefix(spec, day) if what == "events" else layout.labels_landing_prefix(spec, day)
    # botocore percent-encodes "=" in object keys (dt=... is dt%3D... on the wire)
    return rf"^/{bucket}/store/" + re.escape(prefix).replace("=", "(?:=|%3D)") + "[^?]+$"


def _fault_then_retry(h: dict[str, Any], what: str) -> tuple[BaseException, dict[str, str], dict[str, str]]:
    """Stage the day cleanly (reference), extract with 500s on `what`'s landed objects, then
    retry; returns (the error, staging right after the failure, the reference)."""
    from include.mlops import pipeline as P

    iv = day_interval(h["day"])
    P.extract(iv, SPEC)
    reference = _staging(h["store"], h["spec"], h["day"])
    assert any("/labels/" in k for k in reference) and any("/events/" in k for k in reference), reference

    rule = h["proxy"].add(
        method="GET", path=_landing_get(h, what), status=500, body=S3_ERROR, content_type="application/xml"
    )
    with pytest.raises(Exception) as err:
        P.extract(iv, SPEC)
    assert rule.applied >= 1, "the fault never met a request"
    h["proxy"].clear()
    after_failure = _staging(h["store"], h["spec"], h["day"])

    out = P.extract(iv, SPEC)
    assert out.rows > 0
    assert _staging(h["store"], h["spec"], h["day"]) == reference, "the retry stages the same bytes"
    return err.value, after_failure, reference


def _message(exc: BaseException) -> str:
    parts = []
    while exc is not None:
        parts.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


def test_landing_events_unreadable_fails_extract_naming_the_key_and_the_retry_is_identical(s3_home):
    from include.mlops import layout

    err, after_failure, reference = _fault_then_retry(s3_home, "events")
    key = layout.events_landing_prefix(s3_home["spec"], s3_home["day"])
    assert after_failure in ({}, reference), f"half a day staged: {sorted(after_failure)}"
    assert key in _message(err), _message(err)


def test_landing_labels_unreadable_fail_extract_without_half_a_day_in_staging(s3_home):
    from include.mlops import layout

    err, after_failure, reference = _fault_then_retry(s3_home, "labels")
    assert after_failure in ({}, reference), f"half a day staged: {sorted(after_failure)}"
    key = layout.labels_landing_prefix(s3_home["spec"], s3_home["day"])
    assert key in _message(err), _message(err)


def test_slow_s3_only_slows_extract_down(s3_home):
    from include.mlops import pipeline as P

    iv = day_interval(s3_home["day"])
    P.extract(iv, SPEC)
    reference = _staging(s3_home["store"], s3_home["spec"], s3_home["day"])
    rule = s3_home["proxy"].add(path="", delay=0.2)
    P.extract(iv, SPEC)
    assert rule.applied >= 1
    assert s3_home["proxy"].failed() == []
    assert _staging(s3_home["store"], s3_home["spec"], s3_home["day"]) == reference


# -- the store's own calls, each through the proxy ---------------------------------------------
@pytest.fixture
def proxied_store(s3_proxy, monkeypatch):
    """A store on a fresh bucket behind the proxy (botocore retries once), holding `feed/a.bin`."""
    from include.mlops.storage import ObjectStore, ensure_bucket

    for k, v in {**s3_env(s3_proxy.url, "unused"), **CLIENT_ENV}.items():
        if k.startswith("AWS_"):
            monkeypatch.setenv(k, v)
    store = ObjectStore(f"s3://store-faults-{secrets.token_hex(4)}/store", endpoint_url=s3_proxy.url)
    ensure_bucket(store)
    store.put_bytes("feed/a.bin", b"a")
    s3_proxy.clear()
    s3_proxy.reset_records()
    yield store
    s3_proxy.clear()


# (what fails, the proxy rule, the call); every call names its key and the store when it fails
STORE_FAULTS = {
    "read": (dict(method="GET", path="feed/a\\.bin$"), lambda s: s.get_bytes("feed/a.bin"), "feed/a.bin"),
    "write": (dict(method="PUT", path="feed/b\\.bin$"), lambda s: s.put_bytes("feed/b.bin", b"b"), "feed/b.bin"),
    "list": (dict(method="GET", path="list-type=2"), lambda s: s.list("feed/"), "feed/"),
    "delete": (dict(method="POST", path="\\?delete"), lambda s: s.delete_prefix("feed/"), "feed/"),
    # a HEAD answer carries no body: an empty one keeps the connection usable
    "exists": (dict(method="HEAD", path="feed/a\\.bin$", body=""), lambda s: s.exists("feed/a.bin"), "feed/a.bin"),
    "copy": (dict(method="PUT", path="copied/a\\.bin$"), lambda s: s.copy("feed/a.bin", "copied/a.bin"), "feed/a.bin"),
}


@pytest.mark.parametrize("what", sorted(STORE_FAULTS))
def test_a_store_call_that_meets_500s_raises_naming_the_key_and_then_works(proxied_store, s3_proxy, what):
    """A failed call is an error naming the key and the store, never a quiet answer (`exists`
    False, an empty listing, nothing deleted); the same call succeeds once the fault is gone."""
    from include.mlops.storage import StoreError

    rule_kw, call, key = STORE_FAULTS[what]
    rule = s3_proxy.add(status=500, **{"body": S3_ERROR, "content_type": "application/xml", **rule_kw})
    with pytest.raises(StoreError) as err:
        call(proxied_store)
    assert rule.applied == 2, "botocore retried once (AWS_MAX_ATTEMPTS=2), s3fs added no retries"
    assert repr(key) in str(err.value) and proxied_store.root in str(err.value), err.value
    s3_proxy.clear()
    call(proxied_store)  # the retry of the task would succeed


def test_a_slow_s3_only_slows_the_store_down(proxied_store, s3_proxy):
    rule = s3_proxy.add(path="", delay=0.2)
    proxied_store.put_bytes("feed/b.bin", b"b")
    assert proxied_store.exists("feed/b.bin") and proxied_store.get_bytes("feed/b.bin") == b"b"
    assert proxied_store.list("feed/") == ["feed/a.bin", "feed/b.bin"]
    assert proxied_store.delete_prefix("feed/") == 2 and proxied_store.list("feed/") == []
    assert rule.applied >= 6 and s3_proxy.failed() == []
