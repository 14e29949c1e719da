"""A live phase's verdict and what follows it: once the wait is over (`phases.check`), `judge`
judges the phase on the traffic since it began (a canary step's verdict, the shadow report, the
A/B decision), records the verdict (task log, ledger, MLflow run) and acts on it: the same phase
again (wait), the next canary step, the switch, or the end of the rollout.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from include.mlops.delivery.phases import DEADLINE, Phase, admin_token, again, begin, flush
from include.mlops.delivery.service import ServiceHandle, refresh

if TYPE_CHECKING:
    from include.mlops.context import Context
    from include.mlops.delivery.request import Run
    from include.mlops.results import PromoteResult

log = logging.getLogger(__name__)


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
    """The A/B decision (`abtest.decide`) on the labelled outcomes of the test's window (read afresh)."""
    from include.mlops.delivery import abtest
    from include.mlops.delivery.abwindow import ab_outcomes

    flush(phase.service_url)
    outcomes = ab_outcomes(
        ctx.store,
        ctx.spec,
        phase.began_at,
        time.time(),
        versions={"champion": phase.champion, "challenger": phase.version},
    )
    return abtest.decide(outcomes, ctx.spec.deployment.ab_test, ctx.spec)


# -- after the verdict ------------------------------------------------------------------------------
def judge(run: Run, phase: Phase, event: dict[str, Any]) -> PromoteResult | Phase:
    """Judge a phase whose wait ended, then act on the verdict: the next phase or the final result."""
    log.info("%s of v%s: the wait ended (%s, %s counted)", phase.title(), run.version, event.get("status"),
             event.get("requests"))  # fmt: skip
    if phase.kind == "canary":
        return after_canary_step(run, phase, judge_canary(phase, event, run.ctx))
    if phase.kind == "shadow":
        return after_shadow(run, phase, judge_shadow(phase, event, run.ctx))
    return after_ab_test(run, phase, judge_ab(phase, event, run.ctx))


def after_canary_step(run: Run, phase: Phase, verdict: Any) -> PromoteResult | Phase:
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


def after_shadow(run: Run, phase: Phase, report: Any) -> PromoteResult | Phase:
    """A failed report ends the rollout; a passed one promotes (a gate-rejected challenger: not)."""
    from dataclasses import replace

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
        req = run.req
        out = promote(req.register, req.evaluate, run.run_id, run.dag_id, run.strategy, run.spec_name, complete=False)
        return replace(out, staged_check=phase.staged, shadow_report=d)
    return RO._switch(run, None, phase.staged, live={"shadow_report": d})


def after_ab_test(run: Run, phase: Phase, result: Any) -> PromoteResult:
    """The challenger won: the switch. Otherwise the champion is kept: routing ends, the pending
    promotion is closed (undo move `keep_champion`), and the task succeeds saying so."""
    from dataclasses import replace

    from include.mlops import ledger as L
    from include.mlops import moves as M
    from include.mlops.delivery import rollout as RO
    from include.mlops.results import PromoteResult

    d = result.to_dict()
    record(run, phase, "ab_test", d, result.table(), "ab_test", metrics=result.mlflow_metrics())
    if result.promote:  # the result names the winner and why, before the switch's own message
        out = RO._switch(run, None, phase.staged, live={"ab_test": d})
        return replace(out, message=f"{result.summary()}; {out.message}", outcome=result.decision)
    undo = M.undo_move(
        run.ctx.client, run.ctx.store, run.move, action="keep_champion", reason=result.summary(),
        run_id=run.run_id, dag_id=run.dag_id, strategy=run.strategy,
    )  # fmt: skip
    reload(phase.service_url)
    msg = f"not promoted: {result.summary()}; the A/B test ended (ledger move {undo.move})"
    log.info(msg)
    reg = run.req.register
    return PromoteResult(
        promoted=False, message=msg, champion=run.champion, gate_passed=True, model=reg.model, version=reg.version,
        run_id=reg.run_id, experiment_id=reg.experiment_id, move=run.move.move, move_status=L.ROLLED_BACK,
        resumed=run.resumed, strategy=run.strategy, staged_check=phase.staged, ab_test=d, outcome=result.decision,
    )  # fmt: skip


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
    from include.mlops import ledger as L

    log.info("%s of %s v%s vs v%s:\n%s", phase.title(), run.model, run.version, run.champion, table)
    d = {**d, "phase": phase.title(), "share": phase.share, "began_at": phase.began_at, "judged_at": time.time()}
    if run.move is not None:
        L.record_step(run.ctx.store, run.move, what, d)
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
