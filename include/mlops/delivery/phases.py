"""The live phases of a rollout: what one waits for, and its verdict once the wait is over.

A `Phase` is the state of a rollout between two judgements: a canary step (the new version
answers `share` of the traffic), the shadow phase (it scores every request, answers none) or an
A/B test (the two versions split the entities). It is plain JSON (`to_dict`), so it travels in
XCom and in a deferred task's `next_kwargs`, and holds no secret: the service's admin token is
read from the environment where the phase is judged.

Waiting is counting: `progress` says how much of what the phase needs has come (the new
version's live requests since the phase began, or for an A/B test the labelled outcomes of the
smaller arm), `check` turns that into an event once the soak is over and enough came, or once the
deadline passed. The Airflow trigger (`mlops_airflow.triggers.LiveTrafficTrigger`) runs `check`
every `poll_seconds` without holding a worker; `wait` does the same in-process (the synchronous
`rollout.rollout`, tests). Nothing here depends on a quiet machine: a wait is bounded by the
phase's deadline, and every comparison is between the two versions on the same traffic.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from include.mlops.delivery.service import ServiceHandle, refresh

if TYPE_CHECKING:
    from include.mlops.context import Context
    from include.mlops.delivery.rollout import _Run as Run

log = logging.getLogger(__name__)

KINDS = ("canary", "shadow", "ab_test")
READY, DEADLINE = "ready", "deadline"  # the events a wait ends with
VARIANT = {"canary": "challenger", "shadow": "shadow", "ab_test": "challenger"}  # the new version's rows


@dataclass
class Phase:
    """One live phase of one rollout (see the module docstring); JSON both ways."""

    kind: str  # canary | shadow | ab_test
    model: str
    version: str  # the new version
    champion: str  # the version it is compared with
    move: str | None  # the pending promotion's ledger move (None: a gate-rejected challenger in shadow)
    strategy: str
    spec_name: str | None
    run_id: str
    dag_id: str
    reg_out: dict[str, Any]
    eval_out: dict[str, Any]
    service_url: str
    began_at: float  # epoch seconds
    soak_until: float
    deadline: float
    need: int  # requests (canary, shadow) or labelled outcomes per arm (ab_test) before judging
    poll_seconds: float
    step: int = 0  # canary: index into steps
    steps: list[float] = field(default_factory=list)
    share: float = 0.0
    before: str | None = None  # the service's metrics when the phase began (live.MetricsSnapshot JSON)
    staged: dict[str, Any] | None = None  # the staged check before the first phase
    history: list[dict[str, Any]] = field(default_factory=list)  # the verdicts so far, short
    resumed: bool = False
    waits: int = 0  # times judged "wait" in this phase

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | Phase) -> Phase:
        if isinstance(d, Phase):
            return d
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown or "kind" not in d:
            raise ValueError(f"not a rollout phase: unknown fields {unknown}, fields {sorted(d)}")
        return cls(**d)

    @property
    def variant(self) -> str:
        return VARIANT[self.kind]

    def title(self) -> str:
        if self.kind == "canary":
            return f"canary step {self.step + 1} of {len(self.steps)} ({self.share:.0%} of traffic)"
        return "shadow phase" if self.kind == "shadow" else f"A/B test ({self.share:.0%} to the challenger)"

    def describe(self) -> str:
        what = "labelled outcomes per arm" if self.kind == "ab_test" else f"live requests to v{self.version}"
        return (
            f"{self.model} v{self.version} vs v{self.champion}, {self.title()}: soak until "
            f"{_clock(self.soak_until)}, then {self.need} {what}, at the latest by {_clock(self.deadline)}"
        )


def _clock(t: float) -> str:
    return time.strftime("%H:%M:%S UTC", time.gmtime(t))


def admin_token() -> str | None:
    from include.mlops.config import get_settings

    return get_settings().admin_token


def begin(
    kind: str,
    cfg: Any,
    *,
    base: dict[str, Any],
    share: float = 0.0,
    step: int = 0,
    steps: list[float] | None = None,
    history: list[dict[str, Any]] | None = None,
) -> Phase:
    """A phase starting now: the service's metrics snapshot (where the judgement starts) and the
    spec's waits. `cfg` is the spec's CanarySpec / ShadowSpec / ABTestSpec; `base` the rollout's
    fixed fields (model, version, champion, move, ...)."""
    from include.mlops.delivery import live

    now = time.time()
    if kind == "ab_test":
        soak, need, deadline = 0.0, int(cfg.samples_per_arm), float(cfg.period_seconds)
    else:
        soak, need, deadline = float(cfg.soak_seconds), int(cfg.min_requests), float(cfg.deadline_seconds)
    snap = live.snapshot(base["service_url"])
    return Phase(
        kind=kind,
        **base,
        began_at=now,
        soak_until=now + soak,
        deadline=now + max(deadline, soak),
        need=need,
        poll_seconds=float(cfg.poll_seconds),
        step=step,
        steps=list(steps or []),
        share=share,
        before=snap.to_json(),
        history=list(history or []),
    )


def again(phase: Phase) -> Phase:
    """The same phase waiting once more (judged "wait"): at least one poll later, same deadline."""
    d = phase.to_dict()
    d.update(soak_until=max(phase.soak_until, time.time() + phase.poll_seconds), waits=phase.waits + 1)
    return Phase.from_dict(d)


# -- waiting --------------------------------------------------------------------------------------------
def progress(phase: Phase) -> int:
    """How much of `phase.need` has come: the new version's live requests since the phase began
    (canary, shadow), or the smaller arm's labelled outcomes (ab_test)."""
    from include.mlops.delivery import live

    if phase.kind == "ab_test":
        from include.mlops.context import context
        from include.mlops.delivery.abtest import labelled_per_arm

        flush(phase.service_url)
        ctx = context(phase.spec_name)
        counts = labelled_per_arm(
            ctx.store, ctx.spec, phase.began_at, time.time(), versions={"champion": phase.champion,
                                                                         "challenger": phase.version}
        )  # fmt: skip
        return min(counts.values())
    if phase.before is None:
        raise ValueError(f"{phase.title()} has no metrics snapshot to count from")
    return int(live.requests_of(phase.service_url, phase.version, phase.variant, phase.before))


