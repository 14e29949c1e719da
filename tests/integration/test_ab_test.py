"""An A/B test on a real scoring service (issue 17 items 4 and 7).

The service (a uvicorn subprocess on loopback, registry poll 1 s, over a private copy of the
session's lifecycle home: the `delivery_*` fixtures of tests/integration/conftest.py, fresh for
each test) serves with the strategy tag `ab_test` and a share of 0.5. Live requests for
generated entities are split sticky by entity; the entities' true labels are then written to the label feed the way the generator
writes them (entity, event time, label; arriving today), the prediction log is flushed, and
`abwindow.ab_outcomes` + `abtest.decide` judge the arms:

- champion: a model fitted on noisy labels (70% of them flipped, so it learns mostly the
  opposite); challenger: the lifecycle's model, fitted on the true labels. The challenger is
  truly better: it must win.
- champion and challenger: the same model (v1 and v2 of one run): inconclusive, champion kept.

The same two cases then run through the deploy flow (spec `deployment.strategy: ab_test`, the
service live as MLOPS_SERVE_URL): `rollout.start` returns the A/B phase, the live window runs
while the phase waits (`phases.wait` in a thread; for the inconclusive case the deploy operator
defers and `LiveTrafficTrigger`, rebuilt from its classpath, waits), and the resumed phase
promotes the winner or keeps the champion, ending the routing either way.

Requests are bounded batches; every wait has a deadline and says what it saw.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime

import httpx
import numpy as np
import pandas as pd
import pytest

from tests.support.delivery_home import PASSED, reg_out, run_trigger, serving, set_delivery, strategy_tag, use_live

pytestmark = [pytest.mark.serving, pytest.mark.integration]

ENTITIES = 600  # share 0.5: ~300 per arm
NOISE = 0.7  # the share of the noisy champion's training labels that are flipped
TRAFFIC_DAY = date(2026, 11, 2)  # the generator's day the features (and their labels) come from
# the deploy flow's A/B test: judged once each arm has 120 labelled outcomes (a window gives ~300);
# the period bounds every wait
AB = {"share": 0.5, "samples_per_arm": 120, "period_seconds": 180, "poll_seconds": 0.5}


@pytest.fixture(scope="module")
def noisy(delivery_home, delivery_client) -> str:
    """A version fitted on noisy labels (70% flipped): it answers, mostly wrong."""
    import mlflow

    from include.mlops.config import get_settings
    from include.mlops.data.generator import generate_day
    from include.mlops.features.build import build_features, model_features
    from include.mlops.registry import ensure_experiment
    from include.mlops.training.fit import build_pipeline
    from include.mlops.training.tracking import log_model

    home, client = delivery_home, delivery_client
    spec, uri = home["spec"], home["env"]["MLFLOW_TRACKING_URI"]
    raw, labels = generate_day(spec, date(2026, 10, 20), rows=2000, seed=5)
    X = build_features(raw, spec)[model_features(spec)]
    y = labels[spec.label].to_numpy()
    y = np.where(np.random.default_rng(5).random(len(y)) < NOISE, 1 - y, y)
    model = build_pipeline(spec, {"max_iter": 50}).fit(X, y)
    saved = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    with pytest.MonkeyPatch.context() as mp:
        for k, v in home["env"].items():
            mp.setenv(k, v)
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        try:
            exp = ensure_experiment(client, "ab-test-models", get_settings())
            with mlflow.start_run(experiment_id=exp, run_name="noisy-labels") as run:
                info = log_model(model, spec, X.head(5))
            mv = client.create_model_version(spec.model_name, info.model_uri, run_id=run.info.run_id,
                                             model_id=info.model_id, tags={"gate": "passed"})  # fmt: skip
        finally:
            mlflow.set_tracking_uri(saved[0])
            mlflow.set_registry_uri(saved[1])
    deadline = time.monotonic() + 60
    while client.get_model_version(spec.model_name, mv.version).status != "READY":
        assert time.monotonic() < deadline, f"v{mv.version} never became READY"
        time.sleep(0.2)
    return str(mv.version)


@pytest.fixture
def arms(delivery, delivery_client, delivery_service):
    """Sets the two arms and the ab_test strategy (share 0.5) as the deploy step would; after the
    test, v1 champion again and no split."""
    from include.mlops import registry as R
    from include.mlops.constants import CHALLENGER, CHAMPION
    from include.mlops.serving.config import CANARY_SHARE_TAG, STRATEGY_TAG

    home, client, server = delivery, delivery_client, delivery_service
    name = home["spec"].model_name

    def start(champion: str, challenger: str) -> dict:
        client.set_registered_model_alias(name, CHAMPION, champion)
        client.set_registered_model_alias(name, CHALLENGER, challenger)
        client.set_registered_model_tag(name, STRATEGY_TAG, "ab_test")
        client.set_registered_model_tag(name, CANARY_SHARE_TAG, "0.5")
        return serving(server, champion=champion, challenger=challenger)

    yield start
    R.end_routing(client, name)
    client.set_registered_model_alias(name, CHAMPION, home["v1"])
    serving(server, champion=home["v1"], challenger=None)


def send(url: str, key: str, records: list[dict], *, synthetic: bool = False, batch: int = 100) -> dict[int, tuple]:
    """entity -> (variant, version) of the answers, in bounded batches."""
    headers = {"x-mlops-traffic": "synthetic"} if synthetic else {}
    out: dict[int, tuple[str, str]] = {}
    for i in range(0, len(records), batch):
        r = httpx.post(f"{url}/predict", json={"records": records[i : i + batch]}, headers=headers, timeout=60)
        assert r.status_code == 200, r.text
        out.update({int(p[key]): (p["variant"], str(p["model_version"])) for p in r.json()["predictions"]})
    return out


def live_test(service, spec, objects, seed: int) -> tuple[dict[int, tuple[str, str]], float, float]:
    """One A/B window: live requests for ENTITIES generated entities (events a few minutes old),
    the same entities again (synthetic, not logged) to check stickiness, then their labels to the
    feed and the log flushed. Returns (answers, since, until)."""
    from include.mlops import layout
    from include.mlops.data.generator import generate_day

    raw, labels = generate_day(spec, TRAFFIC_DAY, rows=ENTITIES, seed=seed)
    since = time.time()
    event = int(since) - 60 - np.arange(ENTITIES)  # whole seconds: the log and the labels join exactly
    records = json.loads(raw[[spec.entity_key, *spec.feature_names]].to_json(orient="records"))
    for rec, t in zip(records, event, strict=True):
        rec[spec.timestamp] = int(t)
    answers = send(service.url, spec.entity_key, records)
    # the same entities in other batches (other request ids), as synthetic traffic: not logged
    again = send(service.url, spec.entity_key, records[::-1], synthetic=True, batch=37)
    assert again == answers, f"{sum(again[e] != answers[e] for e in answers)} entities changed arm"
    labels[spec.timestamp] = pd.to_datetime(event, unit="s", utc=True)
    arrival = datetime.now(UTC).date()
    objects.put_parquet(layout.labels_landing_key(spec, arrival, f"ab-test-{seed}.parquet"), labels)
    r = httpx.post(f"{service.url}/admin/flush", headers={"Authorization": f"Bearer {service.token}"}, timeout=60)
    assert r.status_code == 200 and r.json()["flushed"], r.text
    return answers, since, time.time()


def split(answers: dict[int, tuple[str, str]], champion: str, challenger: str) -> dict[str, int]:
    """Answers per arm, after checking that only the two arms answered, about half each."""
    per_arm = {arm: sum(v == (arm, ver) for v in answers.values()) for arm, ver in
               (("champion", champion), ("challenger", challenger))}  # fmt: skip
    assert sum(per_arm.values()) == ENTITIES, f"answers from other versions: {set(answers.values())}"
    assert 0.42 <= per_arm["challenger"] / ENTITIES <= 0.58, per_arm  # share 0.5, binomial sd 0.02
    return per_arm


def judge(spec, objects, answers, since, until, champion: str, challenger: str):
    """ab_outcomes + decide on the window, after checking the split and that every answer was read."""
    from include.mlops.delivery.abtest import decide
    from include.mlops.delivery.abwindow import ab_outcomes

    per_arm = split(answers, champion, challenger)
    versions = {"champion": champion, "challenger": challenger}
    out = ab_outcomes(objects, spec, since, until, versions=versions)
    assert out.answered == per_arm and (len(out.champion), len(out.challenger)) == (
        per_arm["champion"],
        per_arm["challenger"],
    ), "every answer of the window has its label"
    cfg = spec.deployment.ab_test.model_copy(update={"samples_per_arm": 200})
    result = decide(out, cfg, spec)
    print(f"\n{result.summary()}\n{result.table()}\n")
    return result


def test_ab_test_on_live_traffic_picks_the_truly_better_challenger(
    delivery, delivery_service, delivery_store, arms, noisy
):
    spec, v1, server, store = delivery["spec"], delivery["v1"], delivery_service, delivery_store
    ready = arms(champion=noisy, challenger=v1)
    assert (ready["strategy"], ready["canary_share"]) == ("ab_test", 0.5)
    answers, since, until = live_test(server, spec, store, seed=31)
    result = judge(spec, store, answers, since, until, champion=noisy, challenger=v1)
    assert result.decision == "challenger" and result.promote and result.winner_version == v1, result.table()
    assert result.challenger_value > result.champion_value + 0.1 and result.ci_low > 0
    assert (result.champion_version, result.challenger_version) == (noisy, v1)


def test_ab_test_between_two_copies_of_one_model_is_inconclusive(
    delivery, delivery_service, delivery_store, arms, delivery_v2
):
    spec, v1, server, store, v2 = delivery["spec"], delivery["v1"], delivery_service, delivery_store, delivery_v2
    arms(champion=v1, challenger=v2)
    answers, since, until = live_test(server, spec, store, seed=47)
    result = judge(spec, store, answers, since, until, champion=v1, challenger=v2)
    assert result.decision == "inconclusive" and not result.promote and result.winner_version == v1, result.table()
    assert result.p_value >= result.significance and result.ci_low < 0 < result.ci_high


# -- through the deploy flow -------------------------------------------------------------------------
@pytest.fixture
def flow(delivery, delivery_service, delivery_client, delivery_store, monkeypatch, keep_mlflow_uris):
    """The deploy task's environment (the service live, admin token) and the spec's strategy
    ab_test; afterwards no open move, v1 champion, no split, strategy direct in the spec."""
    from include.mlops import ledger as L
    from include.mlops import moves as M
    from include.mlops import registry as R

    home, server, client, store = delivery, delivery_service, delivery_client, delivery_store
    set_delivery(home, strategy="ab_test", ab_test=dict(AB))
    use_live(monkeypatch, home, server)
    yield home
    name = home["spec"].model_name
    for m in L.open_moves(store, name):
        M.undo_move(client, store, m, action="rollback", reason="test cleanup", run_id="ab-cleanup", dag_id="test")
    M.move_champion(client, store, name, home["v1"], action="promote", reason="test cleanup", run_id="ab-cleanup",
                    dag_id="test")  # fmt: skip
    R.end_routing(client, name)
    set_delivery(home, strategy="direct")
    serving(server, champion=home["v1"], challenger=None)


def result_of(d: dict):
    """The ABResult a flow recorded (its `to_dict`), for its table."""
    from dataclasses import fields

    from include.mlops.delivery.abtest import ABResult

    return ABResult(**{f.name: d[f.name] for f in fields(ABResult)})


def window_while(wait, service, spec, objects, seed: int):
    """`wait()` (the phase's wait, in a thread) while a live window runs; (its event, the answers)."""
    with ThreadPoolExecutor(1, thread_name_prefix="ab-wait") as pool:
        waiting = pool.submit(wait)
        answers, _, _ = live_test(service, spec, objects, seed=seed)
        event = waiting.result(timeout=AB["period_seconds"] + 60)
    return event, answers


def judged(objects, name: str, move: str, answers, champion: str, challenger: str) -> dict:
    """The move's one step event, the A/B decision, checked against the window's answers."""
    from include.mlops.ledger import steps_of

    steps = steps_of(objects, name, move)
    assert [s["action"] for s in steps] == ["ab_test"], steps
    step, per_arm = steps[0], split(answers, champion, challenger)
    assert step["answered"] == per_arm and (step["n_champion"], step["n_challenger"]) == (
        per_arm["champion"],
        per_arm["challenger"],
    ), "the decision judged every answer of the window, each with its label"
    assert min(step["n_champion"], step["n_challenger"]) >= AB["samples_per_arm"]
    assert all(step[k] is not None for k in ("effect", "ci_low", "ci_high", "p_value")), step
    print(f"\n{step['summary']}\n{result_of(step).table()}\n")
    return step


def not_split(service, spec, champion: str) -> None:
    """The service serves `champion` alone: every entity of a probe (synthetic, not logged) gets it."""
    serving(service, champion=champion, challenger=None)
    records = [{**r, spec.entity_key: 900_000 + i} for i, r in enumerate(probe_rows(spec, 300))]
    seen = set(send(service.url, spec.entity_key, records, synthetic=True).values())
    assert seen == {("champion", champion)}, seen


def probe_rows(spec, n: int) -> list[dict]:
    from include.mlops.data.generator import generate_day

    raw, _ = generate_day(spec, TRAFFIC_DAY, rows=n, seed=3)
    return json.loads(raw[spec.feature_names].to_json(orient="records"))


def test_an_ab_test_rollout_promotes_the_truly_better_challenger(
    flow, delivery_service, delivery_client, delivery_store, noisy
):
    from include.mlops import ledger as L
    from include.mlops import moves as M
    from include.mlops import registry as R
    from include.mlops.constants import CHALLENGER, CHAMPION, PREVIOUS
    from include.mlops.delivery import phases
    from include.mlops.delivery import rollout as RO
    from include.mlops.delivery.request import DeployRequest

    spec, v1 = flow["spec"], flow["v1"]
    server, client, store, name = delivery_service, delivery_client, delivery_store, spec.model_name
    M.move_champion(client, store, name, noisy, action="promote", reason="test: the noisy champion",
                    run_id="ab-noisy", dag_id="test")  # fmt: skip
    t0 = time.monotonic()
    phase = RO.start(DeployRequest.of(reg_out(client, name, v1), PASSED, "ab-flow-wins", "test", None, spec.name))
    assert isinstance(phase, phases.Phase), phase
    assert (phase.kind, phase.champion, phase.version, phase.share, phase.need) == (
        "ab_test", noisy, v1, 0.5, AB["samples_per_arm"],
    )  # fmt: skip
    assert strategy_tag(client, name) == ("ab_test", "0.5")
    event, answers = window_while(lambda: phases.wait(phase), server, spec, store, seed=61)
    assert event["status"] == phases.READY and event["requests"] >= AB["samples_per_arm"], event
    out = RO.resume(phase.to_dict(), event)
    took = time.monotonic() - t0
    assert out.promoted and out.checked, out.message
    assert (out.champion, out.previous, out.strategy) == (v1, noisy, "ab_test")
    assert out.ab_test["decision"] == out.outcome == "challenger" and out.ab_test["winner_version"] == v1
    assert out.message.startswith(f"A/B test on accuracy: challenger v{v1} wins; effect +"), out.message
    assert R.alias_version(client, name, CHAMPION) == v1 and R.alias_version(client, name, PREVIOUS) == noisy
    assert L.move_record(store, name, out.move).status == L.DONE
    step = judged(store, name, out.move, answers, champion=noisy, challenger=v1)
    assert step["decision"] == "challenger" and step["ci_low"] > 0 and step["challenger_value"] > step["champion_value"]
    run = client.get_model_version(name, v1).run_id
    assert "deployment/ab_test.json" in {a.path for a in client.list_artifacts(run, "deployment")}
    assert client.get_run(run).data.metrics["ab_promoted"] == 1.0
    assert R.alias_version(client, name, CHALLENGER) is None and strategy_tag(client, name) == ("direct", "0.0")
    not_split(server, spec, v1)  # routing ended: no second version answers
    print(f"A/B rollout of v{v1} against v{noisy}: promoted after {took:.1f}s (start to final result)")


def test_an_inconclusive_ab_test_rollout_keeps_the_champion(
    flow, delivery_service, delivery_client, delivery_store, delivery_v2
):
    """Through the deploy operator: `execute` defers to the trigger, the live window runs while
    it waits, `resume` ends the test with the champion kept and the task succeeding."""
    from types import SimpleNamespace

    from airflow.sdk.exceptions import TaskDeferred
    from mlops_airflow.operators import MlflowPromoteOperator

    from include.mlops import ledger as L
    from include.mlops import registry as R
    from include.mlops.constants import CHALLENGER, CHAMPION

    spec, v1, v2 = flow["spec"], flow["v1"], delivery_v2
    server, client, store, name = delivery_service, delivery_client, delivery_store, spec.model_name
    assert R.alias_version(client, name, CHAMPION) == v1
    op = MlflowPromoteOperator(task_id="deploy", dataset=spec.name, strategy="")  # the spec's ab_test
    pulled = {"register": reg_out(client, name, v2), "evaluate": PASSED}
    context = {"ti": SimpleNamespace(xcom_pull=lambda task_ids: pulled[task_ids]),
               "dag_run": SimpleNamespace(run_id="ab-flow-same", dag_id="test")}  # fmt: skip
    t0 = time.monotonic()
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    state = deferred.value.kwargs["state"]
    assert (deferred.value.method_name, state["kind"], state["champion"], state["version"]) == (
        "resume", "ab_test", v1, v2,
    )  # fmt: skip
    event, answers = window_while(lambda: run_trigger(deferred.value.trigger), server, spec, store, seed=53)
    assert event["status"] == "ready" and event["state"] == state, event
    out = op.resume(context, event=event)
    took = time.monotonic() - t0
    assert out["promoted"] is False and out["gate_passed"] and out["outcome"] == "inconclusive", out
    assert f"champion v{v1} kept" in out["message"] and out["message"].startswith("not promoted: A/B test")
    assert (out["champion"], out["move_status"], out["version"]) == (v1, L.ROLLED_BACK, v2)
    assert R.alias_version(client, name, CHAMPION) == v1 and R.alias_version(client, name, CHALLENGER) is None
    assert L.move_record(store, name, out["move"]).status == L.ROLLED_BACK
    undo = [e for e in L.read_ledger(store, name) if e.get("undoes") == out["move"]]
    assert [(e["action"], e["status"], e["strategy"]) for e in undo] == [("keep_champion", L.DONE, "ab_test")], undo
    step = judged(store, name, out["move"], answers, champion=v1, challenger=v2)
    assert step["decision"] == "inconclusive" and step["p_value"] >= step["significance"], step["summary"]
    assert strategy_tag(client, name) == ("direct", "0.0")
    not_split(server, spec, v1)  # the service stopped routing to v2
    print(f"A/B rollout of v{v2} against v{v1}: champion kept after {took:.1f}s (start to final result)")
