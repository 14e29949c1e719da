"""Deployment: promotion through the gate, checks against the running service, rollback.

`rollout` is the deploy step of `ml_training`. By strategy (the spec's
`deployment.strategy`, or the run's override):

| strategy | before the champion moves | the switch | after |
|---|---|---|---|
| direct | - | `promote` | smoke + load test on the new champion |
| blue_green | the service loads, warms and smoke-tests the new version beside the old one | `promote`: the service switches instantly | smoke + load test; a switch back is instant too |
| canary | the gate-passed challenger answers `canary_share` of the traffic (sticky per entity); smoke + load test of both variants | `promote` | smoke + load test |
| shadow | the challenger scores every request, answers nothing; the checks watch its errors in the service's metrics (also for a challenger the gate rejected, which then stays in shadow) | `promote` | smoke + load test |

A challenger the gate rejected is never promoted (`promote` says why, and that is not a
failure), and a run that deploys nothing leaves the service's strategy tags as they are. The
promotion is a ledger transaction (see `registry`): `pending` before the strategy is published
or any alias moves, `done` once the checks passed; a retry of the run finishes it, checks
included. When a check fails after the switch, `champion` goes back to the version it replaced
(ledger action `rollback_after_failed_check`) and the step raises `DeploymentCheckFailed`; when
a canary or shadow check fails, the champion never moved. Either way, and on every rollback, the
rollout ends: the `challenger` alias is removed and the strategy tags go back to `direct`, so the
service stops routing to (and shadow-scoring) that version at its next registry read. The checks
always run against a real service: the one at MLOPS_SERVE_URL when it answers and serves this
model, or one started for the check on a free loopback port and stopped afterwards. Requests rate and p50/p95/p99 latency of the load test
go into the model's MLflow run (`deploy_rps`, `deploy_p50_ms`, ...).

The strategy and canary share are published as tags of the registered model, which the
service follows, so a per-run override reaches the running service without a restart.

Heavy libraries are imported inside the functions: the DAG's deploy task pays only for what
it uses.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from include.mlops.spec import DatasetSpec
    from include.mlops.storage import ObjectStore

from include.mlops.constants import STRATEGIES

log = logging.getLogger(__name__)

SYNTHETIC = {"X-MLOps-Traffic": "synthetic"}  # check traffic stays out of the prediction log
# The latencies the check compares between the new and the current version; it fails when
# either ratio is over the limit. The median shows a model that is slower on every request even
# when a busy machine's tail swamps it (seen: a model sleeping 0.5 s a call was 2.4x at p95 beside
# a current version whose p95 was 290 ms on busy cores, 8x at p50); p95, one slower on some. Not
# p99: with a few hundred requests it is the second or third slowest, where the machine shows.
JUDGED_PERCENTILES = ("p50", "p95")


class DeploymentCheckFailed(Exception):
    """The new model failed its smoke or load test; the aliases were moved back.

    Besides the message it carries what the alerts read, never recognised from the text:
    `model` and `version` (the one being deployed; None where not known, e.g. a check helper),
    `rolled_back` (this rollout was undone: the champion went back, or a staged version was
    withdrawn before it went live) and `rolled_back_to` (the champion after that; None when
    there was none). Constructible with the message alone; pickles with its fields."""

    def __init__(
        self,
        message: str = "",
        *,
        model: str | None = None,
        version: str | None = None,
        rolled_back: bool = False,
        rolled_back_to: str | None = None,
    ) -> None:
        super().__init__(message)
        self.model = model
        self.version = None if version is None else str(version)
        self.rolled_back = rolled_back
        self.rolled_back_to = None if rolled_back_to is None else str(rolled_back_to)


# -- the service under test -----------------------------------------------------------------------
@dataclass
class ServiceHandle:
    url: str
    token: str | None = None
    proc: subprocess.Popen | None = None
    log_path: str | None = None
    started: bool = False

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def log_tail(self, n: int = 30) -> str:
        if not self.log_path or not os.path.exists(self.log_path):
            return ""
        return "\n".join(Path(self.log_path).read_text(errors="replace").splitlines()[-n:])

    def cleanup(self) -> None:
        """Remove the log of a service this module started (after `close`)."""
        if self.started and self.log_path and os.path.exists(self.log_path):
            os.unlink(self.log_path)

    def close(self) -> None:
        """Stop a service this module started (its own process only)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()  # uvicorn shuts down gracefully and flushes the prediction log
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service(
    env: dict[str, str] | None = None,
    timeout: float | None = None,
    port: int | None = None,
    until_ready: bool = True,
) -> ServiceHandle:
    """`python -m include.mlops.serving` on a free loopback port; returns once it is ready (serves
    a champion), or with `until_ready=False` once it answers at all (a service started before the
    first champion exists, as `make up` and the compose stack have it). Waits at most `timeout`
    seconds (default MLOPS_SERVICE_START_TIMEOUT), saying so while it waits."""
    import httpx

    from include.mlops.config import PROJECT_ROOT
    from include.mlops.waits import Wait, seconds

    timeout = timeout if timeout is not None else seconds("MLOPS_SERVICE_START_TIMEOUT")
    port = port or free_port()
    token = secrets.token_urlsafe(16)
    e = {**os.environ, **(env or {})}
    e.update(
        {
            "MLOPS_SERVE_HOST": "127.0.0.1",
            "MLOPS_SERVE_PORT": str(port),
            "MLOPS_ADMIN_TOKEN": token,
            "PYTHONPATH": os.pathsep.join(p for p in (str(PROJECT_ROOT), e.get("PYTHONPATH", "")) if p),
        }
    )
    e.setdefault("OMP_NUM_THREADS", "1")
    fd, log_path = tempfile.mkstemp(prefix="mlops-serve-", suffix=".log")
    with os.fdopen(fd, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "include.mlops.serving"],
            cwd=str(PROJECT_ROOT),
            env=e,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    h = ServiceHandle(f"http://127.0.0.1:{port}", token, proc, log_path, started=True)
    wait = Wait(f"the scoring service at {h.url} (pid {proc.pid}) to be ready", timeout, log_hint=log_path)
    status = "no answer yet"
    # one client for the whole wait: a client per poll builds an SSL context each time (~0.1 s
    # of CPU, taken from the service that is starting on the same cores)
    with httpx.Client(timeout=10) as http:
        while not wait.expired():
            if proc.poll() is not None:
                raise RuntimeError(
                    f"scoring service exited with code {proc.returncode} during start-up (log {log_path}):\n"
                    f"{h.log_tail()}"
                )
            try:
                r = http.get(f"{h.url}/ready")
                if r.status_code == 200 or not until_ready:
                    log.info("started a scoring service at %s (pid %s) in %.1fs", h.url, proc.pid, wait.elapsed)
                    return h
                pending = (r.json().get("pending") or {}).get("champion")
                status = f"/ready answered {r.status_code}, pending {pending}"
                if pending and "no champion" not in pending:  # the champion failed to load: no use waiting
                    h.close()
                    raise RuntimeError(f"the scoring service cannot serve the champion: {pending} (log {log_path})")
            except (httpx.HTTPError, ValueError) as exc:  # still starting, or slow to answer: not a failure
                status = f"{type(exc).__name__}"
            wait.tick(status)
            time.sleep(0.5)
    h.close()
    raise RuntimeError(f"{wait.give_up(status)}\n{h.log_tail()}")


