"""The load test of a running service: single-record requests from a few keep-alive clients,
one or several arms (versions pinned by header) interleaved so the machine's noise falls on each
alike. `checks.run_check` runs it after the smoke test and judges it (`checks.judge_load`)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from include.mlops.delivery.service import SYNTHETIC, ServiceHandle

if TYPE_CHECKING:
    import httpx

    from include.mlops.spec import DatasetSpec


def load_test(
    h: ServiceHandle,
    spec: DatasetSpec,
    records: list[dict[str, Any]],
    ids: list[int],
    *,
    requests: int = 200,
    concurrency: int = 4,
    warmup: int | None = None,
    arms: dict[str, dict[str, str]] | None = None,
) -> dict[str, Any]:
    """Single-record requests from `concurrency` keep-alive clients; one in four by entity id.

    `arms` names the traffic to compare, each with the headers that select it (default: one arm,
    "new", routed as the service routes users). With several arms, each gets `requests`
    requests, interleaved in blocks of `2 * concurrency` (order ABBA...) from the same clients:
    whatever the machine does meanwhile falls on every arm alike, and a slow model's queue does
    not spill into the other arm's block. The figures of the first arm are at the top level; every
    arm's are under "arms".

    A warm-up round of `warmup` requests per arm (default: two per client, both kinds) goes first
    and is not counted: a version just loaded pays its first-call costs there (lazy imports, the
    first online-store read, connection set-up), which belong to start-up, not to the p99 users see.
    """
    arms = arms or {"new": {}}
    if warmup is None:
        warmup = 2 * max(1, concurrency)
    names = list(arms)
    plan, counted_from = _load_plan(names, requests, 2 * max(1, concurrency), warmup)
    t0 = time.perf_counter()
    per_block = _fire_blocks(h, records, ids, plan, concurrency, arms)
    wall = time.perf_counter() - t0
    counted = per_block[counted_from:]
    stats = {a: _arm_stats(*_arm_totals(counted, a), wall / len(names)) for a in names}
    first = stats[names[0]]
    return {
        **first,
        "concurrency": concurrency,
        "warmup_requests": warmup,
        "interleaved": len(names) > 1,
        "arms": stats if len(names) > 1 else {},
    }


def _load_plan(names: list[str], requests: int, block: int, warmup: int) -> tuple[list[tuple[str, int]], int]:
    """The (arm, requests) blocks in the order they are sent: a warm-up block per arm, then
    `requests` per arm in blocks of `block`, the arms' order reversed every round (ABBA...).
    Also the index of the first counted block (the warm-up is not counted)."""
    plan: list[tuple[str, int]] = []
    if warmup:
        plan += [(a, warmup) for a in names]
    counted_from = len(plan)
    rounds = -(-requests // block)
    for r in range(rounds):
        n = min(block, requests - r * block)
        order = names if r % 2 == 0 else names[::-1]
        plan += [(a, n) for a in order]
    return plan, counted_from


def _arm_totals(
    blocks: list[tuple[str, tuple[list[float], list[str], dict[str, int]]]], arm: str
) -> tuple[list[float], list[str], dict[str, int]]:
    """One arm's latencies, errors and variant counts, summed over its blocks."""
    lat = [x for a, res in blocks if a == arm for x in res[0]]
    errors = [x for a, res in blocks if a == arm for x in res[1]]
    variants: dict[str, int] = {}
    for a, res in blocks:
        if a == arm:
            for k, v in res[2].items():
                variants[k] = variants.get(k, 0) + v
    return lat, errors, variants


def _arm_stats(lat: list[float], errors: list[str], variants: dict[str, int], wall: float) -> dict[str, Any]:
    lat = sorted(lat)

    def pct(p: float) -> float:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 2) if lat else float("nan")

    answered = len(lat) - len(errors)
    return {
        "requests": len(lat),
        "errors": len(errors),
        "error_samples": errors[:5],
        "rps": round(answered / wall, 1) if wall > 0 else 0.0,
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "variants": variants,
    }


def _fire_blocks(
    h: ServiceHandle,
    records: list[dict[str, Any]],
    ids: list[int],
    plan: list[tuple[str, int]],
    concurrency: int,
    arms: dict[str, dict[str, str]],
) -> list[tuple[str, tuple[list[float], list[str], dict[str, int]]]]:
    """Run the blocks of `plan` in order, each by `concurrency` persistent client threads; a
    block starts when the previous one has answered. Per block: latencies, errors, variants."""
    import queue
    import threading

    import httpx

    from include.mlops.waits import seconds

    timeout = seconds("MLOPS_DEPLOY_REQUEST_TIMEOUT")
    jobs: queue.Queue[tuple[int, str, int] | None] = queue.Queue()
    lock = threading.Lock()
    out: list[tuple[str, tuple[list[float], list[str], dict[str, int]]]] = [(a, ([], [], {})) for a, _ in plan]

    def worker() -> None:
        with httpx.Client(base_url=h.url, headers=SYNTHETIC, timeout=timeout) as c:
            while True:
                job = jobs.get()
                try:
                    if job is None:
                        return
                    b, arm, i = job
                    dt, ok, variant, why = _timed_predict(c, _request_body(records, ids, i), arms[arm])
                    lat, errors, variants = out[b][1]
                    with lock:
                        lat.append(dt)
                        if ok:
                            variants[variant] = variants.get(variant, 0) + 1
                        else:
                            errors.append(why[:200])
                finally:
                    jobs.task_done()

    _run_plan(plan, jobs, [threading.Thread(target=worker, daemon=True) for _ in range(max(1, concurrency))])
    return out


def _request_body(records: list[dict[str, Any]], ids: list[int], i: int) -> dict[str, Any]:
    """The i-th request: one in four by entity id (when there are ids), the others by features."""
    if ids and i % 4 == 3:
        return {"entity_ids": [ids[i % len(ids)]]}
    return {"records": [records[i % len(records)]]}


def _timed_predict(
    c: httpx.Client, body: dict[str, Any], headers: dict[str, str]
) -> tuple[float, bool, str | None, str]:
    """One /predict request: (seconds, answered, variant that answered, why it failed)."""
    t0 = time.perf_counter()
    try:
        r = c.post("/predict", json=body, headers=headers)
        dt = time.perf_counter() - t0
        ok = r.status_code == 200
        variant = r.json()["predictions"][0]["variant"] if ok else None
        why = "" if ok else f"{r.status_code} {r.text[:150]}"
    except Exception as exc:  # a timeout is this request's error, not the check's end
        dt, ok, variant, why = time.perf_counter() - t0, False, None, f"{type(exc).__name__}: {exc}"
    return dt, ok, variant, why


def _run_plan(plan: list[tuple[str, int]], jobs: Any, threads: list[Any]) -> None:
    """Start the worker threads, queue the blocks one at a time (each waits for the previous to
    be answered), then stop the workers (one None each) and join them."""
    for t in threads:
        t.start()
    seq = 0
    try:
        for b, (arm, n) in enumerate(plan):
            for _ in range(n):
                jobs.put((b, arm, seq))
                seq += 1
            jobs.join()
    finally:
        for _ in threads:
            jobs.put(None)
        for t in threads:
            t.join()
