"""Rollback: undo the last promotion in force (or move `champion` to a named version), ending
any rollout under way; refuse a second rollback that would re-promote what was just rolled back."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from include.mlops.delivery.service import ServiceHandle, refresh

log = logging.getLogger(__name__)


@dataclass
class _Request:
    """One rollback request: who asked, on which model, under which strategy."""

    client: Any
    store: Any
    model: str
    run_id: str
    dag_id: str
    strategy: str
    reason: str | None

    def why(self, frm: str | None, to: str | None, what: str = "") -> str:
        who = f"{self.dag_id or 'a user'} (run {self.run_id})"
        return f"rollback requested by {who}: v{frm} -> v{to}{what}" + (f": {self.reason}" if self.reason else "")

    def undo(self, move: Any, reason: str) -> Any:
        from include.mlops import moves as M

        return M.undo_move(self.client, self.store, move, action="rollback", reason=reason, run_id=self.run_id,
                           dag_id=self.dag_id, strategy=self.strategy)  # fmt: skip


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
    from include.mlops import moves as M
    from include.mlops import registry as R
    from include.mlops.constants import CHAMPION
    from include.mlops.context import context

    ctx = context(spec_name)
    client, model = ctx.client, ctx.spec.model_name
    target = _registered(client, model, to_version)
    M.finish_open_moves(client, ctx.store, model)  # an interrupted rollback completes first
    req = _Request(client, ctx.store, model, run_id, dag_id,
                   R.strategy_in_force(client, model, ctx.spec.deployment.strategy), reason)  # fmt: skip
    current = R.alias_version(client, model, CHAMPION)
    done = _end_rollouts(req, current)
    current = R.alias_version(client, model, CHAMPION) if done else current
    if target is not None and target != current:
        done.append(_move_to(req, current, target))
    elif target is None and not done:
        done.append(_undo_last(req, current))
    base = {"model": model, "strategy": req.strategy}
    if not done:
        msg = f"v{target} already is the champion of {model}: nothing to roll back"
        log.info(msg)
        return {**base, "from_version": current, "to_version": target, "changed": False, "message": msg}
    frm, to = done[0].from_version, R.alias_version(client, model, CHAMPION)
    msg = (
        f"rolled {model} back from v{frm} to v{to} (strategy in force was {req.strategy}; the rollout is ended: "
        f"no challenger, strategy direct)"
    )
    _tell_service()
    log.info(msg)
    return {**base, "from_version": frm, "to_version": to, "changed": True, "message": msg}


def _registered(client: Any, model: str, to_version: str | None) -> str | None:
    """The named target, checked to be a registered version (None: none named)."""
    from include.mlops import registry as R

    if to_version in (None, ""):
        return None
    target = str(to_version)
    try:
        client.get_model_version(model, target)
    except Exception as exc:
        if R.is_not_found(exc):
            raise ValueError(f"{model} has no version {target!r}: name a registered version") from exc
        raise  # the registry did not answer: that is not "no such version"
    return target


def _end_rollouts(req: _Request, current: str | None) -> list[Any]:
    """Undo the promotions awaiting their check: the rollout under way ends."""
    from include.mlops import ledger as L
    from include.mlops import registry as R
    from include.mlops.constants import CHAMPION

    done = []
    for p in L.open_moves(req.store, req.model):
        what = (f" (ends the unfinished {p.action} of v{p.to_version} by {p.dag_id or 'a user'} run {p.run_id}, "
                f"strategy {p.strategy})")  # fmt: skip
        done.append(req.undo(p, req.why(current, p.from_version, what)))
        current = R.alias_version(req.client, req.model, CHAMPION)
    return done


def _move_to(req: _Request, current: str | None, target: str) -> Any:
    """`champion` to the named version, as a rollback move that ends the rollout."""
    from include.mlops import moves as M

    entry = M.begin_move(req.client, req.store, req.model, target, action="rollback", reason=req.why(current, target),
                         run_id=req.run_id, dag_id=req.dag_id, strategy=req.strategy, ends_rollout=True)  # fmt: skip
    M.apply_move(req.client, entry)
    return M.complete_move(req.client, req.store, entry)


def _undo_last(req: _Request, current: str | None) -> Any:
    """Undo the last completed move in force; this request's own rollback (a retry) is not redone."""
    from include.mlops import ledger as L

    last = L.last_move_in_force(req.store, req.model)
    if last is not None and last.action == "rollback" and (last.run_id, last.dag_id) == (req.run_id, req.dag_id):
        return last  # this request's own rollback, completed before a retry: nothing more
    last = _undoable(req.model, current, last)
    return req.undo(last, req.why(current, last.from_version, f" (undoes the {last.action} at {last.at})"))


def _tell_service() -> None:
    """The live service would notice at its next poll; tell it now (MLOPS_SERVE_URL, admin token)."""
    from include.mlops.config import get_settings

    settings = get_settings()
    url = settings.serve_url
    if not url:
        return
    try:
        refresh(ServiceHandle(url, settings.admin_token), timeout=60)
    except Exception as exc:
        log.warning("could not ask %s to reload (%s); it follows at its next poll", url, exc)


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
