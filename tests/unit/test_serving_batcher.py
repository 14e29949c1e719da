"""Micro-batches mixing versions: a model that fails fails only the requests routed to it, and
every failed request is counted against the version and variant it was routed to."""

from __future__ import annotations

import asyncio
from datetime import date

import pytest
from prometheus_client.parser import text_string_to_metric_families

from include.mlops.serving.batcher import Batcher, Job, ModelError, Task
from include.mlops.serving.frames import FrameBuilder
from include.mlops.serving.loading import LoadedModel
from include.mlops.serving.metrics import Metrics
from include.mlops.serving.validation import RecordValidator
from include.mlops.spec import load_spec
from tests.support.canary_models import FailsOn, fault_point, faulty_record


@pytest.fixture(scope="module")
def setup():
    from include.mlops.data.generator import generate_day
    from include.mlops.features.build import build_features, model_features
    from include.mlops.training.fit import build_pipeline

    spec = load_spec("churn")
    events, labels = generate_day(spec, date(2026, 10, 1), rows=300)
    feats = model_features(spec)
    model = build_pipeline(spec, {"max_iter": 20}).fit(build_features(events, spec)[feats], labels[spec.label])
    classes = [int(c) for c in model.classes_]

    def loaded(version: str, m) -> LoadedModel:
        return LoadedModel(spec.model_name, version, m, feats, classes, 1, RecordValidator(spec))

    records = [{f: r[f] for f in spec.feature_names} for r in events.head(6).to_dict("records")]
    column, value = fault_point(spec)
    return {
        "spec": spec,
        "champion": loaded("1", model),
        "canary": loaded("2", FailsOn(model, column, value)),
        "records": records,
    }


def _row(spec, record) -> list:
    return [float(record[f]) if isinstance(record[f], int | float) else record[f] for f in spec.feature_names]


def _job(setup, i: int, model: LoadedModel, variant: str, faulty: bool) -> Job:
    spec = setup["spec"]
    rec = faulty_record(setup["records"][i], spec) if faulty else setup["records"][i]
    return Job([Task(100 + i, _row(spec, rec), ("body", "records", 0), f"r{i}", variant, model)], ts=0.0, log=False)


def _batcher(spec, metrics: Metrics) -> Batcher:
    return Batcher(spec, FrameBuilder(spec), lookup=None, predlog=None, metrics=metrics, inline=False)


def _samples(metrics: Metrics, name: str) -> dict[tuple, float]:
    text = metrics.render()[0].decode()
    return {
        tuple(sorted(s.labels.items())): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == name
    }


def test_a_failing_canary_fails_only_its_own_requests_in_a_shared_batch(setup):
    """Both versions get the row the canary cannot score, in one micro-batch: the champion's
    requests are answered, the canary's fail with a ModelError naming (version, variant)."""
    metrics = Metrics()
    champ, canary = setup["champion"], setup["canary"]
    jobs = [
        _job(setup, 0, champ, "champion", faulty=True),
        _job(setup, 1, canary, "challenger", faulty=True),
        _job(setup, 2, champ, "champion", faulty=False),
        _job(setup, 3, canary, "challenger", faulty=False),
    ]
    results, shadow = _batcher(setup["spec"], metrics)._score(jobs)
    assert shadow is None
    assert isinstance(results[1], ModelError) and results[1].failed == (("2", "challenger"),)
    for i in (0, 2):
        assert [(r[3].version, r[4]) for r in results[i]] == [("1", "champion")]
    assert [(r[3].version, r[4]) for r in results[3]] == [("2", "challenger")]
    # the canary's good row shared a model call with its bad one: retried alone, it is answered
    predicted = _samples(metrics, "mlops_serving_predictions_total")
    assert predicted == {
        (("model_version", "1"), ("variant", "champion")): 2.0,
        (("model_version", "2"), ("variant", "challenger")): 1.0,
    }


def test_the_same_model_under_two_variants_is_scored_and_counted_per_variant(setup):
    """A pinned check request and a champion request may hold the same model object: each
    variant is its own group, so counters never lend one variant's rows to the other."""
    metrics = Metrics()
    champ = setup["champion"]
    jobs = [_job(setup, 0, champ, "champion", False), _job(setup, 1, champ, "pinned", False)]
    results, _ = _batcher(setup["spec"], metrics)._score(jobs)
    assert [r[0][4] for r in results] == ["champion", "pinned"]
    predicted = _samples(metrics, "mlops_serving_predictions_total")
    assert predicted == {
        (("model_version", "1"), ("variant", "champion")): 1.0,
        (("model_version", "1"), ("variant", "pinned")): 1.0,
    }
    scoring = _samples(metrics, "mlops_serving_scoring_seconds_count")
    assert set(scoring) == {
        (("model_version", "1"), ("variant", "champion")),
        (("model_version", "1"), ("variant", "pinned")),
    }


