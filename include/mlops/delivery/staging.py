"""The checks around the switch that `rollout` does not judge live, and how a failed check ends a rollout.

Before the switch, `_staged_check` lets the new version stand beside the champion on the check's
service (blue/green warms it as a standby; canary, shadow and ab_test route or mirror traffic to
it and run the check) and `_baseline_service` makes that service hold the current champion so
the post-promotion check can compare both. A failed check ends the rollout with one ledger
action, `rollback_after_failed_check`: `_staged_failed` before the switch (the champion never
moved; also a failed live phase, from `verdicts.live_failed`), `_roll_back_failed` after it (the
champion goes back). Both undo the pending promotion through `_undo_failed`.
Heavy libraries are imported inside the functions.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from include.mlops.delivery.checks import CheckResult, _log_check, run_check
from include.mlops.delivery.service import ServiceHandle, refresh, service_for_check, wait_for

if TYPE_CHECKING:
    from include.mlops.delivery.rollout import DeploymentCheckFailed
    from include.mlops.spec import DatasetSpec
    from include.mlops.storage import ObjectStore

log = logging.getLogger(__name__)

FAILED_CHECK = "rollback_after_failed_check"  # the ledger action of every undo after a failed check


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
    from include.mlops.delivery.rollout import DeploymentCheckFailed

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
                canary_version=version if strategy in ("canary", "ab_test") else None,
            )
            _log_check(client, mlflow_run, res, f"deploy_{strategy}")
    except Exception as exc:  # a check that cannot run has not passed
        why = str(exc) if isinstance(exc, DeploymentCheckFailed) else f"{type(exc).__name__}: {exc}"
        res = CheckResult(strategy, False, {"passed": False, "checks": 0, "failures": [why]}, {}, [why])
    if res.passed:
        return res.to_dict()
    reason = f"{strategy} check of v{version} failed: " + "; ".join(res.reasons)
    raise _staged_failed(client, store, handle, strategy, model, version, champion, move, reason, run_id, dag_id)


def _undo_failed(client: Any, store: ObjectStore, move: Any, reason: str, run_id: str, dag_id: str,
                 strategy: str) -> None:  # fmt: skip
    """Undo the pending promotion `move` after a failed check: the rollout ends, the aliases go
    back to what they were before it, the move is closed as rolled_back."""
    from include.mlops import moves as M

    M.undo_move(
        client, store, move, action=FAILED_CHECK, reason=reason, run_id=run_id, dag_id=dag_id, strategy=strategy
    )


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
    from include.mlops import ledger as L

    if move is None:  # called without the transaction: the pending promotion of this version
        pending = [m for m in L.open_moves(store, model) if m.to_version == str(version) and m.action == "promote"]
        if not pending:
            raise RuntimeError(f"no pending promotion of {model} v{version} in the ledger to roll back")
        move = pending[-1]
    _undo_failed(client, store, move, reason, run_id, dag_id, strategy)
    if move.from_version:
        return f"champion rolled back to v{move.from_version}."
    return "there was no previous champion: the champion alias was removed (the service keeps its last model)."


def _end_watch(client: Any, store: ObjectStore, model: str, version: str, champion: str, reason: str,
               run_id: str, dag_id: str, strategy: str) -> None:  # fmt: skip
    """End the shadow watch of a challenger the gate rejected: there is no promotion to undo, so
    routing goes back to idle and the ledger records the ended rollout."""
    from include.mlops import ledger as L
    from include.mlops import registry as R

    R.end_routing(client, model)
    L.write_ledger(
        store,
        L.LedgerEntry(
            at=L.now(), model=model, action=FAILED_CHECK, from_version=version, to_version=champion, reason=reason,
            run_id=run_id, dag_id=dag_id, strategy=strategy, champion_before=champion, moves_champion=False,
            undo=True, ends_rollout=True,
        ),
    )  # fmt: skip


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
    """End a rollout whose staged check (or live phase) failed; returns the error to raise.
    Routing back to idle (`challenger` removed, strategy `direct`), the pending promotion closed
    as rolled_back (ledger action rollback_after_failed_check); the champion never moved."""
    from include.mlops.delivery.rollout import DeploymentCheckFailed

    if move is not None:
        _undo_failed(client, store, move, reason, run_id, dag_id, strategy)
    else:  # a challenger the gate rejected, watched in shadow: no promotion to undo
        _end_watch(client, store, model, version, champion, reason, run_id, dag_id, strategy)
    if handle is not None:
        try:
            refresh(handle)
        except Exception:
            pass
    where = f"service {handle.url}; " if handle is not None else ""
    return DeploymentCheckFailed(
        f"{reason}. v{version} was never promoted; champion stays v{champion}; the rollout ended: the challenger "
        f"alias was removed and the strategy set back to direct, so the service stops routing to it "
        f"({where}ledger action {FAILED_CHECK})",
        model=model,
        version=version,
        rolled_back=True,
        rolled_back_to=champion,
    )