def usable_service(status_code: int, body: dict[str, Any], model_name: str) -> bool:
    """Whether a running service can take this model's check: it serves the model, or it is
    that model's service waiting for its first champion (no alias yet, or no registry read yet:
    the deploy step makes it read the registry and load the new one). Another model, or a
    champion that failed to load, needs a service of its own."""
    if body.get("model_name") != model_name:
        return False
    if status_code == 200:
        return True
    pending = str((body.get("pending") or {}).get("champion") or "")
    return body.get("champion") is None and (not pending or "no champion" in pending)


def service_for_check(model_name: str, env: dict[str, str] | None = None) -> ServiceHandle:
    """The running service (MLOPS_SERVE_URL) if it can take this model's check, else a fresh one."""

    url = (os.environ.get("MLOPS_SERVE_URL") or "").rstrip("/")
    if url:
        try:
            r = _get_patiently(url + "/ready", f"MLOPS_SERVE_URL={url} to answer /ready")
            body = r.json()
            if usable_service(r.status_code, body, model_name):
                if r.status_code != 200:
                    log.info("MLOPS_SERVE_URL=%s has no champion yet: the check loads the first one there", url)
                return ServiceHandle(url, os.environ.get("MLOPS_ADMIN_TOKEN") or None)
            log.warning(
                "MLOPS_SERVE_URL=%s is not ready for %s (%s: %s): starting a service for the check",
                url,
                model_name,
                r.status_code,
                body.get("pending"),
            )
        except Exception as exc:
            log.warning("MLOPS_SERVE_URL=%s does not answer (%s): starting a service for the check", url, exc)
    return start_service(env)


def _get_patiently(url: str, what: str, budget: float = 60.0) -> Any:
    """GET `url`, retrying timeouts (a busy machine) for up to `budget` s; a refused connection
    is an answer (nothing listens there) and raises at once."""
    import httpx

    from include.mlops.waits import Wait, seconds

    wait = Wait(what, budget)
    while True:
        try:
            return httpx.get(url, timeout=min(seconds("MLOPS_DEPLOY_REQUEST_TIMEOUT"), max(wait.left, 1.0)))
        except httpx.TimeoutException as exc:
            if wait.expired():
                raise
            wait.tick(type(exc).__name__)
            time.sleep(1)


def refresh(h: ServiceHandle, timeout: float = 120.0) -> dict[str, Any]:
    """Make the service read the registry now (admin token), or let its poll do it. A reload that
    does not answer in time is not a failure: the service's own poll follows the registry too."""
    import httpx

    if h.token:
        try:
            r = httpx.post(
                f"{h.url}/admin/reload",
                params={"wait": "true", "timeout": timeout},
                headers=h.headers(),
                timeout=timeout + 10,
            )
            if r.status_code == 200:
                return r.json()
            log.warning("POST /admin/reload answered %s: waiting for the service's own poll", r.status_code)
        except httpx.HTTPError as exc:
            log.warning("POST /admin/reload did not answer (%s): waiting for the service's own poll", exc)
    try:
        return httpx.get(f"{h.url}/ready", timeout=30).json()
    except (httpx.HTTPError, ValueError) as exc:
        return {"error": str(exc)}


