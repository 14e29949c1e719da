"""The deploy step: promotion through the gate by strategy, live phases, checks, undo on failure.

`start` is the deploy task of `ml_training` / `ml_retraining` (through `MlflowPromoteOperator`),
`resume` its continuation after each live phase's wait (deferred to `LiveTrafficTrigger`);
`rollout` runs both in one process. By strategy (the spec's `deployment.strategy`, or the run's):

| strategy | before the champion moves | the switch | after |
|---|---|---|---|
| direct | - | `promote` | smoke + load test on the new champion |
| blue_green | the service loads, warms and smoke-tests the new version beside the old one | `promote` (instant) | smoke + load test |
| canary | staged check, then each of `canary.steps`: the new version answers that share of the entities; after the soak and `min_requests` live requests the step is judged against the champion on that step's traffic (`analysis.judge_canary_step`) | `promote` after the last step passed | smoke + load test |
| shadow | staged check, then a phase in which it scores every live request and answers none, ended by a report (`analysis.shadow_report`); a challenger the gate rejected is watched too, never promoted | `promote` if the report passed | smoke + load test |
| ab_test | staged check, then champion and challenger split the entities (`ab_test.share`) until `samples_per_arm` labelled outcomes per arm or the period; `abtest.decide` | `promote` if the challenger won; else the champion is kept and the task succeeds | smoke + load test |

The promotion is a ledger transaction (`moves`): `pending` before the strategy is published
or any alias moves, `done` once the checks passed; every phase verdict is a step event of the
move (`ledger.record_step`), also in the task log (a table) and the model's MLflow run. A
failed check, step or report ends the rollout: the `challenger` alias removed, the strategy
tags back to `direct` (the service stops routing to and shadow-scoring it at its next poll), the
move undone (`rollback_after_failed_check`), `DeploymentCheckFailed` raised. A retry of the run
finishes its pending move under the strategy it began with (a canary after its last passed
step); a rollback meanwhile makes the resumed phase stop with a message that says so. Live
phases need the live service (MLOPS_SERVE_URL); where the check had to start a service of its
own, nothing live reaches it and the rollout is judged on the staged check, with a warning.
The step is asked by a `DeployRequest` (the register and evaluate results, the run, the strategy;
`request`) and hands back a `results.PromoteResult`. The staged check and the undo after a failed
check are in `staging`. Heavy libraries are imported inside the functions.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from include.mlops.delivery import phases, verdicts
from include.mlops.delivery.checks import CheckResult, _describe, _log_check, run_check
from include.mlops.delivery.phases import Phase
from include.mlops.delivery.request import DeployRequest, Run, ended_as, strategy_of
from include.mlops.delivery.service import ServiceHandle, refresh, service_for_check, wait_for
from include.mlops.delivery.staging import _baseline_service, _roll_back_failed, _staged_check, _staged_failed

if TYPE_CHECKING:
    from include.mlops.results import PromoteResult

log = logging.getLogger(__name__)


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


# -- the deploy step ----------------------------------------------------------------------------------
LIVE_KINDS = ("canary", "shadow", "ab_test")  # strategies whose rollout waits for live traffic


def publish_strategy(client: Any, model: str, strategy: str, share: float) -> None:
    """The running service follows these tags (see serving.models.ModelManager). Only a rollout
    that deploys something publishes them; a rollback or failed check sets them back to idle
    (`registry.end_routing`)."""
    from include.mlops.serving.config import CANARY_SHARE_TAG, STRATEGY_TAG

    client.set_registered_model_tag(model, STRATEGY_TAG, strategy)
    client.set_registered_model_tag(model, CANARY_SHARE_TAG, str(share))


def rollout(req: DeployRequest) -> PromoteResult:
    """The whole rollout in this process: `start`, then each live phase waited for here
    (`phases.wait`, bounded by the phase's deadline) and `resume`d, until the final result.
    The deploy task does the same with the waits deferred to the triggerer."""
    out: PromoteResult | Phase = start(req)
    while isinstance(out, Phase):
        out = resume(out, phases.wait(out))
    return out


def start(req: DeployRequest) -> PromoteResult | Phase:
    """Promote through the gate by the chosen strategy: the final result, or the first live
    `Phase` to wait for (canary, shadow, ab_test with a live service).

    The promotion is a ledger transaction (`moves`): begun (`pending`) before the strategy is
    published or any alias moves, completed (`done`) only once the checks passed, undone
    (`rolled_back`) when one failed. A retry of the same run finds its pending promotion and
    finishes it, checks included, under the strategy it began with (a canary goes on after the
    last step the ledger records as passed); a promotion this run already completed or rolled
    back is not done again. A run that deploys nothing (gate failed, strategy not shadow) leaves
    the service's strategy tags alone."""
    from include.mlops import ledger as L
    from include.mlops import moves as M
    from include.mlops import registry as R
    from include.mlops.constants import CHAMPION
    from include.mlops.context import context
    from include.mlops.pipeline import promote

    ctx = context(req.spec_name)
    store, client = ctx.store, ctx.client
    model, version, run_id, dag_id = req.register.model, req.register.version, req.run_id, req.dag_id
    M.finish_open_moves(client, store, model)  # a rollback interrupted earlier completes first
    mine = L.moves_of(store, model, M.promotion_base(dag_id, run_id, version))
    move = mine[-1] if mine else None
    if move is not None and move.status == L.DONE:
        return _completed_before(client, move, req)
    if move is not None and move.status != L.PENDING:
        raise DeploymentCheckFailed(
            f"this run's promotion of v{version} ended {move.status} at {move.at}: {move.outcome}; "
            f"it is not promoted again (ledger move {move.move})",
            **ended_as(model, version, move.status, move.from_version),
        )
    if move is not None:
        log.warning("resuming this run's promotion of v%s begun at %s (move %s)", version, move.at, move.move)
    # a retry finishes the rollout it began, under its strategy, not another
    strategy, share = strategy_of(ctx.spec, move.strategy if move is not None else req.strategy)
    champion_now = R.alias_version(client, model, CHAMPION)  # a registry error fails the step
    run = Run(ctx, req, strategy, move, None, champion_now, move is not None)
    if move is None and run.passed and champion_now != version:
        run.move = M.begin_move(
            client, store, model, version, action="promote",
            reason="gate passed: " + ", ".join(f"{k}={v:.4f}" for k, v in req.evaluate.metrics.items()),
            run_id=run_id, dag_id=dag_id, strategy=strategy, base=M.promotion_base(dag_id, run_id, version),
            awaits_check=True,
        )  # fmt: skip
    run.champion = run.move.from_version if run.move is not None else champion_now
    shadow_only = run.move is None and strategy == "shadow" and champion_now not in (None, version)
    if run.move is None and not shadow_only:  # nothing deploys: the service's routing stays as it is
        return promote(req.register, req.evaluate, run_id, dag_id, strategy, req.spec_name, complete=False)
    publish_strategy(client, model, strategy, run.share_now(share))
    return _stage(run)


def _completed_before(client: Any, move: Any, req: DeployRequest) -> PromoteResult:
    from include.mlops import registry as R
    from include.mlops.constants import CHAMPION
    from include.mlops.results import PromoteResult

    reg = req.register
    msg = f"v{reg.version}: this run's promotion of it completed at {move.at} after its checks passed"
    log.info(msg)
    return PromoteResult(
        promoted=True, message=msg, champion=R.alias_version(client, move.model, CHAMPION), gate_passed=True,
        model=reg.model, version=reg.version, run_id=reg.run_id, experiment_id=reg.experiment_id,
        previous=move.from_version, move=move.move, resumed=True, strategy=move.strategy, checked=True,
    )  # fmt: skip


def _stage(run: Run) -> PromoteResult | Phase:
    """Before the switch: the staged check (blue/green warms the new version beside the old;
    canary, shadow and ab_test let it take or watch traffic and check it), then the first live
    phase when the service is the live one; else straight to the switch."""
    client, store = run.ctx.client, run.ctx.store
    handle: ServiceHandle | None = None
    try:
        staged = None
        # shadow watches even a challenger the gate rejected (it never answers); the others only
        # stage one that may go live
        wanted = run.strategy == "shadow" or (run.strategy in ("canary", "blue_green", "ab_test") and run.passed)
        if wanted and run.champion not in (None, run.version) and run.champion_now != run.version:
            try:
                handle = service_for_check(run.model, run.env)
            except Exception as exc:  # no service, no check: never promoted unchecked
                raise _staged_failed(
                    client, store, None, run.strategy, run.model, run.version, run.champion, run.move,
                    f"{run.strategy} check of v{run.version} could not run: no scoring service ({exc})", run.run_id,
                    run.dag_id,
                ) from exc  # fmt: skip
            staged = _staged_check(
                handle, client, run.ctx.spec, store, run.strategy, run.model, run.version, run.champion,
                run.mlflow_run, run.run_id, run.dag_id, run.move,
            )  # fmt: skip
            if run.strategy in LIVE_KINDS and not handle.started:
                return _due(run, _first_phase(run, handle.url, staged))
            if run.strategy in LIVE_KINDS:
                log.warning(
                    "no live scoring service (MLOPS_SERVE_URL) to watch live traffic on: the %s of v%s is judged "
                    "on its staged check only, on the service started for it at %s", run.strategy, run.version,
                    handle.url,
                )  # fmt: skip
        return _switch(run, handle, staged)
    finally:
        if handle is not None and handle.started:
            handle.close()
            handle.cleanup()


def _first_phase(run: Run, url: str, staged: dict[str, Any] | None) -> Phase:
    dep = run.ctx.spec.deployment
    base = run.phase_base(url, staged)
    if run.strategy == "canary":
        k = run.canary_steps_passed()
        return phases.begin("canary", dep.canary, base=base, share=dep.canary.steps[k], step=k, steps=dep.canary.steps)
    if run.strategy == "shadow":
        return phases.begin("shadow", dep.shadow, base=base)
    return phases.begin("ab_test", dep.ab_test, base=base, share=dep.ab_test.share)


def _due(run: Run, phase: Phase) -> PromoteResult | Phase:
    """The phase to wait for, or its verdict at once when it has nothing to wait for."""
    log.info("live phase: %s", phase.describe())
    if phases.due_now(phase):
        return verdicts.judge(run, phase, {"status": phases.READY, "requests": 0, "at": time.time()})
    return phase


def resume(state: dict[str, Any] | Phase, event: dict[str, Any] | None) -> PromoteResult | Phase:
    """Judge a phase once its wait is over (`event` from the trigger or `phases.wait`): the next
    phase, or the final result; raises `DeploymentCheckFailed` when the phase failed (the
    rollout is then ended and the promotion undone). A rollout ended meanwhile (ml_rollback)
    stops here with a message that says so."""
    from include.mlops import ledger as L
    from include.mlops.context import context

    phase = Phase.from_dict(state)
    ctx = context(phase.spec_name)
    move = L.move_record(ctx.store, phase.model, phase.move) if phase.move else None
    if phase.move and (move is None or move.status != L.PENDING):
        how = f"{move.status} at {move.at}: {move.outcome}" if move is not None else "missing from the ledger"
        raise DeploymentCheckFailed(
            f"the rollout of {phase.model} v{phase.version} was ended during its {phase.title()} ({how}); "
            f"the phase stops here (ledger move {phase.move})",
            **ended_as(phase.model, phase.version, move.status if move else None, move.from_version if move else None),
        )  # fmt: skip
    req = DeployRequest.of(phase.reg_out, phase.eval_out, phase.run_id, phase.dag_id, phase.strategy, phase.spec_name)
    run = Run(ctx, req, phase.strategy, move, phase.champion, phase.champion, phase.resumed)
    return verdicts.judge(run, phase, event or {"status": phases.READY, "requests": None, "at": time.time()})


def _switch(run: Run, handle: ServiceHandle | None, staged: dict[str, Any] | None,
            live: dict[str, Any] | None = None) -> PromoteResult:  # fmt: skip
    """The switch: `promote`, then the post-promotion check on the service; the move completes
    when it passed and is undone when it failed (`DeploymentCheckFailed`)."""
    from include.mlops import ledger as L
    from include.mlops.pipeline import promote

    store, model, version = run.ctx.store, run.model, run.version
    if run.move is not None:
        now = L.move_record(store, model, run.move.move)
        if now is not None and now.status != L.PENDING:  # a rollback ended the rollout meanwhile
            raise DeploymentCheckFailed(
                f"the rollout of v{version} was ended ({now.status}) at {now.at} before the switch: {now.outcome}",
                **run.ended(now.status, now.from_version),
            )
    started_here = False
    baseline = run.champion if run.champion not in (None, version) else None
    if baseline and run.passed and handle is None and run.champion_now != version:
        # the service the check uses must hold the current version too: after the switch it
        # stays in memory there, and the check measures both side by side (a retry after the
        # switch cannot wait for it: the check pins it if the service still holds it)
        handle = _baseline_service(model, run.env, baseline)
        started_here = handle is not None and handle.started
    try:
        req = run.req
        out = promote(req.register, req.evaluate, run.run_id, run.dag_id, run.strategy, run.spec_name, complete=False)
        base = replace(out, staged_check=staged, resumed=run.resumed, **(live or {}))
        if not out.promoted:
            if run.move is not None:  # the pending promotion was closed by someone else meanwhile
                raise DeploymentCheckFailed(
                    f"v{version} was not promoted: {out.message}", **run.ended(out.move_status, out.previous)
                )
            return base
        if handle is None:
            handle = service_for_check(model, run.env)
            started_here = handle.started
        return _post_check(run, handle, base, out.previous or baseline, out.previous)
    finally:
        if started_here and handle is not None:
            handle.close()
            handle.cleanup()


def _post_check(run: Run, handle: ServiceHandle, base: PromoteResult, compare_with: str | None,
                previous: str | None) -> PromoteResult:  # fmt: skip
    from include.mlops import ledger as L
    from include.mlops import moves as M
    from include.mlops import registry as R

    client, store, model, version = run.ctx.client, run.ctx.store, run.model, run.version
    try:
        wait_for(handle, champion=version)
        res = run_check(handle, run.ctx.spec, store, "post_promotion", {version}, candidate=version,
                        baseline=compare_with)  # fmt: skip
    except Exception as exc:  # a check that cannot run has not passed: never leave an unchecked champion
        why = (
            str(exc)
            if isinstance(exc, DeploymentCheckFailed)
            else f"the check could not run: {type(exc).__name__}: {exc}"
        )
        res = CheckResult("post_promotion", False, {"passed": False, "checks": 0, "failures": [why]}, {}, [why])
    _log_check(client, run.mlflow_run, res, "deploy")
    if res.passed:
        ld = res.load
        checked = f"v{version} passed its post-deployment check on {handle.url}: {_describe(ld)}"
        final = M.complete_move(client, store, run.move, outcome=checked)
        if final.status != L.DONE:
            raise DeploymentCheckFailed(
                f"v{version} passed its check, but the rollout was ended ({final.status}) meanwhile: {final.outcome}",
                **run.ended(final.status, final.from_version),
            )
        log.info(checked)  # the promotion itself was logged by `promote`: each decision once
        if run.strategy != "direct":  # the rollout is over: no variant routing left behind
            R.end_routing(client, model)
        return replace(
            base, message=f"{base.message}; {checked}", checked=True, check=res.to_dict(), service_url=handle.url,
            **{f"deploy_{k}": ld[k] for k in ("rps", "p50_ms", "p95_ms", "p99_ms", "errors")},
        )  # fmt: skip
    reason = "; ".join(res.reasons)
    back = _roll_back_failed(client, store, model, version, previous, reason, run.run_id, run.dag_id, run.strategy,
                             run.move)  # fmt: skip
    try:
        refresh(handle)
    except Exception:
        pass
    raise DeploymentCheckFailed(
        f"v{version} failed its post-deployment check on {handle.url}: {reason}. {back} "
        f"(ledger action rollback_after_failed_check; report deployment/post_promotion.json in run {run.mlflow_run})",
        model=model,
        version=version,
        rolled_back=True,
        rolled_back_to=previous,
    )