def test_submitted_together_the_champions_request_is_answered_and_the_canarys_raises(setup):
    """Through the event loop, as the service runs it: both requests queued before the loop
    takes a batch (one batch), one answered, one failed."""

    async def run():
        b = _batcher(setup["spec"], Metrics())
        await b.start()
        try:
            b.arriving = 1  # another request "arriving": the loop waits for stragglers, one batch
            futs = [
                asyncio.ensure_future(b.submit(_job(setup, 0, setup["champion"], "champion", True), timeout=30)),
                asyncio.ensure_future(b.submit(_job(setup, 1, setup["canary"], "challenger", True), timeout=30)),
            ]
            b.arriving = 0
            return await asyncio.gather(*futs, return_exceptions=True)
        finally:
            await b.stop()

    answered, failed = asyncio.run(run())
    assert answered[0][3].version == "1" and answered[0][4] == "champion"
    assert isinstance(failed, ModelError) and failed.failed == (("2", "challenger"),)


def test_failed_requests_are_counted_with_the_version_and_variant_they_were_routed_to():
    """The service's request counters: a routed failure names its version and variant; one
    that failed before routing (bad input) carries empty labels."""
    from include.mlops.config import ServeConfig
    from include.mlops.serving.service import Service

    svc = Service(ServeConfig())
    svc.metrics = Metrics()
    status, kind, _, _ = svc._failure(ModelError("v2 could not score", (("2", "challenger"),)), "predict")
    svc._count("predict", status, kind, [("2", "challenger")], 0.02)
    svc._count("predict", 200, "", [("1", "champion")], 0.004)
    status, kind, _, _ = svc._failure(TimeoutError(), "predict")
    svc._count("predict", status, kind, [("1", "champion")], 30.0)
    svc._count("predict", 422, "value_error.missing", [], 0.001)
    requests = _samples(svc.metrics, "mlops_serving_requests_total")

    def key(status: str, version: str, variant: str) -> tuple:
        return tuple(
            sorted({"endpoint": "predict", "status": status, "model_version": version, "variant": variant}.items())
        )

    assert requests == {
        key("500", "2", "challenger"): 1.0,
        key("200", "1", "champion"): 1.0,
        key("504", "1", "champion"): 1.0,
        key("422", "", ""): 1.0,
    }
    latency = _samples(svc.metrics, "mlops_serving_request_latency_seconds_count")
    assert latency[(("endpoint", "predict"), ("model_version", "2"), ("variant", "challenger"))] == 1.0


def test_a_slow_canary_in_the_same_batch_does_not_delay_the_champions_answer(setup):
    """The batch is split: the champion's request is answered before the canary's model call
    (0.5 s) starts, so its latency is its own; the canary's request waits for its own model."""
    from tests.support.slow_model import SlowModel

    champ = setup["champion"]
    slow = LoadedModel(champ.name, "3", SlowModel(champ.model, delay=0.5), champ.input_columns, champ.classes, 1,
                       champ.validator)  # fmt: skip

    async def run():
        b = _batcher(setup["spec"], Metrics())
        await b.start()
        loop = asyncio.get_running_loop()
        done: dict[str, float] = {}

        async def timed(name: str, job: Job) -> None:
            await b.submit(job, timeout=30)
            done[name] = loop.time()

        try:
            t0 = loop.time()
            b.arriving = 1  # as if a request were still arriving: the loop waits for stragglers, one batch
            futs = [
                asyncio.ensure_future(timed("canary", _job(setup, 1, slow, "challenger", False))),
                asyncio.ensure_future(timed("champion", _job(setup, 0, champ, "champion", False))),
            ]
            b.arriving = 0
            await asyncio.gather(*futs)
            return {k: v - t0 for k, v in done.items()}
        finally:
            await b.stop()

    took = asyncio.run(run())
    assert took["canary"] >= 0.5 and took["champion"] < took["canary"] - 0.3, took