def wait_for(
    h: ServiceHandle,
    *,
    champion: str | None = None,
    challenger: str | None = None,
    standby: str | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Until the service serves the expected versions (at most `timeout` s, default
    MLOPS_DEPLOY_WAIT_TIMEOUT); fails fast when it reports a load error."""
    import httpx

    from include.mlops.waits import Wait, seconds

    timeout = timeout if timeout is not None else seconds("MLOPS_DEPLOY_WAIT_TIMEOUT")
    wanted = f"champion={champion} challenger={challenger} standby={standby}"
    wait = Wait(f"the service at {h.url} to serve {wanted}", timeout, log_hint=h.log_path or "the service's own log")
    status: dict[str, Any] = {}
    refresh(h, min(timeout, 120.0))
    with httpx.Client(timeout=30) as http:
        while not wait.expired():
            status = _ready(http, h)
            ok = (
                (champion is None or (status.get("champion") or {}).get("version") == champion)
                and (challenger is None or (status.get("challenger") or {}).get("version") == challenger)
                and (standby is None or standby in (status.get("standby") or []))
            )
            if ok and status.get("status") == "ready":
                return status
            pending = " ".join(str(v) for v in (status.get("pending") or {}).values())
            for v in (champion, challenger, standby):
                if v and f"v{v}:" in pending and ("Error" in pending or "Failed" in pending or "Mismatch" in pending):
                    raise DeploymentCheckFailed(f"the service could not load v{v}: {pending}")
            wait.tick(_serving(status))
            time.sleep(0.5)
    raise DeploymentCheckFailed(str(wait.give_up(_serving(status))))


def _serving(status: dict[str, Any]) -> str:
    if "error" in status:
        return f"no answer ({status['error']})"
    return (
        f"it reports champion={(status.get('champion') or {}).get('version')}, "
        f"challenger={(status.get('challenger') or {}).get('version')}, pending={status.get('pending')}"
    )


def _ready(http: Any, h: ServiceHandle) -> dict[str, Any]:
    try:
        return http.get(f"{h.url}/ready").json()
    except Exception as exc:
        return {"error": str(exc)}


# -- known inputs -----------------------------------------------------------------------------------
def sample_inputs(spec: DatasetSpec, store: ObjectStore, n: int = 50) -> tuple[list[dict[str, Any]], list[int]]:
    """Feature records (with the entity key) and entity ids from the newest staged batch."""
    import json

    keys = sorted(k for k in store.list(f"staging/{spec.name}/events/") if k.endswith(".parquet"))
    if not keys:
        raise DeploymentCheckFailed(f"no staged batch of {spec.name} to take known inputs from")
    df = store.get_parquet(keys[-1])
    df = df.head(n)
    records = json.loads(df[[spec.entity_key, *spec.feature_names]].to_json(orient="records"))
    from include.mlops.features import entity_value

    return records, [entity_value(spec, i) for i in df[spec.entity_key]]  # ids in the key's type (entity.dtype)


# -- checks -------------------------------------------------------------------------------------------
def smoke_test(
    h: ServiceHandle, spec: DatasetSpec, records: list[dict[str, Any]], ids: list[int], versions: set[str]
) -> dict[str, Any]:
    """Known inputs through every door; the answers must have the expected schema and versions."""
    import math

    import httpx

    logging.getLogger("httpx").setLevel(logging.WARNING)  # not one log line per check request
    failures: list[str] = []
    checks = 0

    def expect(cond: bool, what: str) -> None:
        nonlocal checks
        checks += 1
        if not cond:
            failures.append(what)

    def check_prediction(p: dict[str, Any], where: str) -> None:
        keys = {"request_id", "prediction", "score", "probabilities", "model_name", "model_version", "variant"}
        expect(keys <= set(p), f"{where}: answer lacks {sorted(keys - set(p))}")
        expect(p.get("model_name") == spec.model_name, f"{where}: model_name {p.get('model_name')}")
        expect(
            str(p.get("model_version")) in versions,
            f"{where}: version {p.get('model_version')} not in {sorted(versions)}",
        )
        s = p.get("score")
        expect(isinstance(s, (int, float)) and math.isfinite(s), f"{where}: score {s!r}")
        if spec.is_classification:  # binary or multiclass: a class value and one probability per class
            probs = p.get("probabilities") or {}
            expect(0.0 <= (s if isinstance(s, (int, float)) else -1) <= 1.0, f"{where}: score {s!r} outside [0, 1]")
            expect(abs(sum(probs.values()) - 1.0) < 1e-6 if probs else False, f"{where}: probabilities {probs}")
            expect(str(p.get("prediction")) in probs, f"{where}: prediction {p.get('prediction')!r} is not a class")

    with httpx.Client(base_url=h.url, headers=SYNTHETIC, timeout=30) as c:
        r = c.get("/ready")
        expect(r.status_code == 200, f"/ready answered {r.status_code}")
        batch = records[:5]
        r = c.post("/predict", json={"records": batch})
        expect(r.status_code == 200, f"/predict by features answered {r.status_code}: {r.text[:300]}")
        if r.status_code == 200:
            preds = r.json().get("predictions", [])
            expect(len(preds) == len(batch), f"/predict by features: {len(preds)} answers for {len(batch)} records")
            for i, p in enumerate(preds):
                check_prediction(p, f"/predict features[{i}]")
        if ids:
            r = c.post("/predict", json={"entity_ids": ids[:3]})
            expect(r.status_code == 200, f"/predict by entity id answered {r.status_code}: {r.text[:300]}")
            if r.status_code == 200:
                for i, p in enumerate(r.json().get("predictions", [])):
                    check_prediction(p, f"/predict entity[{i}]")
        r = c.post(
            "/invocations",
            json={"dataframe_records": [{k: v for k, v in rec.items() if k != spec.entity_key} for rec in batch[:2]]},
        )
        expect(r.status_code == 200, f"/invocations answered {r.status_code}: {r.text[:300]}")
        if r.status_code == 200:
            preds = r.json().get("predictions", [])
            expect(len(preds) == 2, f"/invocations: {len(preds)} answers for 2 records")
        required = next(f.name for f in spec.features if f.required)
        bad = {k: v for k, v in batch[0].items() if k != required}
        r = c.post("/predict", json=bad)
        expect(r.status_code == 422, f"a record without {required!r} answered {r.status_code}, not 422")
    return {"passed": not failures, "checks": checks, "failures": failures}


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
    block = 2 * max(1, concurrency)
    names = list(arms)
    plan: list[tuple[str, int]] = []
    if warmup:
        plan += [(a, warmup) for a in names]
    counted_from = len(plan)
    rounds = -(-requests // block)
    for r in range(rounds):
        n = min(block, requests - r * block)
        order = names if r % 2 == 0 else names[::-1]
        plan += [(a, n) for a in order]
    t0 = time.perf_counter()
    per_block = _fire_blocks(h, records, ids, plan, concurrency, arms)
    wall = time.perf_counter() - t0
    stats: dict[str, dict[str, Any]] = {}
    for a in names:
        lat = [x for i, (arm, res) in enumerate(per_block) if arm == a and i >= counted_from for x in res[0]]
        errors = [x for i, (arm, res) in enumerate(per_block) if arm == a and i >= counted_from for x in res[1]]
        variants: dict[str, int] = {}
        for i, (arm, res) in enumerate(per_block):
            if arm == a and i >= counted_from:
                for k, v in res[2].items():
                    variants[k] = variants.get(k, 0) + v
        stats[a] = _arm_stats(lat, errors, variants, wall / len(names))
    first = stats[names[0]]
    return {
        **first,
        "concurrency": concurrency,
        "warmup_requests": warmup,
        "interleaved": len(names) > 1,
        "arms": stats if len(names) > 1 else {},
    }


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
                    body = (
                        {"entity_ids": [ids[i % len(ids)]]}
                        if ids and i % 4 == 3
                        else {"records": [records[i % len(records)]]}
                    )
                    t0 = time.perf_counter()
                    try:
                        r = c.post("/predict", json=body, headers=arms[arm])
                        dt = time.perf_counter() - t0
                        ok = r.status_code == 200
                        variant = r.json()["predictions"][0]["variant"] if ok else None
                        why = "" if ok else f"{r.status_code} {r.text[:150]}"
                    except Exception as exc:  # a timeout is this request's error, not the check's end
                        dt, ok, variant, why = time.perf_counter() - t0, False, None, f"{type(exc).__name__}: {exc}"
                    lat, errors, variants = out[b][1]
                    with lock:
                        lat.append(dt)
                        if ok:
                            variants[variant] = variants.get(variant, 0) + 1
                        else:
                            errors.append(why[:200])
                finally:
                    jobs.task_done()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, concurrency))]
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
    return out


def judge_load(
    new: dict[str, Any],
    current: dict[str, Any] | None,
    *,
    max_latency_ratio: float,
    max_error_rate: float,
    latency_budget_ms: dict[str, float] | None = None,
    percentiles: tuple[str, ...] = JUDGED_PERCENTILES,
) -> tuple[list[str], dict[str, Any]]:
    """The load test's verdict on the new version: (reasons it fails, figures judged).

    - error rate of the new version's requests against `max_error_rate`;
    - latency: the new version's `percentiles` over the current version's, measured in the same
      interleaved check, each against `max_latency_ratio` (no current version: not judged, and
      the figures say so); `latency_ratio` is the largest;
    - an absolute budget only where the spec sets one (`latency_budget_ms`, e.g. {"p99": 500}):
      an explicit production SLO.
    """
    reasons: list[str] = []
    n = int(new.get("requests") or 0)
    errors = int(new.get("errors") or 0)
    rate = errors / n if n else 1.0
    figures: dict[str, Any] = {"error_rate": round(rate, 4), "max_error_rate": max_error_rate}
    if n == 0:
        reasons.append("load test: the new version answered no request")
    elif rate > max_error_rate:
        cur = f"; the current version: {current.get('errors')} of {current.get('requests')}" if current else ""
        reasons.append(
            f"load test: {errors} of {n} requests to the new version failed (error rate {rate:.3f} > "
            f"{max_error_rate:g}{cur}) ({new.get('error_samples')})"
        )
    figures["percentiles"] = list(percentiles)
    if current is None:
        figures["latency_ratio"] = None
        figures["baseline"] = "none: no current version to compare with"
    else:
        ratios: dict[str, float] = {}
        for p in percentiles:
            a, b = float(new.get(f"{p}_ms", float("nan"))), float(current.get(f"{p}_ms", float("nan")))
            ratio = a / b if b > 0 else float("inf")
            ratios[p] = round(ratio, 3)
            if not ratio <= max_latency_ratio:  # NaN fails too: a latency that could not be measured
                reasons.append(
                    f"load test: the new version's {p} {a:g} ms is {ratio:.2f}x the current version's "
                    f"{b:g} ms (limit {max_latency_ratio:g}x, same check, interleaved)"
                )
        worst = max(ratios.values(), key=lambda r: float("inf") if r != r else r)
        figures.update(
            ratios=ratios,
            latency_ratio=worst,
            max_latency_ratio=max_latency_ratio,
            baseline=f"v{current.get('version')}" if current.get("version") else "current",
        )
    for p, budget in sorted((latency_budget_ms or {}).items()):
        v = float(new.get(f"{p}_ms", float("nan")))
        if not v <= float(budget):
            reasons.append(f"load test: {p} {v:g} ms over the budget of {float(budget):g} ms")
    return reasons, figures


def service_metric(h: ServiceHandle, name: str, **labels: str) -> float:
    """Sum of a metric's samples (matching labels) in the service's /metrics."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for fam in text_string_to_metric_families(httpx.get(f"{h.url}/metrics", timeout=10).text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


@dataclass
class CheckResult:
    phase: str
    passed: bool
    smoke: dict[str, Any]
    load: dict[str, Any]
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "passed": self.passed,
            "reasons": self.reasons,
            "smoke": self.smoke,
            "load": self.load,
        }