def check(phase: Phase, now: float | None = None) -> dict[str, Any] | None:
    """The event that ends the wait (ready: soaked and enough came; deadline: the deadline
    passed), or None to wait on. Counting that fails (the service restarting) is logged and
    waited on, up to the deadline."""
    now = time.time() if now is None else now
    if now < phase.soak_until and now < phase.deadline:
        return None
    try:
        n = progress(phase)
    except Exception as exc:  # the service or the store did not answer this time
        log.warning("%s: could not count progress (%s: %s); waiting on", phase.title(), type(exc).__name__, exc)
        n = -1
    if n >= phase.need:
        return {"status": READY, "requests": n, "at": now}
    if now >= phase.deadline:
        return {"status": DEADLINE, "requests": max(n, 0), "at": now}
    log.info("%s: %s of %s so far, deadline %s", phase.title(), max(n, 0), phase.need, _clock(phase.deadline))
    return None


def next_wake(phase: Phase, now: float | None = None) -> float:
    """Seconds until the next count: the end of the soak, else one poll (never past the deadline)."""
    now = time.time() if now is None else now
    if now < phase.soak_until:
        return max(0.0, min(phase.soak_until, phase.deadline) - now)
    return max(0.0, min(phase.poll_seconds, phase.deadline - now))


def wait(phase: Phase) -> dict[str, Any]:
    """Block until the phase's event (the trigger's loop, in-process); bounded by the deadline."""
    log.info("waiting: %s", phase.describe())
    while True:
        event = check(phase)
        if event is not None:
            return event
        time.sleep(max(0.05, next_wake(phase)))


