"""MLflow: tracking setup, the model registry's aliases, and the deployment ledger.

The champion changes only here, by moving the `champion` alias (atomic in the registry), and
every move is written to the ledger: when, from which version to which, why, by which run, under
which deployment strategy.

### Moves: a transaction a retry can finish

A change of `champion` is a *move*, and its intent is in the ledger before any alias changes, so
a process killed at any point leaves behind what it meant to do. The ledger keeps one object per
event, never overwritten: `ledger/<model>/<time>.<status>.<action>.<move id>.json`.

| status | written | meaning |
|---|---|---|
| `pending` | before any alias moves (`begin_move`) | the intent: from and to version, what `previous` becomes and was, the strategy in force, who asked |
| `done` | after the aliases moved (`complete_move`); for a rollout's promotion only once its checks passed | the move is complete |
| `rolled_back` | when an undo of a move that never completed has completed | the move is over; the aliases are back as they were before it |

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

A live rollout also writes *step* events of its pending move (`record_step`, status `step`):
each canary step's verdict, the shadow report, the A/B decision, with the figures judged. They
never change the move's status; `read_ledger(..., history=True)` lists them among its events.

`read_ledger` gives one record per move (its latest event: `status`, `at` when it began, `ended_at`
when it completed); `read_ledger(..., history=True)` every event. Entries written before moves
had ids read as `done` moves.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from include.mlops.config import Settings
    from include.mlops.storage import ObjectStore

from include.mlops.constants import CHALLENGER, CHAMPION, PREVIOUS

log = logging.getLogger(__name__)

PENDING, DONE, ROLLED_BACK = "pending", "done", "rolled_back"
STATUSES = (PENDING, DONE, ROLLED_BACK)
STEP = "step"  # an event of a pending move that records a live phase's verdict; not a status change
# Variant routing when no rollout runs: the service answers with the champion only.
IDLE_STRATEGY, IDLE_SHARE = "direct", 0.0


class MoveInProgress(RuntimeError):
    """Another move of this model's champion has begun and not completed."""