def run_check(
    h: ServiceHandle,
    spec: DatasetSpec,
    store: ObjectStore,
    phase: str,
    versions: set[str],
    *,
    shadow_version: str | None = None,
    canary_version: str | None = None,
    candidate: str | None = None,
    baseline: str | None = None,
) -> CheckResult:
    """Smoke test, then the load test, judged by `judge_load`.

    With `candidate` and `baseline` (the new and the current version, both in the service's
    memory), the load test sends the same requests to each, pinned by version and interleaved,
    and judges the ratio of their latencies: the model, not the machine. Without a baseline
    (the first champion, or a service that cannot pin), it judges errors and any explicit budget.
    """
    dep = spec.deployment
    lt = dep.load_test
    records, ids = sample_inputs(spec, store)
    smoke = smoke_test(h, spec, records, ids, versions)
    shadow_before = (
        service_metric(h, "mlops_serving_predictions_total", variant="shadow", model_version=shadow_version)
        if shadow_version
        else 0.0
    )
    shadow_err_before = service_metric(h, "mlops_serving_shadow_errors_total") if shadow_version else 0.0
    arms, no_baseline = None, None
    if candidate and baseline and baseline != candidate:
        arms = {"new": _pin(h, candidate), "current": _pin(h, baseline)}
        no_baseline = _pin_refused(h, records, arms["current"])
        if no_baseline:
            log.warning("no baseline for the check of v%s: %s; judging errors only", candidate, no_baseline)
            arms = None
    elif candidate:
        no_baseline = "no current version (first champion)" if not baseline else "the current version is this one"
    load = load_test(
        h, spec, records, ids, requests=lt.requests, concurrency=lt.concurrency, warmup=lt.warmup, arms=arms
    )
    current = None
    if arms:
        current = {**load["arms"]["current"], "version": baseline}
        load["arms"]["new"]["version"], load["arms"]["current"]["version"] = candidate, baseline
    reasons = [f"smoke test: {f}" for f in smoke["failures"]]
    verdict, figures = judge_load(
        load,
        current,
        max_latency_ratio=dep.max_latency_ratio,
        max_error_rate=dep.max_error_rate,
        latency_budget_ms=dep.latency_budget_ms,
    )
    if no_baseline:
        figures["baseline"] = f"none: {no_baseline}"
    elif not candidate:
        figures["baseline"] = "not compared: traffic as the service routes it (staged check)"
    load["judged"] = figures
    reasons += verdict
    if canary_version:
        share = dep.canary_share
        if share > 0 and load["variants"].get("challenger", 0) == 0:
            reasons.append(f"canary: the challenger v{canary_version} answered none of {load['requests']} requests")
    if shadow_version:
        scored = (
            service_metric(h, "mlops_serving_predictions_total", variant="shadow", model_version=shadow_version)
            - shadow_before
        )
        failed = service_metric(h, "mlops_serving_shadow_errors_total") - shadow_err_before
        load["shadow_scored"], load["shadow_errors"] = scored, failed
        if failed:
            reasons.append(f"shadow: v{shadow_version} failed on {failed:g} rows")
        if scored <= 0:
            reasons.append(f"shadow: v{shadow_version} scored nothing")
    return CheckResult(phase, not reasons, smoke, load, reasons)