def due_now(phase: Phase) -> bool:
    """A phase with nothing to wait for (no soak, no minimum): judged at once, never deferred."""
    return phase.need <= 0 and phase.soak_until <= time.time()


def flush(url: str) -> None:
    """Ask the service to write its pending prediction-log rows now (admin token); without one,
    or when it does not answer, the rows written so far are judged."""
    from include.mlops.delivery import live

    token = admin_token()
    if not token:
        log.warning("no MLOPS_ADMIN_TOKEN to flush %s's prediction log: judging the rows written so far", url)
        return
    try:
        live.flush(url, token)
    except Exception as exc:
        log.warning("could not flush %s's prediction log (%s): judging the rows written so far", url, exc)


# -- judging --------------------------------------------------------------------------------------------
def _window(phase: Phase, ctx: Context, variants: tuple[str, ...]) -> tuple[Any, Any, Any]:
    """(metrics at the start, metrics now, the log rows of the phase's window for `variants`)."""
    from include.mlops.delivery import live

    before = live.MetricsSnapshot.from_json(phase.before) if phase.before else None
    after = live.snapshot(phase.service_url)
    flush(phase.service_url)
    rows = live.live_rows(ctx.store, ctx.spec, phase.began_at, time.time() + 1.0, variants)
    if len(rows):
        version = {"champion": phase.champion, phase.variant: phase.version}
        rows = rows[rows["model_version"].astype(str) == rows["variant"].map(version).astype(str)]
    return before or after, after, rows


def waited_out(phase: Phase, event: dict[str, Any]) -> bool:
    return event.get("status") == DEADLINE or time.time() >= phase.deadline


def side(before: Any, after: Any, version: str, variant: str) -> Any:
    """One side of a canary step: its requests and errors as answered, its latency that of its
    model calls. The service scores concurrent requests in one micro-batch, so a request waits
    for every model in its batch: request latency shares a slow canary's cost with the champion
    (seen: 946 ms against 474 ms for a canary 250 ms slower per call); the calls do not."""
    from dataclasses import replace

    from include.mlops.delivery import live

    answered = live.traffic(before, after, version, variant)
    calls = live.scoring(before, after, version, variant)
    if calls.p95_ms is None:
        return answered
    return replace(answered, p50_ms=calls.p50_ms, p95_ms=calls.p95_ms, mean_ms=calls.mean_ms)


def judge_canary(phase: Phase, event: dict[str, Any], ctx: Context) -> Any:
    """The canary step's verdict (`analysis.judge_canary_step`) on the traffic since it began."""
    from include.mlops.delivery import analysis, live

    before, after, rows = _window(phase, ctx, ("champion", "challenger"))
    labelled = live.labelled(ctx.store, ctx.spec, rows, time.time()) if len(rows) else None
    return analysis.judge_canary_step(
        phase.step + 1,
        phase.share,
        side(before, after, phase.version, "challenger"),
        side(before, after, phase.champion, "champion"),
        analysis.variant_scores(rows, "challenger"),
        analysis.variant_scores(rows, "champion"),
        labelled,
        ctx.spec.deployment.canary,
        ctx.spec,
        waited_out(phase, event),
    )


def judge_shadow(phase: Phase, event: dict[str, Any], ctx: Context) -> Any:
    """The shadow report (`analysis.shadow_report`) on the requests since the phase began:
    the shadow's model calls against the champion's on the same rows."""
    from include.mlops.delivery import analysis, live

    before, after, rows = _window(phase, ctx, ("champion", "shadow"))
    return analysis.shadow_report(
        rows,
        live.shadow_traffic(before, after, phase.version),
        live.scoring(before, after, phase.champion, "champion"),
        ctx.spec.deployment.shadow,
        ctx.spec,
        waited_out(phase, event),
    )


