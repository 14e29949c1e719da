"""The scoring service over real HTTP: a uvicorn subprocess on a free loopback port, pointed at a
copy of the session's lifecycle home (real MLflow registry, Feast online store, object store).

The copy keeps the alias moves, ledger entries and prediction-log objects these tests make out
of the shared lifecycle home. One server serves the whole module; tests that change its
strategy put it back.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.support import delivery_home as H

pytestmark = [pytest.mark.serving, pytest.mark.integration]

POLL_SECONDS = H.SERVICE_POLL_SECONDS  # the service reads the registry this often
MAX_BODY = 64 * 1024
MAX_RECORDS = 500


# -- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def home(lifecycle, tmp_path_factory) -> dict:
    """A copy of the lifecycle home of this module's own (`delivery_home.copy_home`): its tests
    leave alias moves, ledger entries and log objects, and its service has its own limits, so it
    does not share the delivery tests' copy and service (tests/integration/conftest.py)."""
    return H.copy_home(lifecycle, tmp_path_factory.mktemp("serving"))


@pytest.fixture(scope="module")
def client(home):
    return H.open_client(home)


@pytest.fixture(scope="module")
def store(home):
    return H.open_store(home)


@pytest.fixture(scope="module")
def v2(home, client) -> str:
    """A second version of the champion's model (same run), to move aliases between."""
    return H.second_version(client, home)


@pytest.fixture(scope="module")
def server(home, v2):
    h = H.start_live(
        home,
        MLOPS_SERVE_MAX_BODY_BYTES=str(MAX_BODY),
        MLOPS_SERVE_MAX_RECORDS=str(MAX_RECORDS),
        MLOPS_SERVE_LOG_FLUSH_SECONDS="1",
    )
    yield h
    h.close()  # SIGTERM: uvicorn shuts down gracefully, then re-raises the signal (-15)
    assert h.proc.returncode in (0, -15), h.log_tail()
    assert "prediction log flushed" in h.log_tail(), h.log_tail()
    h.cleanup()


@pytest.fixture
def env(lifecycle_env, home, monkeypatch) -> dict:
    """This test's process environment points at the copy (for in-process library calls)."""
    for k, v in home["env"].items():
        monkeypatch.setenv(k, v)
    return home


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def samples(home, store):
    """The newest staged day: raw feature records and entity ids (all materialised online)."""
    spec = home["spec"]
    key = sorted(k for k in store.list(f"staging/{spec.name}/events/") if k.endswith(".parquet"))[-1]
    raw = store.get_parquet(key).head(60).reset_index(drop=True)
    records = json.loads(raw[[spec.entity_key, *spec.feature_names]].to_json(orient="records"))
    return {"raw": raw, "records": records, "ids": [int(i) for i in raw[spec.entity_key]]}


@pytest.fixture(scope="module")
def local_model(home, client):
    import mlflow.sklearn

    uri = home["env"]["MLFLOW_TRACKING_URI"]
    mlflow.set_registry_uri(uri)
    mlflow.set_tracking_uri(uri)
    return mlflow.sklearn.load_model(f"models:/{home['spec'].model_name}/{home['v1']}")


