"""Moves of `champion`: a transaction a retry can finish, recorded in `include.mlops.ledger`.

The champion changes only here, by moving the `champion` alias (atomic in the registry), and
every move is written to the ledger: when, from which version to which, why, by which run, under
which deployment strategy. A move's intent is in the ledger before any alias changes, so a
process killed at any point leaves behind what it meant to do.

The steps, each a function that a retry may repeat: `begin_move` (the `pending` entry);
`apply_move` (`previous` first, then `champion`: at every point the pending entry names the
version a rollback needs, and `previous` never loses it); `complete_move`. An undo is a move too
(`undo`, `undoes` = the move it reverses): it ends the rollout (the `challenger` alias removed,
the strategy tags back to the idle `direct`, so the service stops routing to and shadow-scoring
the version within one poll) and puts `champion` back to the version the undone move replaced.
Undoing a move that completed (a rollback of a promotion in force) makes the version rolled back
from `previous`; undoing one that never completed (a failed check, an interrupted rollout) puts
`previous` back as it was and closes that move as `rolled_back`.

Who finishes an interrupted move: a promotion that awaits its deployment check (a rollout's)
only the same run's retry, which runs the checks again, or a rollback, which undoes it; any other
move (rollbacks, undos, promotions without a check) whoever touches the model's aliases next
(`finish_open_moves`). While a promotion awaits its check no other move begins (`MoveInProgress`),
except the rollback that ends it.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from include.mlops.storage import ObjectStore

from include.mlops.constants import CHAMPION, PREVIOUS
from include.mlops.ledger import (
    DONE,
    PENDING,
    ROLLED_BACK,
    LedgerEntry,
    move_record,
    moves_of,
    now,
    open_moves,
    slug,
    write_ledger,
)
from include.mlops.registry import alias_version, end_routing, point_alias

log = logging.getLogger(__name__)


class MoveInProgress(RuntimeError):
    """Another move of this model's champion has begun and not completed."""


def promotion_base(dag_id: str, run_id: str, version: str) -> str:
    """The request a rollout's promotion answers: one per run and version (its retries resume it)."""
    return f"promote-v{version}-{dag_id}-{run_id}"


def begin_move(
    client: Any,
    store: ObjectStore,
    model: str,
    to_version: str | None,
    *,
    action: str,
    reason: str,
    run_id: str,
    dag_id: str = "",
    strategy: str = "direct",
    base: str | None = None,
    undoes: LedgerEntry | None = None,
    ends_rollout: bool = False,
    awaits_check: bool = False,
) -> LedgerEntry:
    """Step 1: write the intent (status pending); nothing in the registry changes yet.

    The registry is read first (fail closed: an error propagates, it never reads as "no
    champion"). Refuses (`MoveInProgress`) while another move is open, other than the one this
    move undoes."""
    _refuse_if_moving(client, store, model, to_version, action=action, undoes=undoes)
    champion = alias_version(client, model, CHAMPION)
    previous = alias_version(client, model, PREVIOUS)
    to = None if to_version in (None, "") else str(to_version)
    from_version, previous_after = _versions_of_move(champion, previous, to, undoes)
    base = slug(base or f"{action}-v{to}-{dag_id}-{run_id}")
    n = len(moves_of(store, model, base))
    at = now()
    entry = LedgerEntry(
        at=at,
        model=model,
        action=action,
        from_version=from_version,
        to_version=to,
        reason=reason,
        run_id=run_id,
        dag_id=dag_id,
        strategy=strategy,
        status=PENDING,
        move=f"{base}-{n}",
        previous=previous_after,
        previous_before=previous,
        champion_before=champion,
        moves_champion=champion != to,
        undo=undoes is not None,
        undoes=undoes.move if undoes is not None else "",
        ends_rollout=ends_rollout or undoes is not None,
        awaits_check=awaits_check,
        started_at=at,
    )
    write_ledger(store, entry)
    log.info("%s: %s v%s -> v%s begun (move %s)", model, action, from_version, to, entry.move)
    return entry


def _refuse_if_moving(
    client: Any, store: ObjectStore, model: str, to_version: str | None, *, action: str, undoes: LedgerEntry | None
) -> None:
    """Finish the open moves that can be finished; raise `MoveInProgress` if one is still open
    (other than the move `undoes` names)."""
    waiting = [m for m in finish_open_moves(client, store, model) if not (undoes and m.move == undoes.move)]
    if waiting:
        w = waiting[0]
        raise MoveInProgress(
            f"cannot {action} {model} to v{to_version}: the {w.action} of v{w.from_version} -> v{w.to_version} by "
            f"{w.dag_id or 'a user'} run {w.run_id} began at {w.at} and has not completed (move {w.move}). "
            f"Re-run that run's deploy task to finish it, or trigger ml_rollback to end it"
        )