def _pin(h: ServiceHandle, version: str) -> dict[str, str]:
    from include.mlops.serving.config import VERSION_HEADER

    return {VERSION_HEADER: str(version), **h.headers()}


def _pin_refused(h: ServiceHandle, records: list[dict[str, Any]], headers: dict[str, str]) -> str | None:
    """Why the service cannot answer with the pinned version (None: it can)."""
    import httpx

    from include.mlops.waits import seconds

    if not h.token:
        return "no admin token for this service (MLOPS_ADMIN_TOKEN): it cannot pin a version"
    try:
        r = httpx.post(
            f"{h.url}/predict",
            json={"records": records[:1]},
            headers={**SYNTHETIC, **headers},
            timeout=seconds("MLOPS_DEPLOY_REQUEST_TIMEOUT"),
        )
    except httpx.HTTPError as exc:
        return f"a pinned request did not answer ({type(exc).__name__})"
    if r.status_code == 200:
        return None
    try:
        msg = r.json().get("message")
    except ValueError:
        msg = r.text[:200]
    return f"a pinned request answered {r.status_code}: {msg}"


def _log_check(client: Any, run_id: str | None, res: CheckResult, prefix: str) -> None:
    if not run_id:
        return
    ld = res.load
    for k in ("rps", "p50_ms", "p95_ms", "p99_ms", "errors"):
        v = ld.get(k)
        if isinstance(v, (int, float)):
            client.log_metric(run_id, f"{prefix}_{k}", float(v))
    ratio = (ld.get("judged") or {}).get("latency_ratio")
    if isinstance(ratio, (int, float)) and ratio == ratio and ratio != float("inf"):
        client.log_metric(run_id, f"{prefix}_latency_ratio", float(ratio))
    current = (ld.get("arms") or {}).get("current") or {}
    for k in ("p50_ms", "p95_ms", "p99_ms"):
        if isinstance(current.get(k), (int, float)):
            client.log_metric(run_id, f"{prefix}_current_{k}", float(current[k]))
    client.log_metric(run_id, f"{prefix}_smoke_passed", 1.0 if res.smoke["passed"] else 0.0)
    client.log_metric(run_id, f"{prefix}_check_passed", 1.0 if res.passed else 0.0)
    client.log_dict(run_id, res.to_dict(), f"deployment/{res.phase}.json")


# -- the deploy step ----------------------------------------------------------------------------------
def _strategy(spec: DatasetSpec, strategy: str | None) -> tuple[str, float]:
    """The run's strategy (or the spec's) and canary share, checked against the known strategies."""
    dep = spec.deployment
    s = strategy or dep.strategy
    if s not in STRATEGIES:
        raise ValueError(f"deployment strategy must be one of {STRATEGIES}, not {s!r}")
    return s, dep.canary_share


def publish_strategy(client: Any, model: str, strategy: str, share: float) -> None:
    """The running service follows these tags (see serving.models.ModelManager). Only a rollout
    that deploys something publishes them; a rollback or failed check sets them back to idle
    (`registry.end_routing`)."""
    from include.mlops.serving.config import CANARY_SHARE_TAG, STRATEGY_TAG

    client.set_registered_model_tag(model, STRATEGY_TAG, strategy)
    client.set_registered_model_tag(model, CANARY_SHARE_TAG, str(share))