def admin(server, path: str, **params) -> dict:
    r = httpx.post(f"{server.url}{path}", params=params, headers=server.headers(), timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def set_strategy(server, client, home, strategy: str, share: float = 0.1) -> dict:
    from include.mlops.delivery.rollout import publish_strategy

    publish_strategy(client, home["spec"].model_name, strategy, share)
    return admin(server, "/admin/reload")


def read_log(store, spec):
    return store.read_parquet_prefix(f"predictions/{spec.name}/")


# -- scoring --------------------------------------------------------------------------------------
def test_ready_health_and_ping(http, home):
    assert http.get("/health").json() == {"status": "ok"}
    # a test before this one may have just put v1 back in the registry without telling this
    # service: it follows by its own poll
    deadline = time.monotonic() + 10 * POLL_SECONDS + 30
    while (body := http.get("/ready").json())["champion"]["version"] != home["v1"]:
        assert time.monotonic() < deadline, f"the service did not come back to v{home['v1']}: {body}"
        time.sleep(0.1)
    ready = http.get("/ready")
    assert ready.status_code == 200
    body = ready.json()
    assert body["champion"]["version"] == home["v1"] and body["strategy"] == "direct"
    assert http.get("/ping").status_code == 200


def test_predict_by_features_matches_the_model(http, home, samples, local_model):
    from include.mlops.features.build import build_features, model_features

    spec = home["spec"]
    r = http.post("/predict", json={"records": samples["records"][:10]}, headers={"X-Request-ID": "feat-1"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["request_id"] == "feat-1" and r.headers["x-request-id"] == "feat-1"
    preds = body["predictions"]
    X = build_features(samples["raw"].head(10), spec)[model_features(spec)]
    expected = local_model.predict_proba(X)[:, 1]
    for i, p in enumerate(preds):
        assert p["request_id"] == f"feat-1-{i}"
        assert p["customer_id"] == samples["ids"][i]
        assert p["model_name"] == spec.model_name and p["model_version"] == home["v1"]
        assert p["variant"] == "champion"
        assert p["score"] == pytest.approx(expected[i], abs=1e-12)
        assert p["probabilities"]["1"] == pytest.approx(expected[i], abs=1e-12)
        assert sum(p["probabilities"].values()) == pytest.approx(1.0)
        assert p["prediction"] == int(expected[i] >= 0.5)
    one = http.post("/predict", json={k: v for k, v in samples["records"][0].items() if k != "customer_id"}).json()
    assert one["predictions"][0]["customer_id"] is None
    assert one["predictions"][0]["request_id"] == one["request_id"]  # one record: the request's own id


def test_predict_by_entity_id_uses_the_online_store(http, samples):
    ids = samples["ids"][:8]
    by_id = http.post("/predict", json={"entity_ids": ids})
    assert by_id.status_code == 200, by_id.text
    by_feat = http.post("/predict", json={"records": samples["records"][:8]}).json()["predictions"]
    for a, b in zip(by_id.json()["predictions"], by_feat, strict=True):
        # the newest staged day is what was materialised last: same features, same score
        assert a["customer_id"] == b["customer_id"]
        assert a["score"] == pytest.approx(b["score"], abs=1e-12)
    single = http.post("/predict", json={"customer_id": ids[0]}).json()["predictions"]
    assert single[0]["score"] == pytest.approx(by_feat[0]["score"], abs=1e-12)


def test_mlflow_scoring_protocol_with_mlflows_own_client(server, home, samples, local_model):
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

    from include.mlops.features.build import build_features, model_features

    spec = home["spec"]
    X = build_features(samples["raw"].head(6), spec)[model_features(spec)]
    expected = local_model.predict_proba(X)
    host, port = server.url.rsplit(":", 1)
    mc = ScoringServerClient(host.replace("http://", ""), int(port))
    mc.wait_server_ready(timeout=10)
    got = mc.invoke(X).get_predictions()  # dataframe_split, as `mlflow models predict` sends it
    assert got.shape == (6, 2)
    assert got.to_numpy() == pytest.approx(expected, abs=1e-12)

    records = json.loads(X.to_json(orient="records"))
    columns = {c: [r[c] for r in records] for c in X.columns}
    for body in ({"dataframe_records": records}, {"inputs": records}, {"inputs": columns}, {"instances": records}):
        r = httpx.post(f"{server.url}/invocations", json=body)
        assert r.status_code == 200, (list(body), r.text)
        np.testing.assert_allclose(r.json()["predictions"], expected, atol=1e-12)
        assert r.headers["x-model-version"] == home["v1"] and r.headers["x-model-variant"] == "champion"
    csv = httpx.post(f"{server.url}/invocations", content=X.to_csv(index=False), headers={"Content-Type": "text/csv"})
    assert csv.status_code == 200
    np.testing.assert_allclose(csv.json()["predictions"], expected, atol=1e-9)


def _bad_cases(records, spec):
    rec = records[0]
    no_plan = {k: v for k, v in rec.items() if k != "plan"}
    return [
        ("/predict", {"records": [no_plan]}, ["body", "records", 0, "plan"]),
        (
            "/predict",
            {"records": [rec, {**rec, "monthly_charges": "a lot"}]},
            ["body", "records", 1, "monthly_charges"],
        ),
        ("/predict", {"records": [{**rec, "contract": "forever"}]}, ["body", "records", 0, "contract"]),
        ("/predict", {"records": [{**rec, "num_devices": 2.5}]}, ["body", "records", 0, "num_devices"]),
        ("/predict", {"records": [{**rec, "tenure_months": -3}]}, ["body", "records", 0, "tenure_months"]),
        ("/predict", {"entity_ids": [records[0]["customer_id"], 1]}, ["body", "records", 1, "customer_id"]),
        ("/predict", {"entity_ids": ["abc"]}, ["body", "records", 0, "customer_id"]),
        ("/predict", {"records": ["row"]}, ["body", "records", 0]),
        ("/predict", {"records": [{"unrelated": 1}]}, ["body", "records", 0]),
        ("/predict", {"records": []}, ["body"]),
        ("/predict", "just text", ["body"]),
        ("/invocations", {"dataframe_records": [no_plan]}, ["body", "dataframe_records", 0, "plan"]),
        (
            "/invocations",
            {"dataframe_split": {"columns": ["plan"], "data": [["basic", 1]]}},
            ["body", "dataframe_split", "data", 0],
        ),
        ("/invocations", {"dataframe_records": [rec], "inputs": [rec]}, ["body"]),
        ("/invocations", {"records": [rec]}, ["body"]),
    ]


def test_bad_input_is_422_with_the_field_named(http, samples, home):
    for path, body, loc in _bad_cases(samples["records"], home["spec"]):
        r = http.post(path, json=body)
        assert r.status_code == 422, (path, body, r.text)
        detail = r.json()["detail"]
        assert any(d["loc"] == loc for d in detail), (loc, detail)
    for raw in (b"{not json", b"", b"[" * 20_000 + b"]" * 20_000):  # the last one nests too deep to parse
        r = http.post("/predict", content=raw)
        assert r.status_code in (413, 422), r.text
    r = http.post("/invocations", content=b"<xml/>", headers={"Content-Type": "application/xml"})
    assert r.status_code == 415


def test_oversized_bodies_are_413(http, samples):
    big = {"records": samples["records"] * 200}
    r = http.post("/predict", json=big)
    assert r.status_code == 413
    r = http.post("/predict", content=iter([b'{"records": [', b" " * (MAX_BODY + 10), b"]}"]))  # chunked, no length
    assert r.status_code == 413
    r = http.post("/predict", json={"entity_ids": list(range(MAX_RECORDS + 1))})
    assert r.status_code == 413


def test_metrics_parse_and_name_versions_and_variants(http, home, samples):
    from prometheus_client.parser import text_string_to_metric_families

    assert http.post("/predict", json={"records": samples["records"][:1]}).status_code == 200
    assert http.post("/predict", json={"customer_id": 1}).status_code == 422  # unknown entity, found after routing
    assert http.post("/predict", json={"records": [{"customer_id": "x"}]}).status_code == 422  # refused before
    fams = {f.name: f for f in text_string_to_metric_families(http.get("/metrics").text)}
    for name in (
        "mlops_serving_requests",
        "mlops_serving_request_latency_seconds",
        "mlops_serving_errors",
        "mlops_serving_model_load_seconds",
        "mlops_serving_model_info",
        "mlops_serving_predictions",
    ):
        assert name in fams, sorted(fams)
    ok = [
        s for s in fams["mlops_serving_requests"].samples if s.name.endswith("_total") and s.labels["status"] == "200"
    ]
    assert any(s.labels["model_version"] == home["v1"] and s.labels["variant"] == "champion" for s in ok)
    assert any(s.labels["kind"] == "value_error.unknown_entity" for s in fams["mlops_serving_errors"].samples)
    failed = {
        (s.labels["model_version"], s.labels["variant"])
        for s in fams["mlops_serving_requests"].samples
        if s.name.endswith("_total") and s.labels["status"] == "422"
    }
    assert (home["v1"], "champion") in failed and ("", "") in failed  # routed: its version; refused first: none
    loads = {s.labels["model_version"]: s.value for s in fams["mlops_serving_model_load_seconds"].samples}
    assert loads[home["v1"]] > 0
    buckets = [s for s in fams["mlops_serving_request_latency_seconds"].samples if s.name.endswith("_bucket")]
    assert buckets and all("model_version" in s.labels and "variant" in s.labels for s in buckets)


# -- alias moves under load -------------------------------------------------------------------------
class Hammer:
    """Clients that send requests without pause and remember what answered when."""

    def __init__(self, url: str, records: list[dict], ids: list[int], threads: int = 2) -> None:
        self.url, self.records, self.ids = url, records, ids
        self.stop = threading.Event()
        self.results: list[tuple[float, float, int, str | None, str]] = []  # sent, received, status, version, rid
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(k,), daemon=True) for k in range(threads)]

    def _run(self, k: int) -> None:
        i = k
        with httpx.Client(base_url=self.url, timeout=30) as c:
            while not self.stop.is_set():
                rid = f"h{k}-{i}-{uuid.uuid4().hex[:6]}"
                body = (
                    {"entity_ids": [self.ids[i % len(self.ids)]]}
                    if i % 3 == 2
                    else {"records": [self.records[i % len(self.records)]]}
                )
                t0 = time.monotonic()
                try:
                    r = c.post("/predict", json=body, headers={"X-Request-ID": rid})
                    status, version = (
                        r.status_code,
                        (r.json()["predictions"][0]["model_version"] if r.status_code == 200 else None),
                    )
                except Exception:
                    status, version = -1, None
                with self.lock:
                    self.results.append((t0, time.monotonic(), status, version, rid))
                i += 2

    def __enter__(self) -> Hammer:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)


