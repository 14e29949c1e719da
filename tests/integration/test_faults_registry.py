"""Registry faults: a real `mlflow server` behind the fault proxy (tests/support/fault_proxy.py),
the pipeline's steps pointed at the proxy (MLFLOW_TRACKING_URI).

The home is a copy of the faults template (champion v1, a good v2 registered from run B); the
module adds a worse challenger: a model fitted on the same training split with its labels
shuffled, logged through the server. The spec's minimums are lowered so that only the
comparison with the champion can refuse it: if a registry error read as "no champion", it
would be promoted. The client retries once, without backoff, with a short timeout, so each
fault ends quickly; what each test asserts is the end state (champion, previous, ledger,
versions) and which requests failed.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from typing import Any

import pytest

from include.mlops.delivery.service import free_port
from include.mlops.results import TrainResult
from tests.conftest import use_home
from tests.support.fault_proxy import FaultProxy, wait_http
from tests.support.faults_home import SPEC, copy_home, rebase, template

pytestmark = pytest.mark.integration

MODEL = f"{SPEC}_model"
ALIAS = r"/registered-models/alias\b"
CLIENT_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
}


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> dict[str, Any]:
    """The copied home, its MLflow server (sqlite backend) and the proxy in front of it."""
    import yaml

    tpl = template(tmp_path_factory)
    home = copy_home(tpl, tmp_path_factory.mktemp("faults-registry"))
    spec_file = home / "specs" / f"{SPEC}.yaml"
    raw = yaml.safe_load(spec_file.read_text())
    raw["gate"]["minimums"] = {"roc_auc": 0.3}  # only the comparison with the champion refuses the worse model
    spec_file.write_text(yaml.safe_dump(raw))

    port = free_port()
    log = (home / "mlflow-server.log").open("w")
    server = subprocess.Popen(
        [
            str(_bin("mlflow")),
            "server",
            "--backend-store-uri",
            f"sqlite:///{home / 'mlflow.db'}",
            "--default-artifact-root",
            f"file://{home / 'mlartifacts'}",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**_base_env(), "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"},
        start_new_session=True,  # the server starts job consumers: its group is ended at teardown
    )
    proxy = None
    try:
        wait_http(f"http://127.0.0.1:{port}/health", 180, "mlflow server", server)
        proxy = FaultProxy(f"http://127.0.0.1:{port}").start()
        env = _env(home, proxy)
        mp = pytest.MonkeyPatch()
        use_home(mp, home, **env)
        try:
            worse = _worse_challenger(rebase(tpl["a"]["train"], tpl["home"], home))
        finally:
            mp.undo()
        yield {
            "home": home,
            "proxy": proxy,
            "env": env,
            "worse": worse,
            "b": rebase(tpl["b"], tpl["home"], home),
            "validate": rebase(tpl["validate"], tpl["home"], home),
        }
    finally:
        if proxy is not None:
            proxy.stop()
        _end_group(server)
        log.close()


def _end_group(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group, SIGKILL what is left after a deadline."""
    import os
    import signal

    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # job consumers that outlived the server
    except ProcessLookupError:
        pass


def _bin(name: str):
    from pathlib import Path

    return Path(sys.executable).with_name(name)


def _base_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MLOPS_"))}


def _env(home, proxy: FaultProxy) -> dict[str, str]:
    # the server decides where artifacts go (MLOPS_MLFLOW_ARTIFACTS empty, as in production)
    return {"MLFLOW_TRACKING_URI": proxy.url, "MLOPS_MLFLOW_ARTIFACTS": "", **CLIENT_ENV}


def _worse_challenger(train_out: TrainResult) -> TrainResult:
    """Run A's training split with its labels shuffled, fitted and logged as a run: a model
    that ranks no better than chance on run A's holdout, where the champion scores ~0.74."""
    from dataclasses import replace

    import mlflow
    import numpy as np

    from include.mlops.context import context
    from include.mlops.features.build import model_features
    from include.mlops.registry import ensure_experiment, setup_mlflow
    from include.mlops.training import fit as T
    from include.mlops.training.tracking import log_model

    ctx = context(SPEC)
    spec, store, settings = ctx.spec, ctx.store, ctx.settings
    df = store.get_parquet(store.key_of(train_out.train_uri))
    df[spec.label] = np.random.default_rng(7).permutation(df[spec.label].to_numpy())
    model, _ = T.fit(spec, df)
    exp = ensure_experiment(setup_mlflow(settings), spec.name, settings)
    with mlflow.start_run(experiment_id=exp, run_name="worse-challenger", tags={"mlops.interval": "worse"}) as run:
        info = log_model(model, spec, df.head(5)[model_features(spec)])
        mlflow.set_tag("mlops.model_uri", info.model_uri)
    return replace(train_out, run_id=run.info.run_id, model_uri=info.model_uri, data_hash="shuffled-labels")