def rollout(
    reg_out: dict[str, Any],
    eval_out: dict[str, Any],
    run_id: str,
    dag_id: str,
    strategy: str | None = None,
    spec_name: str | None = None,
) -> dict[str, Any]:
    """Promote through the gate by the chosen strategy, check the service, roll back on failure.

    The promotion is a ledger transaction (`registry`): begun (`pending`) before the strategy is
    published or any alias moves, completed (`done`) only once the checks passed, undone
    (`rolled_back`) when one failed. A retry of the same run finds its pending promotion and
    finishes it, checks included, under the strategy it began with; a promotion this run already
    completed or rolled back is not done again. A run that deploys nothing (gate failed, strategy
    not shadow) leaves the service's strategy tags alone."""
    from include.mlops import registry as R
    from include.mlops.pipeline import _ctx, promote

    spec, store, settings = _ctx(spec_name)
    client = R.setup_mlflow(settings)
    model, version = reg_out["model"], str(reg_out["version"])
    mlflow_run = reg_out.get("run_id")
    passed = bool(eval_out.get("passed"))
    R.finish_open_moves(client, store, model)  # a rollback interrupted earlier completes first
    mine = R.moves_of(store, model, R.promotion_base(dag_id, run_id, version))
    move = mine[-1] if mine else None
    if move is not None and move.status == R.DONE:
        msg = f"v{version}: this run's promotion of it completed at {move.at} after its checks passed"
        log.info(msg)
        return {
            "promoted": True,
            "message": msg,
            "champion": R.alias_version(client, model, R.CHAMPION),
            "previous": move.from_version,
            "strategy": move.strategy,
            "staged_check": None,
            "checked": True,
            "resumed": True,
            "move": move.move,
            "gate_passed": True,
        }
    if move is not None and move.status != R.PENDING:
        raise DeploymentCheckFailed(
            f"this run's promotion of v{version} ended {move.status} at {move.at}: {move.outcome}; "
            f"it is not promoted again (ledger move {move.move})",
            **_ended_as(model, version, move.status, move.from_version),
        )
    resumed = move is not None
    if move is not None:
        log.warning("resuming this run's promotion of v%s begun at %s (move %s)", version, move.at, move.move)
        strategy = move.strategy  # the retry finishes the rollout it began, not another
    strategy, share = _strategy(spec, strategy)
    champion_now = R.alias_version(client, model, R.CHAMPION)  # a registry error fails the step
    if move is None and passed and champion_now != version:
        move = R.begin_move(
            client,
            store,
            model,
            version,
            action="promote",
            reason="gate passed: " + ", ".join(f"{k}={v:.4f}" for k, v in eval_out["metrics"].items()),
            run_id=run_id,
            dag_id=dag_id,
            strategy=strategy,
            base=R.promotion_base(dag_id, run_id, version),
            awaits_check=True,
        )
    champion_before = move.from_version if move is not None else champion_now
    shadow_only = move is None and strategy == "shadow" and champion_now not in (None, version)
    if move is None and not shadow_only:  # nothing deploys: the service's routing stays as it is
        out = promote(reg_out, eval_out, run_id, dag_id, strategy, spec_name, complete=False)
        return {**out, "strategy": strategy, "staged_check": None, "checked": False}
    publish_strategy(client, model, strategy, share)
    env = {"MLOPS_DATASET": spec_name} if spec_name else {}
    env["MLOPS_SERVE_PREDICTION_LOG"] = "false"  # a service started for the check logs nothing
    handle: ServiceHandle | None = None
    try:
        staged = None
        # shadow watches even a challenger the gate rejected (it never answers); canary and
        # blue/green only stage one that may go live
        staged_wanted = strategy == "shadow" or (strategy in ("canary", "blue_green") and passed)
        if staged_wanted and champion_before not in (None, version) and champion_now != version:
            try:
                handle = service_for_check(model, env)
            except Exception as exc:  # no service, no check: never promoted unchecked
                raise _staged_failed(
                    client, store, None, strategy, model, version, champion_before, move,
                    f"{strategy} check of v{version} could not run: no scoring service ({exc})", run_id, dag_id,
                ) from exc  # fmt: skip
            staged = _staged_check(
                handle, client, spec, store, strategy, model, version, champion_before, mlflow_run, run_id, dag_id,
                move,
            )  # fmt: skip
        if move is not None:
            now = R.move_record(store, model, move.move)
            if now is not None and now.status != R.PENDING:  # a rollback ended the rollout meanwhile
                raise DeploymentCheckFailed(
                    f"the rollout of v{version} was ended ({now.status}) at {now.at} before the switch: {now.outcome}",
                    **_ended_as(model, version, now.status, now.from_version),
                )

        baseline = champion_before if champion_before not in (None, version) else None
        if baseline and passed and handle is None and champion_now != version:
            # the service the check uses must hold the current version too: after the switch it
            # stays in memory there, and the check measures both side by side (a retry after the
            # switch cannot wait for it: the check pins it if the service still holds it)
            handle = _baseline_service(model, env, baseline)

        out = promote(reg_out, eval_out, run_id, dag_id, strategy, spec_name, complete=False)
        base = {**out, "strategy": strategy, "staged_check": staged, "resumed": resumed}
        if not out["promoted"]:
            if move is not None:  # the pending promotion was closed by someone else meanwhile
                raise DeploymentCheckFailed(
                    f"v{version} was not promoted: {out['message']}",
                    **_ended_as(model, version, out.get("move_status"), out.get("previous")),
                )
            return {**base, "checked": False}

        previous = out.get("previous")
        try:
            if handle is None:
                handle = service_for_check(model, env)
            wait_for(handle, champion=version)
            res = run_check(
                handle, spec, store, "post_promotion", {version}, candidate=version, baseline=previous or baseline
            )
        except Exception as exc:  # a check that cannot run has not passed: never leave an unchecked champion
            why = (
                str(exc)
                if isinstance(exc, DeploymentCheckFailed)
                else f"the check could not run: {type(exc).__name__}: {exc}"
            )
            res = CheckResult("post_promotion", False, {"passed": False, "checks": 0, "failures": [why]}, {}, [why])
        _log_check(client, mlflow_run, res, "deploy")
        if res.passed:
            ld = res.load
            checked = f"v{version} passed its post-deployment check on {handle.url}: {_describe(ld)}"
            final = R.complete_move(client, store, move, outcome=checked)
            if final.status != R.DONE:
                raise DeploymentCheckFailed(
                    f"v{version} passed its check, but the rollout was ended ({final.status}) meanwhile: {final.outcome}",
                    **_ended_as(model, version, final.status, final.from_version),
                )
            log.info(checked)  # the promotion itself was logged by `promote`: each decision once
            msg = f"{out['message']}; {checked}"
            return {
                **base,
                "message": msg,
                "checked": True,
                "check": res.to_dict(),
                "service_url": handle.url,
                **{f"deploy_{k}": ld[k] for k in ("rps", "p50_ms", "p95_ms", "p99_ms", "errors")},
            }

        reason = "; ".join(res.reasons)
        back = _roll_back_failed(client, store, model, version, previous, reason, run_id, dag_id, strategy, move)
        where = handle.url if handle is not None else "a scoring service"
        try:
            if handle is not None:
                refresh(handle)
        except Exception:
            pass
        raise DeploymentCheckFailed(
            f"v{version} failed its post-deployment check on {where}: {reason}. {back} "
            f"(ledger action rollback_after_failed_check; report deployment/post_promotion.json in run {mlflow_run})",
            model=model,
            version=version,
            rolled_back=True,
            rolled_back_to=previous,
        )
    finally:
        if handle is not None and handle.started:
            handle.close()
            handle.cleanup()