def test_promote_and_roll_back_under_load_drop_nothing(server, client, store, home, v2, samples):
    from include.mlops.constants import CHAMPION
    from include.mlops.ledger import read_ledger
    from include.mlops.moves import move_champion
    from include.mlops.registry import alias_version, end_routing

    spec, v1 = home["spec"], home["v1"]
    name = spec.model_name
    # start from v1 alone, whatever an earlier test of the module left (the order is random)
    if alias_version(client, name, CHAMPION) != v1:
        move_champion(client, store, name, v1, action="rollback", reason="test setup", run_id="setup", dag_id="test")
    end_routing(client, name)
    ready = admin(server, "/admin/reload")
    assert ready["champion"]["version"] == v1 and not ready.get("challenger"), ready
    # version -> list of [from, until] (monotonic) windows in which answering with it is correct
    windows: dict[str, list[list[float]]] = {v1: [[0.0, float("inf")]]}

    def switch(to: str, via_admin: bool) -> None:
        frm = alias_version(client, name, CHAMPION)
        t_move = time.monotonic()
        windows.setdefault(to, []).append([t_move, float("inf")])
        move_champion(
            client,
            store,
            name,
            to,
            action="promote" if to == v2 else "rollback",
            reason="test_serving switch",
            run_id="test_serving",
            dag_id="test",
        )
        if via_admin:
            assert admin(server, "/admin/reload")["champion"]["version"] == to
        else:  # the service's own poll must notice
            deadline = time.monotonic() + 10 * POLL_SECONDS + 30
            while httpx.get(f"{server.url}/ready").json()["champion"]["version"] != to:
                assert time.monotonic() < deadline, "the service did not follow the alias by polling"
                time.sleep(0.05)
        t_done = time.monotonic()
        windows[frm][-1][1] = t_done  # from here on only `to` is right
        time.sleep(0.4)  # traffic on the new champion

    with Hammer(server.url, samples["records"], samples["ids"]) as h:
        time.sleep(0.5)
        for k, to in enumerate([v2, v1, v2, v1, v2, v1]):
            switch(to, via_admin=k != 2)
        time.sleep(0.3)
    results = h.results
    assert alias_version(client, name, CHAMPION) == v1

    failed = [r for r in results if r[2] != 200]
    assert not failed, f"{len(failed)} of {len(results)} requests failed: {failed[:5]}"
    assert len(results) > 100
    wrong = []
    for sent, received, _, version, rid in results:
        if not any(a <= received and sent <= b for a, b in windows.get(version, [])):
            wrong.append((rid, version, sent, received))
    assert not wrong, f"answers from a version that was not champion then: {wrong[:5]} windows={windows}"
    assert {r[3] for r in results} == {v1, v2}
    slowest = max(r[1] - r[0] for r in results)
    assert slowest < 2.0, f"a request waited {slowest:.2f}s: it must never wait on a model load"
    actions = [e["action"] for e in read_ledger(store, name) if e["run_id"] == "test_serving"]
    assert actions.count("promote") == 3 and actions.count("rollback") == 3

    # every answered request is in the prediction log exactly once
    admin(server, "/admin/flush")
    log = read_log(store, spec)
    mine = log[log["request_id"].str.startswith("h")]
    counts = mine.groupby("request_id").size()
    assert set(counts.index) == {r[4] for r in results}
    assert counts.max() == 1
    assert {
        "request_id",
        "ts",
        spec.entity_key,
        "prediction",
        "score",
        "model_name",
        "model_version",
        "variant",
    } <= set(log.columns)
    by_rid = mine.set_index("request_id")["model_version"].to_dict()
    assert all(by_rid[rid] == version for _, _, _, version, rid in results)


