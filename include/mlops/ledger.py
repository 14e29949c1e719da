"""The deployment ledger: every event of every move of `champion`, one object each, never overwritten.

A move (see `include.mlops.moves`) writes its intent before any alias changes, and its end once
the aliases moved: `ledger/<model>/<time>.<status>.<action>.<move id>.json`.

| status | written | meaning |
|---|---|---|
| `pending` | before any alias moves (`begin_move`) | the intent: from and to version, what `previous` becomes and was, the strategy in force, who asked |
| `done` | after the aliases moved (`complete_move`); for a rollout's promotion only once its checks passed | the move is complete |
| `rolled_back` | when an undo of a move that never completed has completed | the move is over; the aliases are back as they were before it |

A live rollout also writes *step* events of its pending move (`record_step`, status `step`):
each canary step's verdict, the shadow report, the A/B decision, with the figures judged. They
never change the move's status; `read_ledger(..., history=True)` lists them among its events.

`read_ledger` gives one record per move (its latest event: `status`, `at` when it began, `ended_at`
when it completed); `read_ledger(..., history=True)` every event. Entries written before moves
had ids read as `done` moves.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from include.mlops.storage import ObjectStore


PENDING, DONE, ROLLED_BACK = "pending", "done", "rolled_back"
STATUSES = (PENDING, DONE, ROLLED_BACK)
STEP = "step"  # an event of a pending move that records a live phase's verdict; not a status change


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


def slug(text: str) -> str:
    """`text` as it may stand in a ledger key."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)[:150]


def ledger_prefix(model: str) -> str:
    return f"ledger/{model}"


def ledger_key(entry: LedgerEntry) -> str:
    stamp = entry.at.replace(":", "").replace(".", "")
    ident = slug(entry.move or entry.run_id)
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
    return store.put_json(f"{ledger_prefix(entry.model)}/{stamp}.{STEP}.{slug(what)}.{slug(entry.move)}.json", body)


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
    pattern = re.compile(re.escape(slug(base)) + r"-\d+")
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
