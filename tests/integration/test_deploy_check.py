"""The post-deployment check judges the model, not the machine: on a real scoring service with
both cores kept busy, a version as fast as the current one passes, and a version that really is
slower (a model that sleeps 0.5 s per call) is rolled back to the one it replaced."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.serving, pytest.mark.integration]


@pytest.fixture(scope="module")
def home(lifecycle, tmp_path_factory) -> dict:
    """A private copy of the lifecycle home, and a spec whose check sends 120 requests per version."""
    import yaml

    src = Path(lifecycle["home"])
    dst = tmp_path_factory.mktemp("deploy_check") / "home"
    shutil.copytree(src, dst)
    env = {k: v.replace(str(src), str(dst)) for k, v in lifecycle["env"].items()}
    raw = yaml.safe_load(Path(lifecycle["spec_path"]).read_text())
    raw["deployment"]["load_test"] = {"requests": 120, "concurrency": 4}
    assert not raw["deployment"].get("latency_budget_ms"), "the check must not rely on an absolute budget"
    name = lifecycle["spec_name"]
    (dst / "specs" / f"{name}.yaml").write_text(yaml.safe_dump(raw))  # the copy's installed spec
    env["MLOPS_DATASET"] = name
    return {"env": env, "spec_name": name, "spec": lifecycle["spec"], "run_id": lifecycle["register"].run_id}


@pytest.fixture
def env(home, monkeypatch) -> dict:
    for k, v in home["env"].items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("MLOPS_SERVE_URL", raising=False)
    # the slow model is a class of ours, outside the platform's trusted types: the operator's
    # extension (model_io) lets the services the check starts load it
    monkeypatch.setenv("MLOPS_TRUSTED_TYPES_EXTRA", "tests.support.slow_model.SlowModel")
    return home


@pytest.fixture
def client(env):
    from include.mlops.config import get_settings
    from include.mlops.registry import setup_mlflow

    return setup_mlflow(get_settings())


def _ready(client, name: str, version: str) -> str:
    import time

    for _ in range(100):
        if client.get_model_version(name, version).status == "READY":
            return str(version)
        time.sleep(0.2)
    raise AssertionError(f"v{version} never became READY")


def same_model_version(client, name: str) -> str:
    """A new version of the champion's own model: exactly as fast."""
    from include.mlops.constants import CHAMPION
    from include.mlops.registry import alias_version

    src = client.get_model_version(name, alias_version(client, name, CHAMPION))
    mv = client.create_model_version(name, src.source, run_id=src.run_id, tags={"gate": "passed"})
    return _ready(client, name, mv.version)


def slow_model_version(client, name: str, delay: float = 0.5) -> tuple[str, str]:
    """A new version whose model sleeps `delay` s per call before answering as the champion does."""
    import mlflow
    import skops.io
    from mlflow.models import get_model_info

    from include.mlops.constants import CHAMPION
    from include.mlops.registry import alias_version
    from tests.support.slow_model import SlowModel

    champion = alias_version(client, name, CHAMPION)
    uri = f"models:/{name}/{champion}"
    slow = SlowModel(mlflow.sklearn.load_model(uri), delay=delay)
    info = get_model_info(uri)
    src = client.get_model_version(name, champion)
    experiment = client.get_run(src.run_id).info.experiment_id
    with mlflow.start_run(experiment_id=experiment, run_name="slow-model") as run:
        logged = mlflow.sklearn.log_model(
            slow,
            name="model",
            signature=info.signature,
            pip_requirements=["scikit-learn"],
            pyfunc_predict_fn="predict_proba",
            skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(slow)),
        )
    mv = client.create_model_version(name, logged.model_uri, run_id=run.info.run_id, tags={"gate": "passed"})
    return _ready(client, name, mv.version), run.info.run_id


def _store():
    from include.mlops.storage import get_store

    return get_store()


PASSED = {"passed": True, "reasons": [], "metrics": {"roc_auc": 0.9}}