# -- strategies ---------------------------------------------------------------------------------------
def test_canary_share_is_sticky_and_within_tolerance(server, client, home, v2, samples):
    from include.mlops.constants import CHALLENGER

    name = home["spec"].model_name
    client.set_registered_model_alias(name, CHALLENGER, v2)
    try:
        status = set_strategy(server, client, home, "canary", 0.3)
        assert status["strategy"] == "canary" and status["challenger"]["version"] == v2
        base = samples["records"][0]
        entities = list(range(500_000, 501_000))
        records = [{**base, "customer_id": e} for e in entities]
        seen: dict[int, str] = {}
        for i in range(0, len(records), 100):  # 100 records stay under the body limit
            for p in httpx.post(f"{server.url}/predict", json={"records": records[i : i + 100]}).json()["predictions"]:
                seen[p["customer_id"]] = p["variant"]
                assert p["model_version"] == (v2 if p["variant"] == "challenger" else home["v1"])
        share = sum(v == "challenger" for v in seen.values()) / len(seen)
        assert abs(share - 0.3) < 0.05, share
        again = httpx.post(f"{server.url}/predict", json={"records": records[:100]}).json()["predictions"]
        assert all(seen[p["customer_id"]] == p["variant"] for p in again), "canary routing is not sticky"
        anonymous = httpx.post(f"{server.url}/predict", json={"records": [base | {"customer_id": None}] * 100}).json()
        assert {p["variant"] for p in anonymous["predictions"]} == {"champion", "challenger"}  # by request id
    finally:
        set_strategy(server, client, home, "direct")


