"""Hostile artifacts and a hanging registry, against the real scoring service.

A copy of the session's lifecycle home is served by a real `mlflow server`, reached through the
fault proxy (tests/support/fault_proxy.py); the scoring service reads the registry through the
proxy. A champion whose artifact can run code (cloudpickle with a `__reduce__` that runs a shell
command) or holds a type outside the allowlist is refused, by the service and by evaluate's
loader, the marker the command would write never appears, and the last good version keeps
answering. When the registry stops answering, /ready says `registry: degraded` (still 200) and
/predict keeps answering.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from include.mlops.delivery.service import free_port
from tests.support.fault_proxy import FaultProxy, wait_http

pytestmark = [pytest.mark.serving, pytest.mark.integration]

REGISTRY_TIMEOUT = 2  # the service's bound on one registry read (MLOPS_SERVE_REGISTRY_TIMEOUT)


class Explodes:
    """Unpickling this runs a shell command that writes the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"echo pwned > {self.marker}",))


class NotAllowed:
    """A classifier-shaped class the platform's pipelines never contain."""

    def __init__(self) -> None:
        self.classes_ = [0, 1]

    def predict(self, X):
        return [0] * len(X)


def wait_for(what: str, check, deadline_s: float = 120.0, every: float = 0.3):
    """`check()` until it returns something truthy, with a deadline; the last value on failure."""
    end = time.monotonic() + deadline_s
    last = None
    while time.monotonic() < end:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"{what}: not within {deadline_s:.0f}s (last: {last})")


# -- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def home(lifecycle, tmp_path_factory) -> dict:
    src = Path(lifecycle["home"])
    dst = tmp_path_factory.mktemp("hostile") / "home"
    shutil.copytree(src, dst)
    env = {k: v.replace(str(src), str(dst)) for k, v in lifecycle["env"].items()}
    spec = lifecycle["spec"]
    assert (dst / "specs" / f"{spec.name}.yaml").is_file()  # the session's small spec, installed by lifecycle
    env["MLOPS_DATASET"] = spec.name
    return {"path": dst, "env": env, "spec": lifecycle["spec"], "v1": str(lifecycle["register"].version)}