def judge_ab(phase: Phase, event: dict[str, Any], ctx: Context) -> Any:
    """The A/B decision (`abtest.decide`) on the labelled outcomes of the test's window."""
    from include.mlops.delivery import abtest

    flush(phase.service_url)
    outcomes = abtest.ab_outcomes(
        ctx.store,
        ctx.spec,
        phase.began_at,
        time.time(),
        versions={"champion": phase.champion, "challenger": phase.version},
    )
    return abtest.decide(outcomes, ctx.spec.deployment.ab_test, ctx.spec)


# -- after the verdict ------------------------------------------------------------------------------
def judge(run: Run, phase: Phase, event: dict[str, Any]) -> dict[str, Any] | Phase:
    """Judge a phase whose wait ended, then act on the verdict: the next phase or the final result."""
    log.info("%s of v%s: the wait ended (%s, %s counted)", phase.title(), run.version, event.get("status"),
             event.get("requests"))  # fmt: skip
    if phase.kind == "canary":
        return after_canary_step(run, phase, judge_canary(phase, event, run.ctx))
    if phase.kind == "shadow":
        return after_shadow(run, phase, judge_shadow(phase, event, run.ctx))
    return after_ab_test(run, phase, judge_ab(phase, event, run.ctx))


def after_canary_step(run: Run, phase: Phase, verdict: Any) -> dict[str, Any] | Phase:
    """wait: the same step again; fail: the rollout ends; pass: the next step, or the switch."""
    from include.mlops.delivery import rollout as RO

    k, n = phase.step, len(phase.steps)
    if verdict.decision == "wait":
        log.info("%s: waiting for more traffic\n%s", phase.title(), verdict.table())
        return again(phase)
    d = verdict.to_dict()
    record(run, phase, "canary_step", d, verdict.table(), f"canary_step{k + 1}")
    history = [*phase.history, {"step": k + 1, "share": phase.share, "decision": verdict.decision,
                                "reasons": list(verdict.reasons)}]  # fmt: skip
    if verdict.decision != "pass":
        raise live_failed(run, phase, f"{phase.title()} failed: " + "; ".join(verdict.reasons))
    if k + 1 < n:
        share = phase.steps[k + 1]
        RO.publish_strategy(run.ctx.client, run.model, "canary", share)
        reload(phase.service_url)
        nxt = begin(
            "canary", run.ctx.spec.deployment.canary, base=run.phase_base(phase.service_url, phase.staged),
            share=share, step=k + 1, steps=phase.steps, history=history,
        )  # fmt: skip
        return RO._due(run, nxt)
    return RO._switch(run, None, phase.staged, live={"canary_steps": history})


def after_shadow(run: Run, phase: Phase, report: Any) -> dict[str, Any] | Phase:
    """A failed report ends the rollout; a passed one promotes (a gate-rejected challenger: not)."""
    from include.mlops import registry as R
    from include.mlops.delivery import rollout as RO
    from include.mlops.pipeline import promote

    if report.decision == "wait":
        log.info("%s: waiting for more traffic\n%s", phase.title(), report.table())
        return again(phase)
    d = report.to_dict()
    record(run, phase, "shadow_report", d, report.table(), "shadow_report")
    if not report.passed:
        raise live_failed(run, phase, "shadow report failed: " + "; ".join(report.reasons))
    if run.move is None:  # a challenger the gate rejected, watched and reported: nothing to promote
        R.end_routing(run.ctx.client, run.model)
        reload(phase.service_url)
        out = promote(run.reg_out, run.eval_out, run.run_id, run.dag_id, run.strategy, run.spec_name, complete=False)
        return {**out, "strategy": run.strategy, "staged_check": phase.staged, "checked": False, "shadow_report": d}
    return RO._switch(run, None, phase.staged, live={"shadow_report": d})