def test_shadow_scores_every_request_and_only_logs_it(server, client, store, home, v2, samples):
    from include.mlops.constants import CHALLENGER

    spec, name = home["spec"], home["spec"].model_name
    client.set_registered_model_alias(name, CHALLENGER, v2)
    try:
        status = set_strategy(server, client, home, "shadow")
        assert status["strategy"] == "shadow" and status["challenger"]["version"] == v2
        rids = []
        for i, rec in enumerate(samples["records"][:20]):
            rid = f"shadow-{i}-{uuid.uuid4().hex[:6]}"
            r = httpx.post(f"{server.url}/predict", json=rec, headers={"X-Request-ID": rid})
            p = r.json()["predictions"][0]
            assert (p["variant"], p["model_version"]) == ("champion", home["v1"])  # the shadow never answers
            rids.append(rid)
        admin(server, "/admin/flush")
        log = read_log(store, spec)
        mine = log[log["request_id"].isin(rids)]
        pairs = mine.groupby(["variant", "model_version"]).size().to_dict()
        assert pairs == {("champion", home["v1"]): 20, ("shadow", v2): 20}
        assert mine.groupby("request_id").size().eq(2).all()
    finally:
        set_strategy(server, client, home, "direct")


def test_blue_green_keeps_the_next_and_last_version_warm(server, client, store, home, v2):
    from include.mlops.constants import CHALLENGER
    from include.mlops.moves import move_champion

    name, v1 = home["spec"].model_name, home["v1"]
    client.set_registered_model_alias(name, CHALLENGER, v2)
    try:
        status = set_strategy(server, client, home, "blue_green")
        assert status["strategy"] == "blue_green" and v2 in status["standby"] and status["challenger"] is None
        from include.mlops.delivery.service import service_metric

        for to in (v2, v1):  # green goes live, then back to blue: both already in memory
            move_champion(
                client, store, name, to, action="promote", reason="blue/green test", run_id="bg", dag_id="test"
            )
            loads = service_metric(server, "mlops_serving_model_loads_total")
            assert admin(server, "/admin/reload")["champion"]["version"] == to
            assert service_metric(server, "mlops_serving_model_loads_total") == loads, (
                "a blue/green switch must not load anything"
            )
    finally:
        set_strategy(server, client, home, "direct")


