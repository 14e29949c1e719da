"""An A/B test on a real scoring service (issue 17 items 4 and 7).

The service (a uvicorn subprocess on loopback, registry poll 1 s, over a private copy of the
session's lifecycle home: the fixtures of test_rollback_ends_rollout) serves with the strategy
tag `ab_test` and a share of 0.5. Live requests for generated entities are split sticky by
entity; the entities' true labels are then written to the label feed the way the generator
writes them (entity, event time, label; arriving today), the prediction log is flushed, and
`abtest.ab_outcomes` + `abtest.decide` judge the arms:

- champion: a model fitted on noisy labels (70% of them flipped, so it learns mostly the
  opposite); challenger: the lifecycle's model, fitted on the true labels. The challenger is
  truly better: it must win.
- champion and challenger: the same model (v1 and v2 of one run): inconclusive, champion kept.

Requests are bounded batches; every wait has a deadline and says what it saw.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, date, datetime

import httpx
import numpy as np
import pandas as pd
import pytest

from tests.integration.test_rollback_ends_rollout import (  # noqa: F401 - fixtures, used by name
    client,
    home,
    server,
    serving,
    store,
    v2,
)

pytestmark = [pytest.mark.serving, pytest.mark.integration]

ENTITIES = 600  # share 0.5: ~300 per arm
NOISE = 0.7  # the share of the noisy champion's training labels that are flipped
TRAFFIC_DAY = date(2026, 11, 2)  # the generator's day the features (and their labels) come from


@pytest.fixture(scope="module")
def noisy(home, client) -> str:  # noqa: F811
    """A version fitted on noisy labels (70% flipped): it answers, mostly wrong."""
    import mlflow

    from include.mlops.config import get_settings
    from include.mlops.data.generator import generate_day
    from include.mlops.features import build_features, model_features
    from include.mlops.registry import ensure_experiment
    from include.mlops.tracking import log_model
    from include.mlops.training import build_pipeline

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
def arms(home, client, server):  # noqa: F811
    """Sets the two arms and the ab_test strategy (share 0.5) as the deploy step would; after the
    test, v1 champion again and no split."""
    from include.mlops import registry as R
    from include.mlops.serving.config import CANARY_SHARE_TAG, STRATEGY_TAG

    name = home["spec"].model_name

    def start(champion: str, challenger: str) -> dict:
        client.set_registered_model_alias(name, R.CHAMPION, champion)
        client.set_registered_model_alias(name, R.CHALLENGER, challenger)
        client.set_registered_model_tag(name, STRATEGY_TAG, "ab_test")
        client.set_registered_model_tag(name, CANARY_SHARE_TAG, "0.5")
        return serving(server, champion=champion, challenger=challenger)

    yield start
    R.end_routing(client, name)
    client.set_registered_model_alias(name, R.CHAMPION, home["v1"])
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


def judge(spec, objects, answers, since, until, champion: str, challenger: str):
    """ab_outcomes + decide on the window, after checking the split and that every answer was read."""
    from include.mlops.delivery.abtest import ab_outcomes, decide

    per_arm = {arm: sum(v == (arm, ver) for v in answers.values()) for arm, ver in
               (("champion", champion), ("challenger", challenger))}  # fmt: skip
    assert sum(per_arm.values()) == ENTITIES, f"answers from other versions: {set(answers.values())}"
    assert 0.42 <= per_arm["challenger"] / ENTITIES <= 0.58, per_arm  # share 0.5, binomial sd 0.02
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


def test_ab_test_on_live_traffic_picks_the_truly_better_challenger(home, server, store, arms, noisy):  # noqa: F811
    spec, v1 = home["spec"], home["v1"]
    ready = arms(champion=noisy, challenger=v1)
    assert (ready["strategy"], ready["canary_share"]) == ("ab_test", 0.5)
    answers, since, until = live_test(server, spec, store, seed=31)
    result = judge(spec, store, answers, since, until, champion=noisy, challenger=v1)
    assert result.decision == "challenger" and result.promote and result.winner_version == v1, result.table()
    assert result.challenger_value > result.champion_value + 0.1 and result.ci_low > 0
    assert (result.champion_version, result.challenger_version) == (noisy, v1)


def test_ab_test_between_two_copies_of_one_model_is_inconclusive(home, server, store, arms, v2):  # noqa: F811
    spec, v1 = home["spec"], home["v1"]
    arms(champion=v1, challenger=v2)
    answers, since, until = live_test(server, spec, store, seed=47)
    result = judge(spec, store, answers, since, until, champion=v1, challenger=v2)
    assert result.decision == "inconclusive" and not result.promote and result.winner_version == v1, result.table()
    assert result.p_value >= result.significance and result.ci_low < 0 < result.ci_high