def mlflow_client(tracking_uri: str) -> Any:
    """MLflow's process-wide tracking and registry URIs set to `tracking_uri`, and a client on it.
    The globals matter: `models:/` downloads resolve through them whatever URI they are given."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    with _sqlite_schema_lock(tracking_uri):
        client = MlflowClient(tracking_uri, tracking_uri)  # opens (creates, migrates) the stores
        if tracking_uri.startswith("sqlite:"):
            client.search_registered_models(max_results=1)  # the registry's store opens lazily
    return client


def setup_mlflow(settings: Settings) -> Any:
    """Point MLflow at the configured tracking server; returns a client."""
    from include.mlops.config import quiet_telemetry

    quiet_telemetry()
    settings.home.mkdir(parents=True, exist_ok=True)
    return mlflow_client(settings.tracking_uri)


@contextlib.contextmanager
def _sqlite_schema_lock(uri: str) -> Iterator[None]:
    """Held while a process opens a SQLite tracking database. MLflow creates and migrates a new
    database in the first process that opens it; two tasks doing that at once (ml_monitoring and
    ml_batch_scoring on a fresh home) collide ("duplicate column name") and one fails."""
    import fcntl
    from pathlib import Path

    path = uri.split(":///", 1)[1] if uri.startswith("sqlite:///") else ""
    if not path or path == ":memory:":
        yield
        return
    db = Path(path)
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".init.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_experiment(client: Any, name: str, settings: Settings) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = f"{settings.mlflow_artifacts.rstrip('/')}/{name}" if settings.mlflow_artifacts else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # created concurrently by another task
        return client.get_experiment_by_name(name).experiment_id


def is_not_found(exc: BaseException) -> bool:
    """Whether an MLflow error says "no such model or alias" (and nothing else: a server error,
    a timeout or a refused connection is not an answer, and must never read as one)."""
    from mlflow.exceptions import MlflowException

    if not isinstance(exc, MlflowException):
        return False
    if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
        return True
    return exc.error_code == "INVALID_PARAMETER_VALUE" and "alias" in str(exc) and "not found" in str(exc)


def alias_version(client: Any, model: str, alias: str) -> str | None:
    """The version an alias points to; None only when the registry says the model or the alias
    does not exist. Any other error propagates: a task that cannot read the registry fails (and
    retries) rather than deciding as if there were no champion."""
    try:
        return str(client.get_model_version_by_alias(model, alias).version)
    except Exception as exc:
        if is_not_found(exc):
            return None
        raise


def find_version(client: Any, model: str, run_id: str) -> str | None:
    """The version registered from a run, if any (re-runs must not register a second one)."""
    versions = client.search_model_versions(f"name='{model}' and run_id='{run_id}'")
    return str(min(int(v.version) for v in versions)) if versions else None


def register(client: Any, model: str, model_uri: str, run_id: str, tags: dict[str, str]) -> tuple[str, bool]:
    """Register once per run; returns (version, created). Sets the `challenger` alias."""
    from mlflow.exceptions import MlflowException

    existing = find_version(client, model, run_id)
    created = existing is None
    if created:
        try:
            client.create_registered_model(model, description="Managed by the MLOps platform; see the ledger.")
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":  # any other error is not "already there"
                raise
        # A logged model's URI (models:/m-<id>) must name its model id, or a tracking server
        # refuses it ("The model_id request parameter must identify the resource ...").
        model_id = model_uri.split("models:/", 1)[1].split("/")[0] if model_uri.startswith("models:/m-") else None
        source = model_uri
        if model_id is not None:
            source = client.get_logged_model(model_id).artifact_location
        # create_model_version waits until the version is READY (await_creation_for, 300 s)
        mv = client.create_model_version(model, source, run_id=run_id, tags=tags, model_id=model_id)
        existing = str(mv.version)
    else:
        for k, v in tags.items():
            client.set_model_version_tag(model, existing, k, v)
    client.set_registered_model_alias(model, CHALLENGER, existing)
    return existing, created


# -- the ledger ---------------------------------------------------------------------------------
@dataclass
class LedgerEntry:
    at: str
    model: str
    action: str  # promote | rollback | rollback_after_failed_check
    from_version: str | None
    to_version: str | None  # None: the move removes `champion` (undo of a first champion)
    reason: str
    run_id: str
    dag_id: str = ""
    strategy: str = "direct"  # the deployment strategy in force (the service's strategy tag)
    status: str = DONE
    move: str = ""  # every event of one move carries its id
    previous: str | None = None  # what `previous` points to once the move is applied
    previous_before: str | None = None  # ... and pointed to when it began (an undo restores it)
    champion_before: str | None = None
    moves_champion: bool = True  # False: `champion` already was `to_version` (an undo of a staged check)
    undo: bool = False  # reverses the move `undoes` (a second rollback never undoes an undo)
    undoes: str = ""
    ends_rollout: bool = False  # clears `challenger` and the strategy tags when applied
    awaits_check: bool = False  # a rollout's promotion: completes only after its deployment check
    outcome: str = ""  # how it ended (on the done / rolled_back event)
    started_at: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LedgerEntry:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)[:150]


def ledger_prefix(model: str) -> str:
    return f"ledger/{model}"


def ledger_key(entry: LedgerEntry) -> str:
    stamp = entry.at.replace(":", "").replace(".", "")
    ident = _slug(entry.move or entry.run_id)
    return f"{ledger_prefix(entry.model)}/{stamp}.{entry.status}.{entry.action}.{ident}.json"


def write_ledger(store: ObjectStore, entry: LedgerEntry) -> str:
    """One object per event, keyed by time, status and move: history, never overwritten."""
    return store.put_json(ledger_key(entry), asdict(entry))


@dataclass(frozen=True)
class _Event:
    key: str
    status: str | None  # None: written before moves had ids (the object says; it reads as done)
    move: str


def _events(store: ObjectStore, model: str, *, steps: bool = False) -> list[_Event]:
    """The ledger's events in time order, told apart by their keys (one LIST, no object read);
    a move's step events only with `steps` (they never change its status)."""
    out = []
    for k in store.list(ledger_prefix(model)):
        if not k.endswith(".json"):
            continue
        parts = k.rsplit("/", 1)[-1][: -len(".json")].split(".", 3)
        if len(parts) == 4 and parts[1] == STEP:
            if steps:
                out.append(_Event(k, STEP, parts[3]))
        elif len(parts) == 4 and parts[1] in STATUSES:
            out.append(_Event(k, parts[1], parts[3]))
        else:
            out.append(_Event(k, None, k))
    return out


def _by_move(events: list[_Event]) -> dict[str, list[_Event]]:
    groups: dict[str, list[_Event]] = {}
    for e in events:
        groups.setdefault(e.move, []).append(e)
    return groups  # in the order the moves began


def _entry(store: ObjectStore, ev: _Event) -> LedgerEntry:
    return LedgerEntry.from_dict(store.get_json(ev.key))


def read_ledger(store: ObjectStore, model: str, *, history: bool = False) -> list[dict[str, Any]]:
    """One record per move, in the order they began: its latest event (`status`), `at` when it
    began and `ended_at` when it completed. `history=True`: every event as written."""
    if history:
        return [{"status": DONE, **store.get_json(e.key)} for e in _events(store, model, steps=True)]
    events = _events(store, model)
    out = []
    for evs in _by_move(events).values():
        d = {"status": DONE, **store.get_json(evs[-1].key)}
        if d["status"] != PENDING:
            d["ended_at"] = d["at"]
            d["at"] = d.get("started_at") or d["at"]
        out.append(d)
    return out