# -- the deploy step and rollback ------------------------------------------------------------------
def test_rollout_checks_the_running_service_and_rolls_back_a_failed_check(env, server, client, store, v2, monkeypatch):
    import yaml

    from include.mlops.constants import CHAMPION
    from include.mlops.delivery.request import DeployRequest
    from include.mlops.delivery.rollback import rollback
    from include.mlops.delivery.rollout import DeploymentCheckFailed, rollout
    from include.mlops.ledger import read_ledger
    from include.mlops.registry import alias_version

    spec, v1 = env["spec"], env["v1"]
    name = spec.model_name
    monkeypatch.setenv("MLOPS_SERVE_URL", server.url)
    monkeypatch.setenv("MLOPS_ADMIN_TOKEN", server.token)
    reg = {"model": name, "version": v2, "created": False, "run_id": env["run_id"]}
    ev = {"passed": True, "reasons": [], "metrics": {"roc_auc": 0.9}}

    out = rollout(DeployRequest.of(reg, ev, "rollout-ok", "test", strategy="direct", spec_name=env["spec_name"]))
    assert out.promoted and out.checked and out.champion == v2 and out.service_url == server.url
    assert out.deploy_errors == 0 and out.deploy_rps > 0
    metrics = client.get_run(env["run_id"]).data.metrics
    for k in ("deploy_rps", "deploy_p50_ms", "deploy_p95_ms", "deploy_p99_ms"):
        assert metrics[k] > 0
    assert httpx.get(f"{server.url}/ready").json()["champion"]["version"] == v2

    back = rollback(None, "manual-rollback", "ml_rollback", spec_name=env["spec_name"])
    assert (back["from_version"], back["to_version"], back["changed"]) == (v2, v1, True)
    assert httpx.get(f"{server.url}/ready").json()["champion"]["version"] == v1  # told to reload

    strict = yaml.safe_load(Path(env["spec_path"]).read_text())
    strict["deployment"]["latency_budget_ms"] = {"p99": 0.001}
    strict_dir = Path(env["path"]) / "strict_specs"  # the same spec name, found first (MLOPS_SPEC_DIRS)
    strict_dir.mkdir(exist_ok=True)
    (strict_dir / f"{env['spec_name']}.yaml").write_text(yaml.safe_dump(strict))
    monkeypatch.setenv("MLOPS_SPEC_DIRS", str(strict_dir))
    with pytest.raises(DeploymentCheckFailed, match=r"p99 .* over the budget .* rolled back to v" + v1):
        rollout(DeployRequest.of(reg, ev, "rollout-slow", "test", strategy="direct", spec_name=env["spec_name"]))
    monkeypatch.delenv("MLOPS_SPEC_DIRS")
    assert alias_version(client, name, CHAMPION) == v1
    ledger = {e["run_id"]: e for e in read_ledger(store, name)}
    assert ledger["manual-rollback"]["action"] == "rollback"
    failed = [e for e in read_ledger(store, name) if e["run_id"] == "rollout-slow"]
    assert [e["action"] for e in failed] == ["promote", "rollback_after_failed_check"]
    assert failed[-1]["from_version"] == v2 and failed[-1]["to_version"] == v1