@pytest.fixture(scope="module")
def registry(home):
    """A real MLflow tracking server on the copy's database (one worker)."""
    port = free_port()
    log = open(home["path"] / "mlflow-server.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--backend-store-uri",
            home["env"]["MLFLOW_TRACKING_URI"],
            "--default-artifact-root",
            f"file://{home['path'] / 'mlartifacts'}",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        env={**os.environ, **home["env"]},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its workers and job runners form one group, stopped together
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", 180, "mlflow server", proc)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()


@pytest.fixture(scope="module")
def proxy(registry):
    with FaultProxy(registry, upstream_timeout=60) as p:
        yield p


@pytest.fixture(scope="module")
def client(registry):
    from mlflow import MlflowClient

    return MlflowClient(registry, registry)


@pytest.fixture(scope="module")
def experiment(client, home) -> str:
    """Where this module logs its hostile models: under the copy, not the shared home."""
    return client.create_experiment("hostile-artifacts", artifact_location=f"file://{home['path'] / 'hostile'}")


@pytest.fixture(scope="module")
def service(home, proxy):
    from include.mlops.delivery.service import start_service

    env = {
        **home["env"],
        "MLFLOW_TRACKING_URI": proxy.url,
        "MLOPS_SERVE_POLL_SECONDS": "1",
        "MLOPS_SERVE_REGISTRY_TIMEOUT": str(REGISTRY_TIMEOUT),
        "MLOPS_SERVE_PREDICTION_LOG": "false",
    }
    h = start_service(env, timeout=240)
    yield h
    h.close()
    h.cleanup()


@pytest.fixture(scope="module")
def records(home) -> list[dict]:
    from include.mlops.storage import ObjectStore

    spec = home["spec"]
    store = ObjectStore(home["env"]["MLOPS_STORE_URI"])
    key = sorted(k for k in store.list(f"staging/{spec.name}/events/") if k.endswith(".parquet"))[-1]
    raw = store.get_parquet(key).head(5)
    return json.loads(raw[spec.feature_names].to_json(orient="records"))


@pytest.fixture
def champion_restored(client, home, service):
    """The test moves `champion`; afterwards v1 serves again."""
    name = home["spec"].model_name
    yield name
    client.set_registered_model_alias(name, "champion", home["v1"])
    status = reload(service)
    assert status["champion"]["version"] == home["v1"], status


def reload(service) -> dict:
    r = httpx.post(f"{service.url}/admin/reload", headers=service.headers(), timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def predict(service, records) -> httpx.Response:
    return httpx.post(f"{service.url}/predict", json={"records": records}, timeout=60)


def register(client, name: str, experiment: str, local_model: Path) -> str:
    """A version of `name` whose artifact is the MLflow model directory `local_model`, as is."""
    import mlflow

    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.log_artifacts(str(local_model), "model")
    source = f"{client.get_run(run.info.run_id).info.artifact_uri}/model"
    mv = client.create_model_version(name, source, run_id=run.info.run_id, tags={"gate": "passed"})
    wait_for(f"v{mv.version} READY", lambda: client.get_model_version(name, mv.version).status == "READY", 60)
    return str(mv.version)


@pytest.fixture
def tracking(registry, monkeypatch):
    """In-process MLflow calls (evaluate's loader, logging) go to the server directly."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry)
    mlflow.set_tracking_uri(registry)
    mlflow.set_registry_uri(registry)
    return registry


# -- tests ----------------------------------------------------------------------------------------
def test_a_cloudpickle_champion_that_runs_code_is_refused_and_never_runs(
    tmp_path, client, experiment, tracking, service, records, champion_restored, home
):
    import cloudpickle
    import mlflow.sklearn
    from sklearn.dummy import DummyClassifier

    from include.mlops.model_io import UnsafeModelError
    from include.mlops.training.tracking import load_sklearn

    name = champion_restored
    marker = tmp_path / "marker"
    local = tmp_path / "model"
    # a cloudpickle-format MLflow model, then its pickle swapped for one that runs a command
    mlflow.sklearn.save_model(
        DummyClassifier().fit([[0], [1]], [0, 1]),
        str(local),
        serialization_format="cloudpickle",
        pip_requirements=["scikit-learn"],
    )
    (local / "model.pkl").write_bytes(cloudpickle.dumps(Explodes(marker)))
    version = register(client, name, experiment, local)
    client.set_registered_model_alias(name, "champion", version)

    status = reload(service)
    assert status["champion"]["version"] == home["v1"], status  # the last good model serves
    assert "'cloudpickle'" in status["refused"][version] and "UnsafeModelError" in status["refused"][version]
    assert f"v{version}" in status["pending"]["champion"], status["pending"]
    r = predict(service, records)
    assert r.status_code == 200, r.text
    assert {p["model_version"] for p in r.json()["predictions"]} == {home["v1"]}
    assert f"REFUSED {name} v{version}" in Path(service.log_path).read_text()

    with pytest.raises(UnsafeModelError, match=rf"{name} v{version} .*serialized as 'cloudpickle'"):
        load_sklearn(f"models:/{name}@champion")  # what evaluate loads the champion with
    assert not marker.exists()


def test_a_skops_champion_with_a_type_outside_the_allowlist_is_refused(
    tmp_path, client, experiment, tracking, service, records, champion_restored, home
):
    import mlflow.sklearn
    import skops.io

    name = champion_restored
    obj = NotAllowed()
    local = tmp_path / "model"
    mlflow.sklearn.save_model(  # the artifact trusts its own class: that list is not read
        obj,
        str(local),
        skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(obj)),
        pip_requirements=["scikit-learn"],
    )
    version = register(client, name, experiment, local)
    client.set_registered_model_alias(name, "champion", version)

    status = reload(service)
    assert status["champion"]["version"] == home["v1"], status
    refused = status["refused"][version]
    assert "outside the platform's allowlist" in refused and f"{NotAllowed.__module__}.NotAllowed" in refused
    r = predict(service, records)
    assert r.status_code == 200 and {p["model_version"] for p in r.json()["predictions"]} == {home["v1"]}


def test_a_hanging_registry_is_reported_and_predict_keeps_answering(service, proxy, records, home):
    def ready() -> dict:
        r = httpx.get(f"{service.url}/ready", timeout=30)
        return {"code": r.status_code, **r.json()}

    wait_for("a good registry read first", lambda: ready()["registry"]["status"] == "ok")
    proxy.add(hang=True)  # every registry request is accepted and never answered
    try:
        body = wait_for("/ready to say degraded", lambda: (b := ready())["registry"]["status"] == "degraded" and b)
        assert body["code"] == 200 and body["degraded"] is True and body["status"] == "ready", body
        assert "no answer from the registry" in body["registry"]["error"], body["registry"]
        assert body["registry"]["since"] and body["registry"]["last_ok"], body["registry"]
        health = httpx.get(f"{service.url}/health", timeout=30).json()
        assert health["registry"]["status"] == "degraded", health
        r = predict(service, records)
        assert r.status_code == 200, r.text
        assert {p["model_version"] for p in r.json()["predictions"]} == {home["v1"]}
        assert any(rec.action == "hung" for rec in proxy.records())  # the service did meet the hang
    finally:
        proxy.clear()
    body = wait_for("/ready to say ok again", lambda: (b := ready())["registry"]["status"] == "ok" and b, 180)
    assert body["degraded"] is False and body["champion"]["version"] == home["v1"]