def record_step(store: ObjectStore, entry: LedgerEntry, what: str, step: dict[str, Any]) -> str:
    """Write a step event of the move `entry` (a canary step, the shadow report, the A/B
    decision: `what`), holding `step` (the verdict and the figures judged)."""
    at = now()
    stamp = at.replace(":", "").replace(".", "")
    body = {**step, "at": at, "model": entry.model, "move": entry.move, "status": STEP, "action": what,
            "from_version": entry.from_version, "to_version": entry.to_version, "strategy": entry.strategy,
            "run_id": entry.run_id, "dag_id": entry.dag_id}  # fmt: skip
    return store.put_json(f"{ledger_prefix(entry.model)}/{stamp}.{STEP}.{_slug(what)}.{_slug(entry.move)}.json", body)


def steps_of(store: ObjectStore, model: str, move: str) -> list[dict[str, Any]]:
    """The step events of one move, oldest first."""
    return [store.get_json(e.key) for e in _events(store, model, steps=True) if e.status == STEP and e.move == move]


def move_record(store: ObjectStore, model: str, move: str) -> LedgerEntry | None:
    """The latest event of a move (its current status), or None."""
    evs = _by_move(_events(store, model)).get(move)
    return _entry(store, evs[-1]) if evs else None


def open_moves(store: ObjectStore, model: str) -> list[LedgerEntry]:
    """Moves that began and have not completed, oldest first."""
    return [_entry(store, evs[-1]) for evs in _by_move(_events(store, model)).values() if evs[-1].status == PENDING]


def moves_of(store: ObjectStore, model: str, base: str) -> list[LedgerEntry]:
    """The moves begun for one request (`base`, see `begin_move`), oldest first, each at its
    latest event."""
    pattern = re.compile(re.escape(_slug(base)) + r"-\d+")
    groups = _by_move(_events(store, model))
    return [_entry(store, evs[-1]) for m, evs in groups.items() if pattern.fullmatch(m)]


def last_move_in_force(store: ObjectStore, model: str) -> LedgerEntry | None:
    """The newest completed move that changed `champion` (promotion, rollback or undo), or None."""
    for evs in reversed(list(_by_move(_events(store, model)).values())):
        if evs[-1].status not in (None, DONE):
            continue
        e = _entry(store, evs[-1])
        if e.status == DONE and e.moves_champion and e.from_version != e.to_version:
            return e
    return None


def promotion_base(dag_id: str, run_id: str, version: str) -> str:
    """The request a rollout's promotion answers: one per run and version (its retries resume it)."""
    return f"promote-v{version}-{dag_id}-{run_id}"


# -- the steps of a move --------------------------------------------------------------------------
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
    base = _slug(base or f"{action}-v{to}-{dag_id}-{run_id}")
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
    _point(client, entry.model, PREVIOUS, entry.previous)


def set_champion(client: Any, entry: LedgerEntry) -> None:
    _point(client, entry.model, CHAMPION, entry.to_version)


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
        base=f"{action}-{entry.move or _slug(entry.run_id)}",
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


# -- variant routing ----------------------------------------------------------------------------------
def strategy_in_force(client: Any, model: str, default: str) -> str:
    """The deployment strategy the service follows now: the registered model's tag (the spec's
    default when the tag was never set, as the service reads it)."""
    from include.mlops.serving.config import STRATEGY_TAG

    try:
        tags = dict(client.get_registered_model(model).tags or {})
    except Exception as exc:
        if is_not_found(exc):
            return default
        raise
    return tags.get(STRATEGY_TAG) or default


def end_routing(client: Any, model: str) -> None:
    """No variant routing: `challenger` removed, strategy tags back to idle. The service stops
    routing to (canary) and scoring with (shadow) any challenger at its next registry read."""
    from include.mlops.serving.config import CANARY_SHARE_TAG, STRATEGY_TAG

    client.set_registered_model_tag(model, STRATEGY_TAG, IDLE_STRATEGY)
    client.set_registered_model_tag(model, CANARY_SHARE_TAG, str(IDLE_SHARE))
    _point(client, model, CHALLENGER, None)


def _point(client: Any, model: str, alias: str, version: str | None) -> None:
    """Set an alias, or remove it (None; an alias already gone is fine)."""
    if version is not None:
        client.set_registered_model_alias(model, alias, str(version))
        return
    try:
        client.delete_registered_model_alias(model, alias)
    except Exception as exc:
        if not is_not_found(exc):
            raise