def test_shadow_rollout_watches_the_challenger_before_promoting(env, server, client, v2, monkeypatch):
    import yaml

    from include.mlops.constants import CHALLENGER
    from include.mlops.delivery.request import DeployRequest
    from include.mlops.delivery.rollback import rollback
    from include.mlops.delivery.rollout import publish_strategy, rollout
    from include.mlops.registry import alias_version

    spec, v1 = env["spec"], env["v1"]
    name = spec.model_name
    # the shadow phase on live traffic is judged at once (no soak, no minimum: nothing live here);
    # tests/integration/test_progressive_shadow.py judges it on live traffic
    quick = yaml.safe_load(Path(env["spec_path"]).read_text())
    quick["deployment"]["shadow"] = {"soak_seconds": 0, "min_requests": 0}
    quick_dir = Path(env["path"]) / "quick_shadow_specs"
    quick_dir.mkdir(exist_ok=True)
    (quick_dir / f"{env['spec_name']}.yaml").write_text(yaml.safe_dump(quick))
    monkeypatch.setenv("MLOPS_SPEC_DIRS", str(quick_dir))
    monkeypatch.setenv("MLOPS_SERVE_URL", server.url)
    monkeypatch.setenv("MLOPS_ADMIN_TOKEN", server.token)
    client.set_registered_model_alias(name, CHALLENGER, v2)
    reg = {"model": name, "version": v2, "created": False, "run_id": env["run_id"]}
    ev = {"passed": True, "reasons": [], "metrics": {"roc_auc": 0.9}}
    try:
        rejected = rollout(
            DeployRequest.of(
                reg,
                {**ev, "passed": False, "reasons": ["roc_auc 0.6 < 0.7"]},
                "rollout-shadow-rejected",
                "test",
                strategy="shadow",
                spec_name=env["spec_name"],
            )
        )
        assert not rejected.promoted and rejected.champion == v1 and "roc_auc" in rejected.message
        assert rejected.staged_check["passed"]  # a rejected challenger may still shadow: it was watched
        # ... and once watched, its rollout is over: no challenger left for the service to shadow
        assert alias_version(client, name, CHALLENGER) is None
        client.set_registered_model_alias(name, CHALLENGER, v2)  # as `register` sets it for the next run
        out = rollout(
            DeployRequest.of(reg, ev, "rollout-shadow", "test", strategy="shadow", spec_name=env["spec_name"])
        )
        staged = out.staged_check
        assert staged["passed"] and staged["load"]["shadow_scored"] >= staged["load"]["requests"]
        assert staged["load"]["warmup_requests"] == 2 * staged["load"]["concurrency"]  # uncounted, first
        assert staged["load"]["shadow_errors"] == 0 and staged["load"]["variants"] == {
            "champion": staged["load"]["requests"]
        }
        assert out.promoted and out.checked and out.champion == v2
    finally:
        rollback(v1, "restore", "test", spec_name=env["spec_name"])
        publish_strategy(client, name, "direct", 0.1)
        admin(server, "/admin/reload")


def test_the_first_champion_is_checked_on_the_running_service(lifecycle, tmp_path, monkeypatch):
    """`make up` and compose start the service before any champion exists: the first deploy
    loads its champion there and checks it, instead of starting a service of its own."""
    from mlflow import MlflowClient

    from include.mlops.constants import CHAMPION
    from include.mlops.delivery.request import DeployRequest
    from include.mlops.delivery.rollout import rollout
    from include.mlops.delivery.service import start_service, usable_service
    from include.mlops.registry import alias_version

    src = Path(lifecycle["home"])
    dst = tmp_path / "home"
    shutil.copytree(src, dst)
    env = {k: v.replace(str(src), str(dst)) for k, v in lifecycle["env"].items()}
    env["MLOPS_DATASET"] = lifecycle["spec_name"]  # installed in the copy's specs/, found by name
    uri = env.pop("MLFLOW_TRACKING_URI")  # the embedded default derives it from MLOPS_HOME
    assert uri == f"sqlite:///{dst / 'mlflow.db'}", uri
    env.pop("MLFLOW_REGISTRY_URI", None)
    for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    name, v1 = lifecycle["spec"].model_name, lifecycle["register"].version
    client = MlflowClient(uri, uri)
    client.delete_registered_model_alias(name, CHAMPION)  # as before the first ml_training run

    # started as `make serve` and the demo start it: MLOPS_HOME set, no MLflow URI in the environment
    service = start_service(env, timeout=240, until_ready=False)
    try:
        waiting = httpx.get(f"{service.url}/ready", timeout=10)
        assert waiting.status_code == 503 and waiting.json()["champion"] is None, waiting.json()
        assert usable_service(503, waiting.json(), name), waiting.json()
        monkeypatch.setenv("MLOPS_SERVE_URL", service.url)
        monkeypatch.setenv("MLOPS_ADMIN_TOKEN", service.token)
        reg = {"model": name, "version": v1, "created": False, "run_id": lifecycle["register"].run_id}
        ev = {"passed": True, "reasons": [], "metrics": {"roc_auc": 0.9}}
        out = rollout(
            DeployRequest.of(reg, ev, "first-deploy", "test", strategy="direct", spec_name=lifecycle["spec_name"])
        )
        assert out.promoted and out.checked and out.service_url == service.url
        assert out.deploy_errors == 0 and alias_version(client, name, CHAMPION) == v1
        assert httpx.get(f"{service.url}/ready", timeout=10).json()["champion"]["version"] == v1
        assert service.proc.poll() is None  # the check used it and left it running
    finally:
        service.close()
        service.cleanup()