def _versions_of_move(
    champion: str | None, previous: str | None, to: str | None, undoes: LedgerEntry | None
) -> tuple[str | None, str | None]:
    """(the version the move takes `champion` from, the `previous` alias after it)."""
    if undoes is not None:  # `champion` back to what it was before the undone move
        # a move that completed was in force: its version becomes `previous` (the champion before
        # the current one); one that never completed leaves `previous` as it was before it
        return undoes.to_version, undoes.to_version if undoes.status == DONE else undoes.previous_before
    return champion, champion if champion not in (None, to) else previous


def apply_move(client: Any, entry: LedgerEntry) -> None:
    """Step 2: the registry as the move says; every part idempotent, so a retry repeats it."""
    if entry.ends_rollout:
        end_routing(client, entry.model)
    set_previous(client, entry)
    set_champion(client, entry)


def set_previous(client: Any, entry: LedgerEntry) -> None:
    """`previous` first: a crash before `champion` moves leaves both on versions the intent names."""
    point_alias(client, entry.model, PREVIOUS, entry.previous)


def set_champion(client: Any, entry: LedgerEntry) -> None:
    point_alias(client, entry.model, CHAMPION, entry.to_version)


def complete_move(client: Any, store: ObjectStore, entry: LedgerEntry, outcome: str = "") -> LedgerEntry:
    """Step 3: the move is done. Returns the move's final event: a move that another process
    closed meanwhile (an undo by a rollback) stays as that one left it, and its event comes back."""
    latest = move_record(store, entry.model, entry.move)
    if latest is not None and latest.status != PENDING:
        return latest
    if entry.undoes:
        undone = move_record(store, entry.model, entry.undoes)
        if undone is not None and undone.status == PENDING:
            write_ledger(
                store,
                replace(undone, at=now(), status=ROLLED_BACK, outcome=f"undone by {entry.move}: {entry.reason}"),
            )
    if entry.moves_champion and entry.to_version and not entry.undo:
        client.set_model_version_tag(entry.model, entry.to_version, "mlops.last_promoted_at", entry.at)
    done = replace(entry, at=now(), status=DONE, outcome=outcome or entry.outcome)
    write_ledger(store, done)
    return done


def finish_open_moves(client: Any, store: ObjectStore, model: str) -> list[LedgerEntry]:
    """Complete every interrupted move that needs no check (rollbacks, undos, promotions without
    a check), and return the open ones that await a deployment check."""
    for m in open_moves(store, model):
        if m.awaits_check:
            continue
        current = move_record(store, model, m.move)  # an undo finished just before may have closed it
        if current is None or current.status != PENDING:
            continue
        log.warning(
            "%s: finishing the interrupted %s v%s -> v%s (move %s)",
            model,
            m.action,
            m.from_version,
            m.to_version,
            m.move,
        )
        apply_move(client, m)
        complete_move(client, store, m, outcome="finished after an interruption")
    return [m for m in open_moves(store, model) if m.awaits_check]


def undo_move(
    client: Any,
    store: ObjectStore,
    entry: LedgerEntry,
    *,
    action: str,
    reason: str,
    run_id: str,
    dag_id: str = "",
    strategy: str = "direct",
) -> LedgerEntry:
    """Reverse a move (pending or done): the rollout ends, `champion` and `previous` go back to
    what they were before it; a pending one is closed as rolled_back. Returns the undo's done event."""
    undo = begin_move(
        client,
        store,
        entry.model,
        entry.from_version,
        action=action,
        reason=reason,
        run_id=run_id,
        dag_id=dag_id,
        strategy=strategy,
        base=f"{action}-{entry.move or slug(entry.run_id)}",
        undoes=entry,
    )
    apply_move(client, undo)
    return complete_move(client, store, undo)


def move_champion(
    client: Any,
    store: ObjectStore,
    model: str,
    to_version: str,
    *,
    action: str,
    reason: str,
    run_id: str,
    dag_id: str = "",
    strategy: str = "direct",
) -> LedgerEntry | None:
    """Point `champion` at a version, keep the old one as `previous`, and record the move (all
    three steps, no check between). Returns None (and records nothing) when `to_version` already
    is the champion, so re-runs and double clicks are harmless."""
    finish_open_moves(client, store, model)
    if alias_version(client, model, CHAMPION) == str(to_version):
        return None
    entry = begin_move(
        client,
        store,
        model,
        to_version,
        action=action,
        reason=reason,
        run_id=run_id,
        dag_id=dag_id,
        strategy=strategy,
    )
    apply_move(client, entry)
    return complete_move(client, store, entry)
