"""The post-deployment verdict: the new version against the current one measured in the same
check, errors against the spec's rate, an absolute budget only where the spec sets one."""

from __future__ import annotations

import math

from include.mlops.delivery.checks import judge_load
from include.mlops.delivery.load import load_test


def arm(p95: float, errors: int = 0, requests: int = 200, **more: float) -> dict:
    return {
        "requests": requests,
        "errors": errors,
        "error_samples": ["504 scoring timed out"] * min(errors, 5),
        "p50_ms": more.get("p50", p95 / 2),
        "p95_ms": p95,
        "p99_ms": more.get("p99", p95 * 1.5),
    }


def judge(new, current, ratio=3.0, rate=0.0, budget=None):
    return judge_load(new, current, max_latency_ratio=ratio, max_error_rate=rate, latency_budget_ms=budget)


def test_a_busy_machine_slows_both_versions_alike_and_passes():
    # what failed the demo: p99 521 ms against an absolute 500 ms, with the current version as slow
    reasons, figures = judge(arm(400, p99=521), {**arm(380, p99=510), "version": "1"})
    assert reasons == []
    assert figures["ratios"]["p95"] == round(400 / 380, 3) and figures["baseline"] == "v1"


def test_a_version_three_times_slower_than_the_current_one_fails():
    reasons, figures = judge(arm(93.0, p50=20.0), {**arm(30.0, p50=20.0), "version": "4"})
    assert figures["ratios"] == {"p50": 1.0, "p95": 3.1} and figures["latency_ratio"] == 3.1
    assert reasons == [
        "load test: the new version's p95 93 ms is 3.10x the current version's 30 ms (limit 3x, same check, interleaved)"
    ]


def test_a_model_slower_on_every_request_fails_even_when_the_machine_swamps_the_tail():
    # a model sleeping 0.5 s a call beside a current version with a 290 ms p95 on busy cores
    reasons, figures = judge(arm(700.0, p50=520.0), {**arm(290.0, p50=60.0), "version": "1"})
    assert figures["ratios"] == {"p50": 8.667, "p95": 2.414} and figures["latency_ratio"] == 8.667
    assert len(reasons) == 1 and "p50 520 ms is 8.67x the current version's 60 ms" in reasons[0]


def test_the_limit_itself_passes_and_the_ratio_is_configurable():
    assert judge(arm(90.0), arm(30.0))[0] == []
    assert judge(arm(90.0), arm(30.0), ratio=2.0)[0] != []


def test_errors_fail_above_the_spec_rate_and_name_the_current_versions_errors():
    reasons, figures = judge(arm(10, errors=2), arm(10, errors=0))
    assert figures["error_rate"] == 0.01
    assert "2 of 200 requests to the new version failed" in reasons[0] and "current version: 0 of 200" in reasons[0]
    assert judge(arm(10, errors=2), arm(10), rate=0.02)[0] == []


def test_the_first_champion_is_judged_on_errors_and_an_explicit_budget_only():
    reasons, figures = judge(arm(5_000), None)
    assert reasons == [] and figures["latency_ratio"] is None and figures["baseline"].startswith("none")
    reasons, _ = judge(arm(10, errors=1), None)
    assert "1 of 200 requests" in reasons[0]


def test_an_absolute_budget_applies_only_when_the_spec_sets_one():
    reasons, _ = judge(arm(100, p99=521), arm(100, p99=500), budget={"p99": 500})
    assert reasons == ["load test: p99 521 ms over the budget of 500 ms"]
    assert judge(arm(100, p99=521), arm(100, p99=500), budget={})[0] == []


def test_a_latency_that_could_not_be_measured_fails():
    reasons, _ = judge(arm(math.nan), arm(10))
    assert reasons and "x the current version" in reasons[0]
    assert judge(arm(10, requests=0), None)[0] == ["load test: the new version answered no request"]


def test_the_load_test_interleaves_both_versions_in_blocks_from_the_same_clients():
    """Against a real HTTP server that records the order of the pinned versions it is asked for."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from include.mlops.delivery.service import ServiceHandle

    seen: list[str] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            v = self.headers.get("X-MLOps-Model-Version") or "routed"
            with lock:
                seen.append(v)
            body = json.dumps({"predictions": [{"variant": "pinned", "model_version": v}]}).encode()
            self.send_response(500 if v == "bad" else 200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        h = ServiceHandle(f"http://127.0.0.1:{srv.server_address[1]}")
        arms = {"new": {"X-MLOps-Model-Version": "2"}, "current": {"X-MLOps-Model-Version": "1"}}
        out = load_test(h, None, [{"x": 1}], [7], requests=20, concurrency=2, warmup=2, arms=arms)
    finally:
        srv.shutdown()
    assert out["interleaved"] and out["arms"]["new"]["requests"] == out["arms"]["current"]["requests"] == 20
    assert out["requests"] == 20 and out["errors"] == 0  # the top level is the new version's
    # warm-up 2 + 2, then blocks of 2 x concurrency = 4, in the order new, current, current, new, ...
    assert seen[:4] == ["2", "2", "1", "1"]
    blocks = [seen[i : i + 4] for i in range(4, len(seen), 4)]
    assert [b[0] for b in blocks] == ["2", "1", "1", "2", "2", "1", "1", "2", "2", "1"]
    assert all(len(set(b)) == 1 for b in blocks)  # a block never mixes versions