def test_canary_rollout_starts_its_own_service_when_none_runs(env, client, store, v2, monkeypatch):
    from include.mlops.constants import CHALLENGER, CHAMPION
    from include.mlops.delivery.request import DeployRequest
    from include.mlops.delivery.rollback import rollback
    from include.mlops.delivery.rollout import publish_strategy, rollout
    from include.mlops.registry import alias_version

    spec, v1 = env["spec"], env["v1"]
    name = spec.model_name
    monkeypatch.delenv("MLOPS_SERVE_URL", raising=False)
    assert alias_version(client, name, CHAMPION) == v1
    client.set_registered_model_alias(name, CHALLENGER, v2)
    reg = {"model": name, "version": v2, "created": False, "run_id": env["run_id"]}
    ev = {"passed": True, "reasons": [], "metrics": {"roc_auc": 0.9}}
    try:
        out = rollout(
            DeployRequest.of(reg, ev, "rollout-canary", "test", strategy="canary", spec_name=env["spec_name"])
        )
        assert out.promoted and out.checked and out.strategy == "canary"
        assert out.staged_check["passed"] and out.staged_check["load"]["variants"].get("challenger", 0) > 0
        assert out.service_url.startswith("http://127.0.0.1:")
        with pytest.raises(httpx.HTTPError):  # the service it started is gone
            httpx.get(f"{out.service_url}/health", timeout=2)
        metrics = client.get_run(env["run_id"]).data.metrics
        assert "deploy_canary_p99_ms" in metrics and "deploy_p99_ms" in metrics
    finally:
        rollback(v1, "restore", "test", spec_name=env["spec_name"])
        publish_strategy(client, name, "direct", 0.1)


def test_score_batch_scores_the_staged_interval_with_the_champion(env, client, store):
    from include.mlops.constants import CHAMPION
    from include.mlops.registry import alias_version
    from include.mlops.serving.batch import score_batch

    spec = env["spec"]
    out = score_batch(env["interval"], env["spec_name"])
    day = env["interval"].days[0].isoformat()
    assert out["uri"].endswith(f"predictions/batch/{spec.name}/dt={day}/predictions.parquet")
    assert out["version"] == alias_version(client, spec.model_name, CHAMPION)
    df = store.get_parquet(store.key_of(out["uri"]))
    staged = store.get_parquet(f"staging/{spec.name}/events/dt={day}/events.parquet")
    assert out["rows"] == len(df) == len(staged)
    assert {spec.entity_key, "prediction", "score", "model_version"} <= set(df.columns)
    assert df["score"].between(0, 1).all() and set(df["prediction"]) <= {0, 1}
    again = score_batch(env["interval"], env["spec_name"])  # a re-run overwrites, never appends
    assert again["uri"] == out["uri"] and len(store.list(f"predictions/batch/{spec.name}/dt={day}/")) == 1
    assert store.get_parquet(store.key_of(again["uri"])).equals(df)