def test_an_equally_fast_version_passes_on_a_busy_machine(env, client, busy_cores, monkeypatch):
    """The running service (as in the demo) holds both versions; the check compares them there."""
    from include.mlops.constants import CHAMPION
    from include.mlops.delivery.checks import sample_inputs
    from include.mlops.delivery.request import DeployRequest
    from include.mlops.delivery.rollback import rollback
    from include.mlops.delivery.rollout import rollout
    from include.mlops.delivery.service import start_service
    from include.mlops.registry import alias_version

    name = env["spec"].model_name
    before = alias_version(client, name, CHAMPION)
    new = same_model_version(client, name)
    service = start_service(env["env"])
    try:
        monkeypatch.setenv("MLOPS_SERVE_URL", service.url)
        monkeypatch.setenv("MLOPS_ADMIN_TOKEN", service.token)
        reg = {"model": name, "version": new, "created": False, "run_id": env["run_id"]}
        out = rollout(
            DeployRequest.of(reg, PASSED, "check-same", "test", strategy="direct", spec_name=env["spec_name"])
        )
        assert out.promoted and out.checked and out.champion == new, out
        load = out.check["load"]
        assert load["interleaved"] and load["arms"]["current"]["version"] == before
        assert load["arms"]["new"]["requests"] == load["arms"]["current"]["requests"] == 120
        assert load["variants"] == {"pinned": 120}  # every counted request was answered by the pinned version
        judged = load["judged"]
        assert judged["baseline"] == f"v{before}" and judged["latency_ratio"] <= judged["max_latency_ratio"]
        assert f"ratio p50 {judged['ratios']['p50']}, p95 {judged['ratios']['p95']}" in out.message
        assert httpx.get(f"{service.url}/ready", timeout=30).json()["champion"]["version"] == new
        # pinning a version is for the check only: admin token, and only versions in memory
        record = {"records": [sample_inputs(env["spec"], _store())[0][0]]}
        pin = {"X-MLOps-Model-Version": before}
        assert httpx.post(f"{service.url}/predict", json=record, headers=pin, timeout=60).status_code == 403
        auth = {**pin, **service.headers()}
        answer = httpx.post(f"{service.url}/predict", json=record, headers=auth, timeout=60).json()["predictions"][0]
        assert (answer["model_version"], answer["variant"]) == (before, "pinned")
        missing = {"X-MLOps-Model-Version": "999", **service.headers()}
        assert httpx.post(f"{service.url}/predict", json=record, headers=missing, timeout=60).status_code == 409
    finally:
        service.close()
        service.cleanup()
        rollback(before, "restore", "test", spec_name=env["spec_name"])


def test_a_really_slower_version_is_rolled_back_on_a_busy_machine(env, client, busy_cores):
    """No service runs: the check starts one, which serves the current champion before the switch."""
    from include.mlops.constants import CHAMPION
    from include.mlops.delivery.request import DeployRequest
    from include.mlops.delivery.rollout import DeploymentCheckFailed, rollout
    from include.mlops.ledger import read_ledger
    from include.mlops.registry import alias_version
    from include.mlops.storage import get_store

    name = env["spec"].model_name
    before = alias_version(client, name, CHAMPION)
    slow, run_id = slow_model_version(client, name)
    reg = {"model": name, "version": slow, "created": False, "run_id": run_id}
    with pytest.raises(DeploymentCheckFailed) as failed:
        rollout(DeployRequest.of(reg, PASSED, "check-slow", "test", strategy="direct", spec_name=env["spec_name"]))
    msg = str(failed.value)
    print(msg)  # the verdict with its figures, shown with `pytest -rP`
    assert f"v{slow} failed its post-deployment check" in msg and "x the current version's" in msg, msg
    assert f"champion rolled back to v{before}" in msg
    assert alias_version(client, name, CHAMPION) == before
    entries = [e for e in read_ledger(get_store(), name) if e["run_id"] == "check-slow"]
    assert [e["action"] for e in entries] == ["promote", "rollback_after_failed_check"]
    report = client.get_run(run_id).data.metrics
    assert report["deploy_check_passed"] == 0.0 and report["deploy_latency_ratio"] > 3.0
