"""Rollback ends the rollout, on a real scoring service (issue 17 item 1, issue 15 item 2).

One uvicorn service (registry poll 1 s) over a private copy of the session's lifecycle home.
After a rollback the service must stop answering with (canary) and scoring with (shadow) the
version rolled back from, by its own poll: the rollbacks here do not call POST /admin/reload.
Each probe is a bounded batch of requests over many entities; waits have deadlines and say what
they saw. Every test leaves v1 champion with no rollout under way.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx
import pytest

from tests.support.delivery_home import set_delivery

pytestmark = [pytest.mark.serving, pytest.mark.integration]

POLL_SECONDS = 1
PASSED = {"passed": True, "reasons": [], "metrics": {"roc_auc": 0.9}}
ENTITIES = 300  # canary share 0.5: ~150 would go to the challenger


@pytest.fixture(scope="module")
def home(lifecycle, tmp_path_factory) -> dict:
    src = Path(lifecycle["home"])
    dst = tmp_path_factory.mktemp("rollback_ends_rollout") / "home"
    shutil.copytree(src, dst)
    env = {k: v.replace(str(src), str(dst)) for k, v in lifecycle["env"].items()}
    env["MLOPS_DATASET"] = lifecycle["spec"].name
    home = {"path": dst, "env": env, "spec": lifecycle["spec"], "v1": lifecycle["register"]["version"],
            "spec_path": dst / Path(lifecycle["spec_path"]).relative_to(src)}  # fmt: skip
    # one canary step judged at once (no soak, no minimum of live requests): these tests are
    # about what a rollback ends; the live phases are tested in test_progressive_canary
    set_delivery(home, canary={"steps": [0.5], "soak_seconds": 0, "min_requests": 0})
    return home


@pytest.fixture(scope="module")
def client(home):
    from mlflow import MlflowClient

    uri = home["env"]["MLFLOW_TRACKING_URI"]
    return MlflowClient(uri, uri)


@pytest.fixture(scope="module")
def store(home):
    from include.mlops.storage import ObjectStore

    return ObjectStore(home["env"]["MLOPS_STORE_URI"])


@pytest.fixture(scope="module")
def v2(home, client) -> str:
    """A second version (the champion's model again: the check compares like with like)."""
    name = home["spec"].model_name
    src = client.get_model_version(name, home["v1"])
    mv = client.create_model_version(name, src.source, run_id=src.run_id, tags={"gate": "passed"})
    deadline = time.monotonic() + 60
    while client.get_model_version(name, mv.version).status != "READY":
        assert time.monotonic() < deadline, f"v{mv.version} never became READY"
        time.sleep(0.2)
    return str(mv.version)


@pytest.fixture(scope="module")
def server(home, v2):
    from include.mlops.delivery.service import start_service

    h = start_service({**home["env"], "MLOPS_SERVE_POLL_SECONDS": str(POLL_SECONDS)}, timeout=240)
    yield h
    h.close()
    h.cleanup()


@pytest.fixture
def env(lifecycle_env, home, client, store, monkeypatch):
    """The process environment on the copy; afterwards v1 champion again and no rollout under way."""
    from include.mlops import registry as R
    from include.mlops.delivery.rollback import rollback

    for k, v in home["env"].items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("MLOPS_SERVE_URL", raising=False)
    yield home
    name = home["spec"].model_name
    for m in R.open_moves(store, name):
        R.undo_move(client, store, m, action="rollback", reason="test cleanup", run_id="cleanup", dag_id="test")
    if R.alias_version(client, name, R.CHAMPION) != home["v1"]:
        rollback(home["v1"], "cleanup", "test", spec_name=home["spec"].name)
    R.end_routing(client, name)


def serving(server, *, champion: str, challenger: str | None, timeout: float = 120) -> dict:
    """/ready once the service serves `champion` and `challenger` (None: no variant), by its own poll."""
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        body = httpx.get(f"{server.url}/ready", timeout=30).json()
        seen = ((body.get("champion") or {}).get("version"), (body.get("challenger") or {}).get("version"))
        if seen == (champion, challenger):
            return body
        time.sleep(0.2)
    raise AssertionError(f"the service did not come to champion={champion} challenger={challenger}: {body}")


def probe(server, spec, store) -> list[tuple[str, str]]:
    """(variant, version) of the answers to one request per entity, for ENTITIES entities."""
    from include.mlops.delivery.checks import sample_inputs

    base = sample_inputs(spec, store, n=1)[0][0]
    records = [{**base, spec.entity_key: 700_000 + i} for i in range(ENTITIES)]
    out = []
    for i in range(0, len(records), 100):
        r = httpx.post(f"{server.url}/predict", json={"records": records[i : i + 100]}, timeout=60)
        assert r.status_code == 200, r.text
        out += [(p["variant"], str(p["model_version"])) for p in r.json()["predictions"]]
    return out


def shadow_scored(server, version: str) -> float:
    from include.mlops.delivery.service import service_metric

    return service_metric(server, "mlops_serving_predictions_total", variant="shadow", model_version=version)


def strategy_tag(client, name: str) -> tuple[str | None, str | None]:
    tags = client.get_registered_model(name).tags
    return tags.get("mlops.deployment.strategy"), tags.get("mlops.deployment.canary_share")


def test_rollback_after_a_canary_rollout_ends_it_and_a_second_click_is_refused(env, server, client, store, v2,
                                                                               monkeypatch):  # fmt: skip
    """The issue's case: canary of v2 promoted, then ml_rollback. Before, the aliases ended as
    champion 1, previous 2, challenger 2 and the service kept answering ~10% with v2."""
    from include.mlops import registry as R
    from include.mlops.delivery.rollback import RollbackRefused, rollback
    from include.mlops.delivery.rollout import rollout

    spec, v1, name = env["spec"], env["v1"], env["spec"].model_name
    monkeypatch.setenv("MLOPS_SERVE_URL", server.url)
    monkeypatch.setenv("MLOPS_ADMIN_TOKEN", server.token)
    client.set_registered_model_alias(name, R.CHALLENGER, v2)  # as `register` leaves it
    reg = {"model": name, "version": v2, "run_id": client.get_model_version(name, v2).run_id}
    out = rollout(reg, PASSED, "canary-ok", "test", strategy="canary", spec_name=spec.name)
    assert out["promoted"] and out["checked"] and out["staged_check"]["load"]["variants"].get("challenger", 0) > 0
    promoted = R.read_ledger(store, name)[-1]
    assert (promoted["action"], promoted["status"], promoted["strategy"]) == ("promote", "done", "canary")

    monkeypatch.delenv("MLOPS_SERVE_URL")  # no reload request: the service must follow by its poll
    back = rollback(None, "rb-canary", "ml_rollback", spec_name=spec.name, reason="test")
    assert (back["from_version"], back["to_version"], back["strategy"]) == (v2, v1, "canary")
    aliases = {a: R.alias_version(client, name, a) for a in (R.CHAMPION, R.PREVIOUS, R.CHALLENGER)}
    assert aliases == {"champion": v1, "previous": v2, "challenger": None}
    assert strategy_tag(client, name) == ("direct", "0.0")
    entry = R.read_ledger(store, name)[-1]
    assert (entry["action"], entry["strategy"], entry["from_version"], entry["to_version"]) == (
        "rollback",
        "canary",
        v2,
        v1,
    )
    assert serving(server, champion=v1, challenger=None)["strategy"] == "direct"
    answers = probe(server, spec, store)
    assert set(answers) == {("champion", v1)}, f"{sum(a[1] == v2 for a in answers)} answers from v{v2}"

    with pytest.raises(RollbackRefused, match=rf"nothing new to roll back.*re-promote v{v2}"):
        rollback(None, "rb-again", "ml_rollback", spec_name=spec.name)
    assert R.alias_version(client, name, R.CHAMPION) == v1


@pytest.mark.parametrize("strategy", ["canary", "shadow"])
def test_rollback_during_a_staged_phase_stops_the_challenger_answering_and_scoring(env, server, client, store, v2,
                                                                                  strategy):  # fmt: skip
    """The rollout is in its canary or shadow phase (its promotion pending, v1 still champion):
    rollback ends it; the service stops routing to / shadow-scoring v2 at its next poll."""
    from include.mlops import registry as R
    from include.mlops.delivery.rollback import rollback
    from include.mlops.delivery.rollout import publish_strategy

    spec, v1, name = env["spec"], env["v1"], env["spec"].model_name
    move = R.begin_move(
        client, store, name, v2, action="promote", reason="gate passed", run_id=f"staged-{strategy}",
        dag_id="test", strategy=strategy, base=R.promotion_base("test", f"staged-{strategy}", v2), awaits_check=True,
    )  # fmt: skip
    publish_strategy(client, name, strategy, 0.5)
    client.set_registered_model_alias(name, R.CHALLENGER, v2)
    serving(server, champion=v1, challenger=v2)
    scored = shadow_scored(server, v2)
    answers = probe(server, spec, store)
    if strategy == "canary":
        assert ("challenger", v2) in answers and ("champion", v1) in answers
    else:
        assert set(answers) == {("champion", v1)}
        deadline = time.monotonic() + 60
        while shadow_scored(server, v2) < scored + ENTITIES:
            assert time.monotonic() < deadline, f"shadow v{v2} scored {shadow_scored(server, v2) - scored}"
            time.sleep(0.2)

    back = rollback(None, f"rb-{strategy}", "ml_rollback", spec_name=spec.name)
    assert (back["from_version"], back["to_version"], back["strategy"]) == (v2, v1, strategy)
    assert R.move_record(store, name, move.move).status == "rolled_back"
    assert R.alias_version(client, name, R.CHALLENGER) is None and strategy_tag(client, name)[0] == "direct"
    serving(server, champion=v1, challenger=None)
    scored = shadow_scored(server, v2)
    assert set(probe(server, spec, store)) == {("champion", v1)}
    assert server.proc.poll() is None
    httpx.post(f"{server.url}/admin/flush", headers=server.headers(), timeout=60)  # queued shadow work done
    assert shadow_scored(server, v2) == scored


def test_a_rollout_retried_after_a_crash_past_the_switch_runs_its_checks(env, server, client, store, v2,
                                                                        monkeypatch):  # fmt: skip
    """Killed after `champion` moved, before the checks and the ledger: the retry of the same run
    does not answer "already champion"; it checks v2 on the service, completes the promotion, and
    a rollback then lands on v1."""
    from include.mlops import registry as R
    from include.mlops.delivery.rollback import rollback
    from include.mlops.delivery.rollout import rollout

    spec, v1, name = env["spec"], env["v1"], env["spec"].model_name
    monkeypatch.setenv("MLOPS_SERVE_URL", server.url)
    monkeypatch.setenv("MLOPS_ADMIN_TOKEN", server.token)
    move = R.begin_move(
        client, store, name, v2, action="promote", reason="gate passed", run_id="crashed", dag_id="test",
        strategy="direct", base=R.promotion_base("test", "crashed", v2), awaits_check=True,
    )  # fmt: skip
    R.set_previous(client, move)
    R.set_champion(client, move)  # the kill point
    reg = {"model": name, "version": v2, "run_id": client.get_model_version(name, v2).run_id}
    out = rollout(reg, PASSED, "crashed", "test", spec_name=spec.name)
    assert out["promoted"] and out["resumed"] and out["checked"] and out["check"]["smoke"]["passed"]
    assert out["deploy_errors"] == 0 and out["previous"] == v1
    assert R.move_record(store, name, move.move).status == "done"
    back = rollback(None, "rb-crashed", "ml_rollback", spec_name=spec.name)
    assert (back["from_version"], back["to_version"]) == (v2, v1)