def _ended_as(model: str, version: str, status: str | None, from_version: str | None) -> dict[str, Any]:
    """The typed fields of the error raised when this run's promotion was ended elsewhere: a
    rollback when the ledger move says `rolled_back` (the champion then is its `from_version`)."""
    from include.mlops.registry import ROLLED_BACK

    rolled_back = status == ROLLED_BACK
    return {
        "model": model,
        "version": version,
        "rolled_back": rolled_back,
        "rolled_back_to": from_version if rolled_back else None,
    }


def _describe(ld: dict[str, Any]) -> str:
    """One line of load-test figures: the new version's, and the comparison when there was one."""
    j = ld.get("judged") or {}
    text = (
        f"{ld['requests']} requests at c={ld['concurrency']}, {ld['rps']} rps, p50 {ld['p50_ms']} ms, "
        f"p95 {ld['p95_ms']} ms, p99 {ld['p99_ms']} ms, {ld['errors']} errors"
    )
    cur = (ld.get("arms") or {}).get("current")
    if cur and j.get("latency_ratio") is not None:
        text += (
            f"; current v{cur.get('version')} interleaved: p50 {cur['p50_ms']} ms, p95 {cur['p95_ms']} ms, "
            f"p99 {cur['p99_ms']} ms; ratio "
            + ", ".join(f"{p} {r}" for p, r in (j.get("ratios") or {}).items())
            + f" (limit {j['max_latency_ratio']:g})"
        )
    elif j.get("baseline"):
        text += f"; latency ratio not judged ({j['baseline']})"
    return text


def _baseline_service(model: str, env: dict[str, str], baseline: str) -> ServiceHandle | None:
    """The check's service, serving the current champion before the switch (None if it cannot:
    the check then starts one after the switch and judges without a baseline)."""
    try:
        handle = service_for_check(model, env)
    except Exception as exc:
        log.warning("no service to hold the current v%s before the switch (%s)", baseline, exc)
        return None
    try:
        wait_for(handle, champion=baseline)
    except Exception as exc:
        log.warning("the service at %s does not serve the current v%s (%s): no baseline", handle.url, baseline, exc)
    return handle


def _staged_check(
    handle: ServiceHandle,
    client: Any,
    spec: DatasetSpec,
    store: ObjectStore,
    strategy: str,
    model: str,
    version: str,
    champion: str,
    mlflow_run: str | None,
    run_id: str,
    dag_id: str,
    move: Any = None,
) -> dict[str, Any]:
    """Before the switch: blue/green warms the new version beside the old; canary and shadow
    let it take (or watch) live traffic and check it. On failure nothing was promoted: the
    rollout ends (`_staged_failed`) and the step raises."""
    try:
        if strategy == "blue_green":
            wait_for(handle, champion=champion, standby=version)
            res = CheckResult(
                "blue_green", True, {"passed": True, "checks": 1, "failures": []}, {"standby": version}, []
            )
        else:
            wait_for(handle, champion=champion, challenger=version)
            res = run_check(
                handle,
                spec,
                store,
                strategy,
                {champion, version},
                shadow_version=version if strategy == "shadow" else None,
                canary_version=version if strategy == "canary" else None,
            )
            _log_check(client, mlflow_run, res, f"deploy_{strategy}")
    except Exception as exc:  # a check that cannot run has not passed
        why = str(exc) if isinstance(exc, DeploymentCheckFailed) else f"{type(exc).__name__}: {exc}"
        res = CheckResult(strategy, False, {"passed": False, "checks": 0, "failures": [why]}, {}, [why])
    if res.passed:
        return res.to_dict()
    reason = f"{strategy} check of v{version} failed: " + "; ".join(res.reasons)
    raise _staged_failed(client, store, handle, strategy, model, version, champion, move, reason, run_id, dag_id)


def _now() -> str:
    from include.mlops.registry import now

    return now()


def _roll_back_failed(
    client: Any,
    store: ObjectStore,
    model: str,
    version: str,
    previous: str | None,
    reason: str,
    run_id: str,
    dag_id: str,
    strategy: str,
    move: Any = None,
) -> str:
    """Undo a promotion whose post-deployment check failed: the rollout ends, `champion` and
    `previous` go back to what they were before it (ledger action rollback_after_failed_check)."""
    from include.mlops import registry as R

    if move is None:  # called without the transaction: the pending promotion of this version
        pending = [m for m in R.open_moves(store, model) if m.to_version == str(version) and m.action == "promote"]
        if not pending:
            raise RuntimeError(f"no pending promotion of {model} v{version} in the ledger to roll back")
        move = pending[-1]
    R.undo_move(
        client,
        store,
        move,
        action="rollback_after_failed_check",
        reason=reason,
        run_id=run_id,
        dag_id=dag_id,
        strategy=strategy,
    )
    if move.from_version:
        return f"champion rolled back to v{move.from_version}."
    return "there was no previous champion: the champion alias was removed (the service keeps its last model)."


