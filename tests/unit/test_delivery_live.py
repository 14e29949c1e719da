"""Reading the live service's figures: /metrics text from the service's own Metrics class, the
percentiles interpolated from bucket deltas, and the prediction log of a window."""

from __future__ import annotations

import json
import math
import time

import pytest

from include.mlops.delivery import live
from include.mlops.serving.metrics import LATENCY_BUCKETS, Metrics


def _observe(m: Metrics, version: str, variant: str, seconds: list[float], status: str = "200") -> None:
    for s in seconds:
        m.requests.labels(endpoint="predict", status=status, model_version=version, variant=variant).inc()
        m.latency.labels(endpoint="predict", model_version=version, variant=variant).observe(s)


def _read(m: Metrics) -> live.MetricsSnapshot:
    return live.parse_metrics(m.render()[0].decode())


def test_quantile_interpolates_inside_the_bucket_that_holds_the_rank():
    # 10 observations: 4 in (0, 0.01], 4 in (0.01, 0.05], 2 in (0.05, 0.1]
    buckets = [(0.01, 4.0), (0.05, 8.0), (0.1, 10.0), (math.inf, 10.0)]
    assert live.quantile(0.5, buckets) == pytest.approx(0.01 + 0.04 * (5 - 4) / 4)  # 0.02
    assert live.quantile(0.95, buckets) == pytest.approx(0.05 + 0.05 * (9.5 - 8) / 2)  # 0.0875
    assert live.quantile(0.2, buckets) == pytest.approx(0.005)  # the first bucket starts at 0
    assert live.quantile(0.99, [(0.1, 5.0), (math.inf, 10.0)]) == 0.1  # in +Inf: the highest bound
    assert live.quantile(0.5, [(0.1, 0.0), (math.inf, 0.0)]) is None


def test_bucket_deltas_subtract_the_first_reading_and_survive_a_reset():
    before = [(0.01, 4.0), (0.1, 6.0), (math.inf, 6.0)]
    after = [(0.01, 5.0), (0.1, 10.0), (math.inf, 11.0)]
    assert live.bucket_deltas(before, after) == [(0.01, 1.0), (0.1, 4.0), (math.inf, 5.0)]
    restarted = [(0.01, 1.0), (0.1, 2.0), (math.inf, 2.0)]
    assert live.bucket_deltas(before, restarted) == restarted
    assert live.bucket_deltas(None, after) == after


def test_traffic_between_two_readings_of_the_services_own_metrics():
    """The champion answers at ~4 ms, the canary at ~40 ms and fails 3 of 20 (counted with its
    version and variant, as the service counts a routed failure)."""
    m = Metrics()
    _observe(m, "1", "champion", [0.004] * 30)
    _observe(m, "2", "challenger", [0.04] * 5)
    before = _read(m)
    _observe(m, "1", "champion", [0.003] * 50 + [0.006] * 50)
    _observe(m, "2", "challenger", [0.03] * 10 + [0.06] * 7)
    _observe(m, "2", "challenger", [0.2] * 3, status="500")
    _observe(m, "", "", [0.001] * 4, status="422")  # bad input, never routed
    after = _read(m)

    champ = live.traffic(before, after, "1", "champion")
    assert (champ.requests, champ.errors, champ.error_rate) == (100, 0, 0.0)
    # 50 in (0.0025, 0.005], 50 in (0.005, 0.0075]: p50 at the top of the first, p95 near the top of the second
    assert champ.p50_ms == pytest.approx(5.0)
    assert champ.p95_ms == pytest.approx(5.0 + 2.5 * 45 / 50)
    assert champ.mean_ms == pytest.approx(4.5)
    canary = live.traffic(before, after, "2", "challenger")
    assert (canary.requests, canary.errors) == (20, 3) and canary.error_rate == pytest.approx(0.15)
    assert canary.p50_ms == pytest.approx(25 + 25 * (10 - 0) / 10)  # 10 in (0.025, 0.05]: rank 10 is its top
    assert 100 < canary.p95_ms <= 250  # the failures' 200 ms are its slowest 15%
    assert canary.mean_ms == pytest.approx((10 * 30 + 7 * 60 + 3 * 200) / 20)
    nobody = live.traffic(before, after, "9", "challenger")
    assert (nobody.requests, nobody.error_rate, nobody.p95_ms, nobody.mean_ms) == (0, None, None, None)
    assert json.loads(json.dumps(canary.to_dict()))["errors"] == 3


