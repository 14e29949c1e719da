"""Rollback ends the rollout, on a real scoring service (issue 17 item 1, issue 15 item 2).

The session's scoring service over its copy of the lifecycle home (tests/integration/conftest.py,
registry poll 1 s), fresh for each test.
After a rollback the service must stop answering with (canary) and scoring with (shadow) the
version rolled back from, by its own poll: the rollbacks here do not call POST /admin/reload.
Each probe is a bounded batch of requests over many entities; waits have deadlines and say what
they saw. Every test leaves v1 champion with no rollout under way.
"""

from __future__ import annotations

import time

import httpx
import pytest

from tests.support.delivery_home import serving, set_delivery, strategy_tag

pytestmark = [pytest.mark.serving, pytest.mark.integration]

PASSED = {"passed": True, "reasons": [], "metrics": {"roc_auc": 0.9}}
ENTITIES = 300  # canary share 0.5: ~150 would go to the challenger


@pytest.fixture
def env(delivery, monkeypatch):
    """The process environment on the shared copy (conftest `delivery`: fresh before and after),
    with one canary step judged at once (no soak, no minimum of live requests): these tests are
    about what a rollback ends; the live phases are tested in test_progressive_canary."""
    for k, v in delivery["env"].items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("MLOPS_SERVE_URL", raising=False)
    set_delivery(delivery, canary={"steps": [0.5], "soak_seconds": 0, "min_requests": 0})
    return delivery


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


def pending_promotion(client, store, name: str, version: str, run_id: str, strategy: str):
    """The promotion of `version` as the deploy task opens it (`run_id` of dag "test"), awaiting
    its checks: a rollout in its staged phase, or killed before its checks ran."""
    from include.mlops import moves as M

    base = M.promotion_base("test", run_id, version)
    return M.begin_move(client, store, name, version, action="promote", reason="gate passed", run_id=run_id,
                        dag_id="test", strategy=strategy, base=base, awaits_check=True)  # fmt: skip


def test_rollback_after_a_canary_rollout_ends_it_and_a_second_click_is_refused(
    env, delivery_service, delivery_client, delivery_store, delivery_v2, monkeypatch
):
    """The issue's case: canary of v2 promoted, then ml_rollback. Before, the aliases ended as
    champion 1, previous 2, challenger 2 and the service kept answering ~10% with v2."""
    from include.mlops import ledger as L
    from include.mlops import registry as R
    from include.mlops.constants import CHALLENGER, CHAMPION, PREVIOUS
    from include.mlops.delivery.request import DeployRequest
    from include.mlops.delivery.rollback import RollbackRefused, rollback
    from include.mlops.delivery.rollout import rollout

    spec, v1, name = env["spec"], env["v1"], env["spec"].model_name
    monkeypatch.setenv("MLOPS_SERVE_URL", delivery_service.url)
    monkeypatch.setenv("MLOPS_ADMIN_TOKEN", delivery_service.token)
    delivery_client.set_registered_model_alias(name, CHALLENGER, delivery_v2)  # as `register` leaves it
    reg = {
        "model": name,
        "version": delivery_v2,
        "created": False,
        "run_id": delivery_client.get_model_version(name, delivery_v2).run_id,
    }
    out = rollout(DeployRequest.of(reg, PASSED, "canary-ok", "test", strategy="canary", spec_name=spec.name))
    assert out.promoted and out.checked and out.staged_check["load"]["variants"].get("challenger", 0) > 0
    promoted = L.read_ledger(delivery_store, name)[-1]
    assert (promoted["action"], promoted["status"], promoted["strategy"]) == ("promote", "done", "canary")

    # the completed canary ended its routing: what is in force when the rollback comes is direct
    assert strategy_tag(delivery_client, name) == ("direct", "0.0")
    assert R.alias_version(delivery_client, name, CHALLENGER) is None

    monkeypatch.delenv("MLOPS_SERVE_URL")  # no reload request: the service must follow by its poll
    back = rollback(None, "rb-canary", "ml_rollback", spec_name=spec.name, reason="test")
    assert (back["from_version"], back["to_version"], back["strategy"]) == (delivery_v2, v1, "direct")
    aliases = {a: R.alias_version(delivery_client, name, a) for a in (CHAMPION, PREVIOUS, CHALLENGER)}
    assert aliases == {"champion": v1, "previous": delivery_v2, "challenger": None}
    assert strategy_tag(delivery_client, name) == ("direct", "0.0")
    entry = L.read_ledger(delivery_store, name)[-1]
    assert (entry["action"], entry["strategy"], entry["from_version"], entry["to_version"]) == (
        "rollback",
        "direct",
        delivery_v2,
        v1,
    )
    assert serving(delivery_service, champion=v1, challenger=None)["strategy"] == "direct"
    answers = probe(delivery_service, spec, delivery_store)
    assert set(answers) == {("champion", v1)}, (
        f"{sum(a[1] == delivery_v2 for a in answers)} answers from v{delivery_v2}"
    )

    with pytest.raises(RollbackRefused, match=rf"nothing new to roll back.*re-promote v{delivery_v2}"):
        rollback(None, "rb-again", "ml_rollback", spec_name=spec.name)
    assert R.alias_version(delivery_client, name, CHAMPION) == v1


