"""Live traffic for a scoring service under test: requests at a steady rate from a thread pool.

Each request is one record (or `records_per_request`) for an entity drawn from a fixed
population, its features a row sampled from the dataset's newest staged batch (as the deploy
check's inputs are). Canary routing is sticky by entity (`serving.routing.bucket`), so a fixed
population gives each variant a stable set of entities. `faulty_rows_for=(lo, hi)` plants the
fault value (`canary_models.faulty_record`) in the rows of entities whose bucket lies in
[lo, hi): with a canary share above `lo` those entities reach the canary, and a faulty canary
fails on exactly them while the champion scores everything else.

    traffic = LiveTraffic(url, spec, rows, rate=20).start()
    ...                                   # the rollout's phase waits, is judged
    summary = traffic.stop()              # bounded: stops sending, waits for answers in flight
    summary.answers[("challenger", "3")], summary.statuses[500]

Nothing here asserts: the counts are what the test compares with the service's own figures.
The requests carry no synthetic header, so the service logs them as real traffic.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrafficSummary:
    """What the generator saw: answers per (variant, version), statuses, latencies per variant."""

    sent: int = 0
    skipped: int = 0  # not sent: the pool was saturated (the rate is above what the service takes)
    answers: Counter = field(default_factory=Counter)  # (variant, version) -> records answered
    statuses: Counter = field(default_factory=Counter)  # HTTP status (0: no answer) -> requests
    faulty_sent: int = 0
    latency: dict[str, list[float]] = field(default_factory=dict)  # variant -> seconds, answered requests
    errors: list[str] = field(default_factory=list)  # the first few failures, for messages

    def by_version(self) -> dict[str, int]:
        out: Counter = Counter()
        for (_, version), n in self.answers.items():
            out[version] += n
        return dict(out)


def sample_rows(spec: Any, store: Any, n: int = 200) -> list[dict[str, Any]]:
    """Feature records from the newest staged batch (the entity key dropped: traffic sets it)."""
    from include.mlops.delivery.checks import sample_inputs

    records, _ = sample_inputs(spec, store, n=n)
    return [{k: v for k, v in r.items() if k != spec.entity_key} for r in records]


class LiveTraffic:
    """Steady live requests to `url`/predict until `stop`; thread-safe counts in `summary`."""

    def __init__(
        self,
        url: str,
        spec: Any,
        rows: list[dict[str, Any]],
        *,
        rate: float = 20.0,
        entities: int = 400,
        first_entity: int = 500_000,
        workers: int = 4,
        records_per_request: int = 1,
        faulty_rows_for: tuple[float, float] | None = None,
        timeout: float = 15.0,
        seed: int = 0,
    ) -> None:
        from include.mlops.features.build import entity_value

        if not rows:
            raise ValueError("no rows to send: give sampled feature records (sample_rows)")
        self.url, self.spec, self.rows = url.rstrip("/"), spec, rows
        self.rate, self.workers, self.per_request, self.timeout = rate, workers, records_per_request, timeout
        self.population = [entity_value(spec, first_entity + i) for i in range(entities)]
        self.faulty_rows_for = faulty_rows_for
        self.summary = TrafficSummary()
        self._rnd = random.Random(seed)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._inflight = 0
        self._pool: ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None
        self._http: Any = None

    # -- building requests ----------------------------------------------------------------------
    def is_faulty(self, entity: Any) -> bool:
        from include.mlops.serving.routing import bucket

        if self.faulty_rows_for is None:
            return False
        lo, hi = self.faulty_rows_for
        return lo <= bucket(entity) < hi

    def record(self, entity: Any) -> tuple[dict[str, Any], bool]:
        from tests.support.canary_models import faulty_record

        rec = {**self._rnd.choice(self.rows), self.spec.entity_key: entity}
        if self.is_faulty(entity):
            return faulty_record(rec, self.spec), True
        return rec, False

    # -- running ---------------------------------------------------------------------------------
    def start(self) -> LiveTraffic:
        import httpx

        self._http = httpx.Client(timeout=self.timeout, limits=httpx.Limits(max_connections=self.workers + 2))
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="live-traffic")
        self._thread = threading.Thread(target=self._pace, name="live-traffic-pacer", daemon=True)
        self._thread.start()
        return self

    def __enter__(self) -> LiveTraffic:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _pace(self) -> None:
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        while not self._stop.is_set():
            with self._lock:
                saturated = self._inflight >= self.workers * 2
                if not saturated:
                    self._inflight += 1
            if saturated:
                with self._lock:
                    self.summary.skipped += 1
            else:
                batch = [self.record(self._rnd.choice(self.population)) for _ in range(self.per_request)]
                assert self._pool is not None
                self._pool.submit(self._send, batch)
            next_at += interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def _send(self, batch: list[tuple[dict[str, Any], bool]]) -> None:
        records = [r for r, _ in batch]
        faulty = sum(f for _, f in batch)
        t0 = time.perf_counter()
        status, preds, error = 0, [], ""
        try:
            r = self._http.post(f"{self.url}/predict", json={"records": records})
            status = r.status_code
            if status == 200:
                preds = r.json()["predictions"]
            else:
                error = f"{status}: {r.text[:200]}"
        except Exception as exc:  # no answer (timeout, refused): counted as status 0
            error = f"{type(exc).__name__}: {exc}"
        elapsed = time.perf_counter() - t0
        with self._lock:
            self._inflight -= 1
            s = self.summary
            s.sent += 1
            s.faulty_sent += faulty
            s.statuses[status] += 1
            for p in preds:
                s.answers[(p["variant"], str(p["model_version"]))] += 1
            if preds:
                s.latency.setdefault(preds[0]["variant"], []).append(elapsed)
            if error and len(s.errors) < 10:
                s.errors.append(error)

    def wait_for(self, done: Any, timeout: float, what: str) -> TrafficSummary:
        """Wait (at most `timeout` s) until `done(summary)` holds while traffic runs."""
        deadline = time.monotonic() + timeout
        while not done(self.summary):
            if time.monotonic() > deadline:
                raise AssertionError(f"live traffic: {what} not reached in {timeout}s; so far {self.summary}")
            time.sleep(0.1)
        return self.summary

    def stop(self, deadline: float = 30.0) -> TrafficSummary:
        """Stop sending; wait at most `deadline` s for the answers in flight; the summary."""
        self._stop.set()
        end = time.monotonic() + deadline
        if self._thread is not None:
            self._thread.join(max(0.0, end - time.monotonic()))
        while self._inflight > 0 and time.monotonic() < end:
            time.sleep(0.05)
        if self._pool is not None:
            self._pool.shutdown(wait=self._inflight == 0, cancel_futures=True)
        if self._http is not None and self._inflight == 0:
            self._http.close()
        return self.summary