def rollback(
    to_version: str | None, run_id: str, dag_id: str, spec_name: str | None = None, reason: str | None = None
) -> dict[str, Any]:
    """Undo the last promotion still in force (or move `champion` to `to_version`), recorded in
    the ledger as action "rollback" with the strategy in force and `reason`; either way the
    rollout ends: `challenger` removed and the strategy tags back to idle, so the service stops
    routing to and shadow-scoring the version rolled back from at its next poll.

    With no `to_version`, the target is the version the last completed promotion replaced, read
    from the ledger, not from an alias. A promotion still pending (a rollout under way, or one a
    crash interrupted) is the one undone. A second rollback with nothing new to undo is refused
    (`RollbackRefused`): it would re-promote the version just rolled back from. Naming the
    version that already is champion changes nothing."""
    from include.mlops import registry as R
    from include.mlops.pipeline import _ctx

    spec, store, settings = _ctx(spec_name)
    client = R.setup_mlflow(settings)
    model = spec.model_name
    target = str(to_version) if to_version not in (None, "") else None
    if target is not None:
        try:
            client.get_model_version(model, target)
        except Exception as exc:
            if R.is_not_found(exc):
                raise ValueError(f"{model} has no version {target!r}: name a registered version") from exc
            raise  # the registry did not answer: that is not "no such version"
    who = f"{dag_id or 'a user'} (run {run_id})"
    R.finish_open_moves(client, store, model)  # an interrupted rollback completes first
    strategy = R.strategy_in_force(client, model, spec.deployment.strategy)
    current = R.alias_version(client, model, R.CHAMPION)

    def why(frm: str | None, to: str | None, what: str = "") -> str:
        return f"rollback requested by {who}: v{frm} -> v{to}{what}" + (f": {reason}" if reason else "")

    done: list[Any] = []
    for p in R.open_moves(store, model):  # promotions awaiting their check: the rollout under way ends
        done.append(
            R.undo_move(
                client,
                store,
                p,
                action="rollback",
                reason=why(current, p.from_version, f" (ends the unfinished {p.action} of v{p.to_version} by "
                           f"{p.dag_id or 'a user'} run {p.run_id}, strategy {p.strategy})"),
                run_id=run_id,
                dag_id=dag_id,
                strategy=strategy,
            )
        )  # fmt: skip
        current = R.alias_version(client, model, R.CHAMPION)
    if target is not None and target != current:
        entry = R.begin_move(
            client,
            store,
            model,
            target,
            action="rollback",
            reason=why(current, target),
            run_id=run_id,
            dag_id=dag_id,
            strategy=strategy,
            ends_rollout=True,
        )
        R.apply_move(client, entry)
        done.append(R.complete_move(client, store, entry))
    elif target is None and not done:
        last = R.last_move_in_force(store, model)
        if last is not None and last.action == "rollback" and (last.run_id, last.dag_id) == (run_id, dag_id):
            done.append(last)  # this request's own rollback, completed before a retry: nothing more
        else:
            last = _undoable(model, current, last)
            done.append(
                R.undo_move(
                    client,
                    store,
                    last,
                    action="rollback",
                    reason=why(current, last.from_version, f" (undoes the {last.action} at {last.at})"),
                    run_id=run_id,
                    dag_id=dag_id,
                    strategy=strategy,
                )
            )
    if not done:
        msg = f"v{target} already is the champion of {model}: nothing to roll back"
        log.info(msg)
        return {"model": model, "from_version": current, "to_version": target, "changed": False, "message": msg,
                "strategy": strategy}  # fmt: skip
    frm, to = done[0].from_version, R.alias_version(client, model, R.CHAMPION)
    msg = (
        f"rolled {model} back from v{frm} to v{to} (strategy in force was {strategy}; the rollout is ended: "
        f"no challenger, strategy direct)"
    )
    url = os.environ.get("MLOPS_SERVE_URL")
    if url:  # the service would notice at its next poll; tell it now
        try:
            refresh(ServiceHandle(url.rstrip("/"), os.environ.get("MLOPS_ADMIN_TOKEN") or None), timeout=60)
        except Exception as exc:
            log.warning("could not ask %s to reload (%s); it follows at its next poll", url, exc)
    log.info(msg)
    return {"model": model, "from_version": frm, "to_version": to, "changed": True, "message": msg,
            "strategy": strategy}  # fmt: skip


def _staged_failed(
    client: Any,
    store: ObjectStore,
    handle: ServiceHandle | None,
    strategy: str,
    model: str,
    version: str,
    champion: str,
    move: Any,
    reason: str,
    run_id: str,
    dag_id: str,
) -> DeploymentCheckFailed:
    """End a rollout whose staged check failed; returns the error to raise. Routing back to idle (`challenger`
    removed, strategy `direct`), the pending promotion closed as rolled_back (ledger action
    rollback_after_failed_check); the champion never moved."""
    from include.mlops import registry as R

    if move is not None:
        R.undo_move(
            client,
            store,
            move,
            action="rollback_after_failed_check",
            reason=reason,
            run_id=run_id,
            dag_id=dag_id,
            strategy=strategy,
        )
    else:  # a challenger the gate rejected, watched in shadow: no promotion to undo
        R.end_routing(client, model)
        R.write_ledger(
            store,
            R.LedgerEntry(
                at=_now(),
                model=model,
                action="rollback_after_failed_check",
                from_version=version,
                to_version=champion,
                reason=reason,
                run_id=run_id,
                dag_id=dag_id,
                strategy=strategy,
                champion_before=champion,
                moves_champion=False,
                undo=True,
                ends_rollout=True,
            ),
        )
    if handle is not None:
        try:
            refresh(handle)
        except Exception:
            pass
    where = f"service {handle.url}; " if handle is not None else ""
    return DeploymentCheckFailed(
        f"{reason}. v{version} was never promoted; champion stays v{champion}; the rollout ended: the challenger "
        f"alias was removed and the strategy set back to direct, so the service stops routing to it "
        f"({where}ledger action rollback_after_failed_check)",
        model=model,
        version=version,
        rolled_back=True,
        rolled_back_to=champion,
    )


class RollbackRefused(ValueError):
    """Nothing (new) to roll back, or the ledger and the registry disagree; the message says what
    to do instead (usually: name the version)."""


def _undoable(model: str, current: str | None, last: Any) -> Any:
    """The move a rollback without a version undoes, or `RollbackRefused` saying why there is none."""
    name = "name the version to roll back to (to_version)"
    if current is None:
        raise RollbackRefused(f"{model} has no champion: nothing to roll back; {name}")
    if last is None:
        raise RollbackRefused(f"the ledger of {model} records no completed promotion of v{current} to undo; {name}")
    if last.to_version != current:
        raise RollbackRefused(
            f"the champion of {model} is v{current}, but the ledger's last completed move ({last.action} at "
            f"{last.at}) went to v{last.to_version}: the aliases were changed outside the platform; {name}"
        )
    if last.undo:
        raise RollbackRefused(
            f"nothing new to roll back: the last move of {model} already was a rollback, v{last.from_version} -> "
            f"v{last.to_version} at {last.at} ({last.action} by {last.dag_id or 'a user'} run {last.run_id}); "
            f"rolling back again would re-promote v{last.from_version}. To go further back, {name}"
        )
    if last.from_version is None:
        raise RollbackRefused(
            f"v{current} is the first champion of {model}: there is no earlier version to roll back to; {name}"
        )
    return last