@pytest.mark.parametrize("strategy", ["canary", "shadow"])
def test_rollback_during_a_staged_phase_stops_the_challenger_answering_and_scoring(
    env, delivery_service, delivery_client, delivery_store, delivery_v2, strategy
):
    """The rollout is in its canary or shadow phase (its promotion pending, v1 still champion):
    rollback ends it; the service stops routing to / shadow-scoring v2 at its next poll."""
    from include.mlops import ledger as L
    from include.mlops import registry as R
    from include.mlops.constants import CHALLENGER
    from include.mlops.delivery.rollback import rollback
    from include.mlops.delivery.rollout import publish_strategy

    spec, v1, name = env["spec"], env["v1"], env["spec"].model_name
    move = pending_promotion(delivery_client, delivery_store, name, delivery_v2, f"staged-{strategy}", strategy)
    publish_strategy(delivery_client, name, strategy, 0.5)
    delivery_client.set_registered_model_alias(name, CHALLENGER, delivery_v2)
    serving(delivery_service, champion=v1, challenger=delivery_v2)
    scored = shadow_scored(delivery_service, delivery_v2)
    answers = probe(delivery_service, spec, delivery_store)
    if strategy == "canary":
        assert ("challenger", delivery_v2) in answers and ("champion", v1) in answers
    else:
        assert set(answers) == {("champion", v1)}
        deadline = time.monotonic() + 60
        while shadow_scored(delivery_service, delivery_v2) < scored + ENTITIES:
            assert time.monotonic() < deadline, (
                f"shadow v{delivery_v2} scored {shadow_scored(delivery_service, delivery_v2) - scored}"
            )
            time.sleep(0.2)

    back = rollback(None, f"rb-{strategy}", "ml_rollback", spec_name=spec.name)
    assert (back["from_version"], back["to_version"], back["strategy"]) == (delivery_v2, v1, strategy)
    assert L.move_record(delivery_store, name, move.move).status == "rolled_back"
    assert (
        R.alias_version(delivery_client, name, CHALLENGER) is None
        and strategy_tag(delivery_client, name)[0] == "direct"
    )
    serving(delivery_service, champion=v1, challenger=None)
    scored = shadow_scored(delivery_service, delivery_v2)
    assert set(probe(delivery_service, spec, delivery_store)) == {("champion", v1)}
    assert delivery_service.proc.poll() is None
    httpx.post(
        f"{delivery_service.url}/admin/flush", headers=delivery_service.headers(), timeout=60
    )  # queued shadow work done
    assert shadow_scored(delivery_service, delivery_v2) == scored


def test_a_rollout_retried_after_a_crash_past_the_switch_runs_its_checks(
    env, delivery_service, delivery_client, delivery_store, delivery_v2, monkeypatch
):
    """Killed after `champion` moved, before the checks and the ledger: the retry of the same run
    does not answer "already champion"; it checks v2 on the service, completes the promotion, and
    a rollback then lands on v1."""
    from include.mlops import ledger as L
    from include.mlops import moves as M
    from include.mlops.delivery.request import DeployRequest
    from include.mlops.delivery.rollback import rollback
    from include.mlops.delivery.rollout import rollout

    spec, v1, name = env["spec"], env["v1"], env["spec"].model_name
    monkeypatch.setenv("MLOPS_SERVE_URL", delivery_service.url)
    monkeypatch.setenv("MLOPS_ADMIN_TOKEN", delivery_service.token)
    move = pending_promotion(delivery_client, delivery_store, name, delivery_v2, "crashed", "direct")
    M.set_previous(delivery_client, move)
    M.set_champion(delivery_client, move)  # the kill point
    reg = {
        "model": name,
        "version": delivery_v2,
        "created": False,
        "run_id": delivery_client.get_model_version(name, delivery_v2).run_id,
    }
    out = rollout(DeployRequest.of(reg, PASSED, "crashed", "test", spec_name=spec.name))
    assert out.promoted and out.resumed and out.checked and out.check["smoke"]["passed"]
    assert out.deploy_errors == 0 and out.previous == v1
    assert L.move_record(delivery_store, name, move.move).status == "done"
    back = rollback(None, "rb-crashed", "ml_rollback", spec_name=spec.name)
    assert (back["from_version"], back["to_version"]) == (delivery_v2, v1)
