"""A shadow phase judged by its report, on live traffic (issue 17 items 3 and 7).

The session's scoring service on loopback over its copy of the lifecycle home (conftest), live
traffic from a thread pool, real MLflow on SQLite. The new version scores every live request
beside the champion and answers none; the phase ends with a report (agreement, score differences,
latency of the model calls, errors) and promotes only when it passes. A version that disagrees
with the champion on every row fails it, and the champion stays, with the routing ended: the
service stops shadow-scoring it.
"""

from __future__ import annotations

import asyncio
import importlib

import httpx
import pytest

from tests.support import delivery_home as H

pytestmark = [pytest.mark.serving, pytest.mark.integration]

SHADOW = {
    "soak_seconds": 1,
    "min_requests": 40,
    "deadline_seconds": 90,
    "poll_seconds": 0.5,
    "max_latency_ratio": 4.0,  # both score the same rows in one process; the test is about the answers
}


@pytest.fixture
def env(delivery, delivery_service, monkeypatch, keep_mlflow_uris):
    """The session's copy and service (conftest `delivery`: fresh before and after), the spec's
    shadow set to SHADOW, and the process environment as the deploy task sees it."""
    H.set_delivery(delivery, strategy="direct", shadow=dict(SHADOW))
    H.use_live(monkeypatch, delivery, delivery_service)
    return delivery


def shadow_scored(server, version: str) -> float:
    from include.mlops.delivery.service import service_metric

    return service_metric(server, "mlops_serving_predictions_total", variant="shadow", model_version=version)


def via_trigger(phase) -> dict:
    """The trigger as the triggerer runs it: rebuilt from its serialised form, run to its event."""
    from mlops_airflow.triggers import LiveTrafficTrigger

    classpath, kwargs = LiveTrafficTrigger(phase.to_dict(), phase.soak_until, phase.deadline,
                                           phase.poll_seconds).serialize()  # fmt: skip
    module, name = classpath.rsplit(".", 1)
    trigger = getattr(importlib.import_module(module), name)(**kwargs)

    async def first_event():
        return await anext(trigger.run())

    return asyncio.run(first_event()).payload


def run_shadow(client, env, server, rows, version: str, run_id: str):
    from include.mlops.delivery import rollout as RO
    from include.mlops.delivery.phases import Phase
    from include.mlops.delivery.request import DeployRequest
    from tests.support.live_traffic import LiveTraffic

    name = H.spec_of(env).model_name
    with LiveTraffic(server.url, H.spec_of(env), rows, rate=30) as live:
        out = RO.start(
            DeployRequest.of(H.reg_out(client, name, version), H.PASSED, run_id, "test", "shadow", env["spec_name"])
        )
        while isinstance(out, Phase):
            event = via_trigger(out)
            out = RO.resume(event["state"], event)
    return out, live.summary


def test_a_shadow_whose_report_passes_is_promoted(
    env, delivery_service, delivery_client, delivery_store, delivery_rows
):
    from include.mlops import ledger as L
    from include.mlops import registry as R
    from include.mlops.constants import CHAMPION
    from tests.support.canary_models import register

    name = H.spec_of(env).model_name
    v = register(delivery_client, H.spec_of(env), "good", base=env["v1"])
    out, summary = run_shadow(delivery_client, env, delivery_service, delivery_rows, v, "shadow-pass")
    report = out.shadow_report
    print("\nshadow report, same model:\n" + _table(report))
    assert out.promoted and out.checked and report["passed"], report
    assert report["agreement"] == 1.0 and report["mean_abs_score_diff"] == 0.0
    assert report["paired"] >= SHADOW["min_requests"] and report["requests"] >= SHADOW["min_requests"]
    assert R.alias_version(delivery_client, name, CHAMPION) == v
    steps = L.steps_of(delivery_store, name, out.move)
    assert [(s["action"], s["passed"]) for s in steps] == [("shadow_report", True)]
    assert ("shadow", v) not in summary.answers  # a shadow answers nobody
    artifacts = {
        a.path for a in delivery_client.list_artifacts(delivery_client.get_model_version(name, v).run_id, "deployment")
    }
    assert "deployment/shadow_report.json" in artifacts


def test_a_shadow_that_disagrees_fails_its_report_and_the_champion_stays(
    env, delivery_service, delivery_client, delivery_store, delivery_rows
):
    from include.mlops import ledger as L
    from include.mlops import moves as M
    from include.mlops import registry as R
    from include.mlops.constants import CHALLENGER, CHAMPION
    from include.mlops.delivery import rollout as RO
    from tests.support.canary_models import register

    name, v1 = H.spec_of(env).model_name, env["v1"]
    v = register(delivery_client, H.spec_of(env), "disagreeing", base=v1)
    with pytest.raises(RO.DeploymentCheckFailed, match=r"shadow report failed.*agreement") as err:
        run_shadow(delivery_client, env, delivery_service, delivery_rows, v, "shadow-disagrees")
    assert err.value.rolled_back and err.value.rolled_back_to == v1
    moves = L.moves_of(delivery_store, name, M.promotion_base("test", "shadow-disagrees", v))
    assert moves[-1].status == "rolled_back"
    report = L.steps_of(delivery_store, name, moves[-1].move)[0]
    print("\nshadow report, disagreeing model:\n" + _table(report))
    assert report["passed"] is False and report["agreement"] < 0.5
    assert (
        R.alias_version(delivery_client, name, CHAMPION) == v1
        and R.alias_version(delivery_client, name, CHALLENGER) is None
    )
    # the routing ended: once the service read the registry, v stops scoring
    httpx.post(f"{delivery_service.url}/admin/reload", headers=delivery_service.headers(), timeout=60)
    before = shadow_scored(delivery_service, v)
    from tests.support.live_traffic import LiveTraffic

    with LiveTraffic(delivery_service.url, H.spec_of(env), delivery_rows, rate=30) as live:
        live.wait_for(lambda s: s.sent >= 30, 60, "30 requests after the shadow ended")
    httpx.post(f"{delivery_service.url}/admin/flush", headers=delivery_service.headers(), timeout=60)
    assert shadow_scored(delivery_service, v) == before


def _table(report: dict) -> str:
    lines = ["| metric | shadow | champion | limit | ok |", "|---|---|---|---|---|"]
    for r in report["rows"]:
        lines.append(f"| {r['metric']} | {r.get('shadow')} | {r.get('champion')} | {r['limit']} | {r['ok']} |")
    return "\n".join(lines + [f"- {x}" for x in report.get("reasons", [])])