def test_shadow_and_model_call_figures_per_version():
    m = Metrics()
    for _ in range(40):
        m.scoring.labels(model_version="1", variant="champion").observe(0.002)
        m.predictions.labels(model_version="1", variant="champion").inc()
        m.shadow_latency.labels(model_version="2").observe(0.02)
        m.predictions.labels(model_version="2", variant="shadow").inc()
    before = live.MetricsSnapshot(at=0.0)  # nothing before: the service just started
    m.shadow_errors.labels(model_version="2").inc(10)
    after = _read(m)
    shadow = live.shadow_traffic(before, after, "2")
    assert (shadow.requests, shadow.errors, shadow.error_rate) == (40, 10, pytest.approx(0.2))
    assert 15 <= shadow.p95_ms <= 25
    champ = live.scoring(before, after, "1", "champion")
    assert champ.requests == 40 and 1.0 <= champ.p95_ms <= 2.5
    assert after.shadow_rows("2") == 40


def test_a_snapshot_goes_through_json_unchanged():
    m = Metrics()
    _observe(m, "1", "champion", [0.004, 0.3, 7.0])
    m.shadow_errors.labels(model_version="3").inc(2)
    m.shadow_latency.labels(model_version="3").observe(0.01)
    snap = _read(m)
    text = snap.to_json()
    assert "Infinity" not in text  # strict JSON: +Inf bounds travel as text
    back = live.MetricsSnapshot.from_json(text)
    assert back == snap
    assert live.MetricsSnapshot.from_json(json.loads(text)) == snap
    assert back.latency_buckets[("1", "champion")][-1] == (math.inf, 3.0)
    assert len(back.latency_buckets[("1", "champion")]) == len(LATENCY_BUCKETS) + 1


def test_live_rows_reads_the_window_of_the_prediction_log(tmp_path):
    """Rows written by the service's own prediction log; the window and the variants filter."""
    from include.mlops.serving.frames import FrameBuilder
    from include.mlops.serving.predlog import LogBatch, PredictionLog
    from include.mlops.spec import load_spec
    from include.mlops.storage import ObjectStore, ensure_bucket

    spec = load_spec("churn")
    store = ObjectStore(f"file://{tmp_path / 'store'}")
    ensure_bucket(store)
    builder = FrameBuilder(spec)
    row = builder.probe_rows(1)[0]
    log = PredictionLog(store, spec, spec.model_name, flush_seconds=60, builder=builder)
    log.start()
    now = time.time()
    t = [now - 100, now - 10, now - 9, now - 8, now + 100]
    variants = ["champion", "champion", "challenger", "shadow", "champion"]
    log.submit(
        LogBatch([row] * 5, [f"r{i}" for i in range(5)], t, [1, 2, 3, 2, 4], [0, 1, 1, 1, 0],
                 [0.1, 0.7, 0.8, 0.9, 0.2], ["1", "1", "2", "2", "1"], variants)
    )  # fmt: skip
    assert log.flush()
    log.close()
    window = live.live_rows(store, spec, now - 60, now + 60)
    assert sorted(window["request_id"]) == ["r1", "r2", "r3"]
    answers = live.live_rows(store, spec, now - 60, now + 60, ("champion", "challenger"))
    assert sorted(zip(answers["variant"], answers["model_version"], strict=True)) == [
        ("challenger", "2"),
        ("champion", "1"),
    ]
    assert live.live_rows(store, spec, now + 1000, now + 2000).empty