@pytest.fixture
def faults(registry, monkeypatch) -> dict[str, Any]:
    """The environment on the proxy for one test; no fault to begin with, none left after, and
    the aliases put back as they were (a test that fails midway must not change the next one)."""
    proxy: FaultProxy = registry["proxy"]
    proxy.clear()
    proxy.reset_records()
    use_home(monkeypatch, registry["home"], **registry["env"])
    client = _client()
    before = _aliases(client)
    yield {**registry, "client": client, "before": before, "ledger": _ledger()}
    proxy.clear()
    for alias, version in before.items():
        if _aliases(client)[alias] != version:
            if version is None:
                client.delete_registered_model_alias(MODEL, alias)
            else:
                client.set_registered_model_alias(MODEL, alias, version)


def _client():
    from include.mlops.config import get_settings
    from include.mlops.registry import setup_mlflow

    return setup_mlflow(get_settings())


def _aliases(client) -> dict[str, str | None]:
    from include.mlops.registry import alias_version

    return {a: alias_version(client, MODEL, a) for a in ("champion", "previous")}


def _ledger() -> list[dict[str, Any]]:
    from include.mlops.ledger import read_ledger
    from include.mlops.storage import get_store

    return read_ledger(get_store(), MODEL, history=True) if _has_history() else read_ledger(get_store(), MODEL)


def _has_history() -> bool:
    import inspect

    from include.mlops.ledger import read_ledger

    return "history" in inspect.signature(read_ledger).parameters


def _new_ledger(f: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in _ledger() if e not in f["ledger"]]


def _chain(exc: BaseException) -> str:
    parts = []
    while exc is not None:
        parts.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__ or exc.__context__
    return " <- ".join(parts)


# -- alias reads fail during evaluate ------------------------------------------------------------------
def test_alias_reads_failing_during_evaluate_fail_it_and_the_retry_refuses_the_worse_model(faults):
    from include.mlops import pipeline as P

    proxy, worse = faults["proxy"], faults["worse"]
    rule = proxy.add(method="GET", path=ALIAS, status=500)
    with pytest.raises(Exception) as err:
        P.evaluate(worse, SPEC)
    assert rule.applied >= 1, "the fault never met a request"
    assert "500" in _chain(err.value), _chain(err.value)
    assert {(r.method, r.status) for r in proxy.failed()} == {("GET", 500)}, "only the injected alias reads failed"
    proxy.clear()  # the registry answers again: read the end state
    assert _aliases(faults["client"]) == faults["before"]

    proxy.reset_records()
    ev = P.evaluate(worse, SPEC)  # the retry, with the registry answering
    assert ev.passed is False, ev
    assert ev.champion_version == faults["before"]["champion"]
    assert ev.champion_metrics["roc_auc"] - ev.metrics["roc_auc"] > 0.02, ev
    reg = P.register(worse, ev, faults["validate"], {"dag_id": "faults"}, faults["b"]["interval"], SPEC)
    out = P.promote(reg, ev, "faults-evaluate", "faults", spec_name=SPEC)
    assert out.promoted is False and out.message.startswith("not promoted"), out
    assert _aliases(faults["client"]) == faults["before"]
    assert _new_ledger(faults) == [], "a refused model leaves the ledger as it was"
    assert proxy.failed() == []


def test_slow_registry_only_slows_the_decision_down(faults):
    from include.mlops import pipeline as P

    proxy, worse = faults["proxy"], faults["worse"]
    clean = P.evaluate(worse, SPEC)
    slow_alias = proxy.add(method="GET", path=ALIAS, delay=1.0)
    slow_all = proxy.add(path="", delay=0.05)
    slow = P.evaluate(worse, SPEC)
    assert slow_alias.applied >= 1 and slow_all.applied >= 1
    assert (slow.passed, slow.champion_version, slow.reasons) == (
        clean.passed,
        clean.champion_version,
        clean.reasons,
    )
    assert slow.metrics == pytest.approx(clean.metrics)
    assert proxy.failed() == []
    assert _aliases(faults["client"]) == faults["before"]


