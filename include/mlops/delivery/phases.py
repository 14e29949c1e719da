"""The live phases of a rollout: what one waits for (its verdict once the wait is over is `verdicts`).

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
`rollout.rollout`, tests). The polls of one wait share a `poll_cache()`, so an A/B test's poll
reads only the log and label objects that arrived since the poll before. Nothing here depends on a quiet machine: a wait is bounded by the
phase's deadline, and every comparison is between the two versions on the same traffic.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from include.mlops.delivery.abwindow import ReadOnceStore

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
def poll_cache() -> ReadOnceStore:
    """What the polls of one wait share: an A/B test's prediction-log and label objects, each
    read once (`abwindow.ReadOnceStore`); pass it to every `check` of the wait."""
    from include.mlops.delivery.abwindow import ReadOnceStore

    return ReadOnceStore()


def progress(phase: Phase, kept: ReadOnceStore | None = None) -> int:
    """How much of `phase.need` has come: the new version's live requests since the phase began
    (canary, shadow), or the smaller arm's labelled outcomes (ab_test; with `kept`, only the
    objects the wait's earlier polls did not read are read)."""
    from include.mlops.delivery import live

    if phase.kind == "ab_test":
        from include.mlops.context import context
        from include.mlops.delivery.abwindow import labelled_per_arm

        flush(phase.service_url)
        ctx = context(phase.spec_name)
        store = kept.over(ctx.store) if kept is not None else ctx.store
        counts = labelled_per_arm(
            store, ctx.spec, phase.began_at, time.time(), versions={"champion": phase.champion,
                                                                     "challenger": phase.version}
        )  # fmt: skip
        return min(counts.values())
    if phase.before is None:
        raise ValueError(f"{phase.title()} has no metrics snapshot to count from")
    return int(live.requests_of(phase.service_url, phase.version, phase.variant, phase.before))


def check(phase: Phase, now: float | None = None, kept: ReadOnceStore | None = None) -> dict[str, Any] | None:
    """The event that ends the wait (ready: soaked and enough came; deadline: the deadline
    passed), or None to wait on. Counting that fails (the service restarting) is logged and
    waited on, up to the deadline. `kept`: the wait's `poll_cache()`, shared by its polls."""
    now = time.time() if now is None else now
    if now < phase.soak_until and now < phase.deadline:
        return None
    try:
        n = progress(phase, kept)
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
    kept = poll_cache()
    while True:
        event = check(phase, kept=kept)
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