def after_ab_test(run: Run, phase: Phase, result: Any) -> dict[str, Any]:
    """The challenger won: the switch. Otherwise the champion is kept: routing ends, the pending
    promotion is closed (undo move `keep_champion`), and the task succeeds saying so."""
    from include.mlops import registry as R
    from include.mlops.delivery import rollout as RO

    d = result.to_dict()
    record(run, phase, "ab_test", d, result.table(), "ab_test", metrics=result.mlflow_metrics())
    if result.promote:  # the result names the winner and why, before the switch's own message
        out = RO._switch(run, None, phase.staged, live={"ab_test": d})
        return {**out, "message": f"{result.summary()}; {out['message']}", "outcome": result.decision}
    undo = R.undo_move(
        run.ctx.client, run.ctx.store, run.move, action="keep_champion", reason=result.summary(),
        run_id=run.run_id, dag_id=run.dag_id, strategy=run.strategy,
    )  # fmt: skip
    reload(phase.service_url)
    msg = f"not promoted: {result.summary()}; the A/B test ended (ledger move {undo.move})"
    log.info(msg)
    return {
        "promoted": False, "message": msg, "champion": run.champion, "previous": None, "strategy": run.strategy,
        "staged_check": phase.staged, "checked": False, "gate_passed": True, "outcome": result.decision,
        "ab_test": d, "move": run.move.move, "move_status": R.ROLLED_BACK, "resumed": run.resumed,
    }  # fmt: skip


def record(
    run: Run,
    phase: Phase,
    what: str,
    d: dict[str, Any],
    table: str,
    name: str,
    metrics: dict[str, float] | None = None,
) -> None:
    """A phase's verdict to the task log (the table), the ledger (a step event of the move) and
    the model's MLflow run (`deployment/<name>.json`, numeric figures as `<name>_*` metrics)."""
    from include.mlops import registry as R

    log.info("%s of %s v%s vs v%s:\n%s", phase.title(), run.model, run.version, run.champion, table)
    d = {**d, "phase": phase.title(), "share": phase.share, "began_at": phase.began_at, "judged_at": time.time()}
    if run.move is not None:
        R.record_step(run.ctx.store, run.move, what, d)
    if not run.mlflow_run:
        return
    client = run.ctx.client
    try:
        client.log_dict(run.mlflow_run, d, f"deployment/{name}.json")
        for key, value in (metrics if metrics is not None else _row_metrics(d, name)).items():
            client.log_metric(run.mlflow_run, key, float(value))
    except Exception as exc:  # the verdict is in the ledger and the log; the run's copy is a convenience
        log.warning("could not log the %s to MLflow run %s (%s)", name, run.mlflow_run, exc)


def _row_metrics(d: dict[str, Any], name: str) -> dict[str, float]:
    """The new version's figure of each judged row (`rows`: metric, canary/shadow value), plus pass/fail."""
    out: dict[str, float] = {}
    for row in d.get("rows") or []:
        value = next((row.get(k) for k in ("canary", "shadow", "value") if row.get(k) is not None), None)
        if isinstance(value, (int, float)) and value == value and abs(value) != float("inf"):
            out[f"{name}_{_metric_name(str(row.get('metric')))}"] = float(value)
    passed = d.get("decision") == "pass" if "decision" in d else bool(d.get("passed"))
    out[f"{name}_passed"] = 1.0 if passed else 0.0
    return out


def _metric_name(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_]+", "_", text).strip("_").lower()[:60] or "value"


def reload(url: str) -> None:
    """The live service reads the registry now (admin token), else at its next poll."""
    try:
        refresh(ServiceHandle(url, admin_token()), timeout=60)
    except Exception as exc:
        log.warning("could not ask %s to reload (%s); it follows at its next poll", url, exc)


def live_failed(run: Run, phase: Phase, reason: str) -> Exception:
    """End the rollout after a failed phase (routing idle, the promotion undone) and the error to raise."""
    from include.mlops.delivery.staging import _staged_failed

    return _staged_failed(
        run.ctx.client, run.ctx.store, ServiceHandle(phase.service_url, admin_token()), run.strategy,
        run.model, run.version, run.champion or "", run.move, f"v{run.version}: {reason}", run.run_id, run.dag_id,
    )  # fmt: skip