def test_registry_hang_fails_evaluate_at_the_client_timeout(faults, monkeypatch):
    from include.mlops import pipeline as P

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    proxy = faults["proxy"]
    rule = proxy.add(method="GET", path=ALIAS, hang=True)
    with pytest.raises(Exception) as err:
        P.evaluate(faults["worse"], SPEC)
    text = _chain(err.value).lower()
    assert "timed out" in text or "timeout" in text, text
    assert rule.applied >= 1
    assert [r.action for r in proxy.faults()] == ["hung"] * rule.applied
    proxy.release()
    proxy.clear()
    assert _aliases(faults["client"]) == faults["before"]
    assert _new_ledger(faults) == []


# -- alias faults during deploy (promotion) ---------------------------------------------------------------
def test_alias_reads_failing_during_promote_fail_it_and_change_nothing(faults):
    from include.mlops import pipeline as P

    proxy, b = faults["proxy"], faults["b"]
    ev = replace(b["evaluate"], passed=True, reasons=[])
    rule = proxy.add(method="GET", path=ALIAS, status=500)
    with pytest.raises(Exception) as err:
        P.promote(b["register"], ev, "faults-promote-read", "faults", spec_name=SPEC)
    assert rule.applied >= 1 and "500" in _chain(err.value)
    proxy.clear()
    assert _aliases(faults["client"]) == faults["before"]
    assert [e for e in _new_ledger(faults) if e.get("status", "done") == "done"] == [], "no completed move"
    _promote_then_roll_back(faults, b, ev, "faults-promote-read")


def test_alias_write_failing_mid_promotion_then_the_retry_completes_it(faults):
    """The champion alias moves, the next alias write fails: the task fails, and its retry
    (same DAG run) ends with champion v2, previous v1, a completed ledger entry and a rollback
    that lands on v1."""
    from include.mlops import pipeline as P

    proxy, b = faults["proxy"], faults["b"]
    ev = replace(b["evaluate"], passed=True, reasons=[])
    rule = proxy.add(method="POST", path=ALIAS, status=500, skip=1)
    with pytest.raises(Exception) as err:
        P.promote(b["register"], ev, "faults-promote-write", "faults", spec_name=SPEC)
    assert rule.applied >= 1 and "500" in _chain(err.value), _chain(err.value)
    proxy.clear()
    _promote_then_roll_back(faults, b, ev, "faults-promote-write")


def _promote_then_roll_back(faults: dict[str, Any], b: dict[str, Any], ev: dict[str, Any], run_id: str) -> None:
    """The (retried) promotion of v2 over the champion, the end state, then a rollback to it."""
    from include.mlops import pipeline as P
    from include.mlops.delivery.rollback import rollback

    champion = faults["before"]["champion"]
    assert champion == "1", faults["before"]
    P.promote(b["register"], ev, run_id, "faults", spec_name=SPEC)
    after = _aliases(faults["client"])
    assert (after["champion"], after["previous"]) == ("2", "1"), after
    done = [e for e in _new_ledger(faults) if e.get("status", "done") == "done"]
    assert [(e["action"], e["from_version"], e["to_version"]) for e in done] == [("promote", "1", "2")], done
    back = rollback(None, f"{run_id}-rollback", "faults", spec_name=SPEC)
    assert (back["from_version"], back["to_version"]) == ("2", "1"), back
    assert _aliases(faults["client"])["champion"] == "1"


def test_alias_reads_failing_during_rollback_fail_it_and_change_nothing(faults):
    from include.mlops.delivery.rollback import rollback

    proxy = faults["proxy"]
    rule = proxy.add(method="GET", path=ALIAS, status=500)
    with pytest.raises(Exception) as err:
        rollback(None, "faults-rollback-read", "faults", spec_name=SPEC)
    assert rule.applied >= 1 and "500" in _chain(err.value), _chain(err.value)
    assert "no 'previous'" not in str(err.value), "a registry error must not read as 'nothing to roll back to'"
    proxy.clear()
    assert _aliases(faults["client"]) == faults["before"]
    assert _new_ledger(faults) == []
