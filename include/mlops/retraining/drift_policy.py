"""The drift policy: when a monitoring window's numbers are worth acting on.

Drift is a policy, not a flag. A window's observation (rows, drift share, performance on the
labelled part, the data-quality check) goes through rules, in this order of precedence:

| rule | blocks or triggers | action when it decides |
|---|---|---|
| data quality | a failed check blocks everything | `quarantine`: alert, never retrain on broken inputs |
| minimum sample | too few rows blocks | `insufficient_data` |
| drift share | share of drifted features >= threshold → signal | |
| performance drop | champion's holdout metric minus the window's >= threshold → signal | |
| consecutive windows | signal in fewer than N windows in a row blocks | `watch` |
| cooldown | a retrain decision or a promotion less than N days ago blocks | `cooldown` |
| (all passed) | | `retrain`: emit the drift Asset event |

The observation is the window's judged rows: the champion's answers (`monitoring.reading.judged_rows`).
Shadow rows are never counted (they answered no one); a canary's or a pinned version's answers
are reported per version in the summary's `variants`, and judged by the rollout, not here: a
retrain is about the champion.

No signal at all is `no_drift`. Each row of the table is one rule function (`EVIDENCE_RULES`, then
`PERSISTENCE_RULES`); the pure function `decide` runs them and combines their checks, and is what the
tests exercise. `drift_window.decide_window` adds the I/O: the decision history in the object store
and the deployment ledger. What a retrain then trains on is `retraining.plan.plan_retraining`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from include.mlops.constants import worse_by

if TYPE_CHECKING:
    from include.mlops.spec import DatasetSpec

RETRAIN, WATCH, COOLDOWN, QUARANTINE, INSUFFICIENT, NO_DRIFT = (
    "retrain",
    "watch",
    "cooldown",
    "quarantine",
    "insufficient_data",
    "no_drift",
)
ALERTING_ACTIONS = {RETRAIN, QUARANTINE}
DRIFT_ALIAS = "mlops-drift"


def drift_asset_uri(dataset: str) -> str:
    """The drift Asset of a dataset: a name, never a location or a credential.

    The `x-` scheme is Airflow's mark for a custom scheme: no provider URI normaliser is looked up, so
    parsing a DAG scheduled on it imports nothing (an unknown scheme loads every provider's asset
    handlers, boto3 included).
    """
    return f"x-mlops://drift/{dataset}"


@dataclass(frozen=True)
class DriftPolicy:
    min_rows: int = 500
    drift_share: float = 0.25
    performance_drop: float = 0.05
    min_labelled_rows: int = 200
    consecutive_windows: int = 1
    cooldown_days: float = 2.0
    max_bad_fraction: float = 0.01
    primary_metric: str = "roc_auc"

    @classmethod
    def from_spec(cls, spec: DatasetSpec) -> DriftPolicy:
        pol = spec.monitoring.policy
        return cls(
            min_rows=pol.min_rows,
            drift_share=pol.drift_share,
            performance_drop=pol.performance_drop,
            min_labelled_rows=int(pol.min_labelled_rows or min(pol.min_rows, 200)),
            consecutive_windows=pol.consecutive_windows,
            cooldown_days=pol.cooldown_days,
            max_bad_fraction=float(pol.max_bad_fraction if pol.max_bad_fraction is not None else cls.max_bad_fraction),
            primary_metric=spec.primary_metric,
        )


@dataclass(frozen=True)
class Observation:
    """What the monitoring task measured in one window (the subset the policy needs)."""

    day: date
    rows: int
    drift_share: float
    drifted_features: tuple[str, ...] = ()
    data_quality_passed: bool = True
    data_quality_failures: tuple[str, ...] = ()
    labelled_rows: int = 0
    window_metric: float | None = None  # the primary metric on the labelled part
    champion_metric: float | None = None  # the champion run's holdout_<primary metric>

    @classmethod
    def from_summary(cls, summary: dict[str, Any], primary: str) -> Observation:
        perf = summary.get("performance") or {}
        dq = summary.get("data_quality") or {}
        champ = summary.get("champion") or {}
        return cls(
            day=date.fromisoformat(summary["window"]["day"]),
            rows=int(summary.get("rows", 0)),
            drift_share=float(summary.get("drift_share") or 0.0),
            drifted_features=tuple(summary.get("drifted_features") or ()),
            data_quality_passed=bool(dq.get("passed", True)),
            data_quality_failures=tuple(f["check"] for f in dq.get("failures") or ()),
            labelled_rows=int(summary.get("labelled_rows", 0)),
            window_metric=_num(perf.get(primary)),
            champion_metric=_num(champ.get("holdout_metric")),
        )


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def as_utc(v: str | datetime) -> datetime:
    """An ISO timestamp (a trailing `Z` too) or a datetime, as an aware UTC datetime (naive is read as UTC)."""
    dt = v if isinstance(v, datetime) else datetime.fromisoformat(str(v).replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


PASS, SIGNAL, BLOCK, SKIP = "pass", "SIGNAL", "BLOCK", "skip"


@dataclass
class RuleCheck:
    """One row of the decision table; `action` and `reason` are what the decision takes from it."""

    rule: str
    value: str
    threshold: str
    result: str  # pass | SIGNAL | BLOCK | skip
    note: str = ""
    action: str = ""  # BLOCK: the action it forces (quarantine, watch, …)
    reason: str = ""  # BLOCK: why; SIGNAL: its clause of the retrain reason

    def row(self) -> dict[str, str]:
        """The check as stored and shown (the decision's own fields stay out)."""
        return {k: getattr(self, k) for k in ("rule", "value", "threshold", "result", "note")}


@dataclass
class DriftDecision:
    action: str
    day: str
    reason: str
    signal: bool
    streak: int
    checks: list[RuleCheck] = field(default_factory=list)
    performance_drop: float | None = None

    @property
    def fire(self) -> bool:
        return self.action == RETRAIN

    @property
    def alert(self) -> bool:
        return self.action in ALERTING_ACTIONS

    def table(self) -> str:
        """The rules, their numbers and outcome, as a fixed-width table for the task log."""
        head = f"{'rule':<22} {'value':>16} {'threshold':>14}  {'result':<7} note"
        lines = [head, "-" * len(head)]
        for c in self.checks:
            lines.append(f"{c.rule:<22} {c.value:>16} {c.threshold:>14}  {c.result:<7} {c.note}".rstrip())
        lines.append(f"decision for window {self.day}: {self.action.upper()} ({self.reason})")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "day": self.day,
            "reason": self.reason,
            "signal": self.signal,
            "streak": self.streak,
            "fire": self.fire,
            "alert": self.alert,
            "performance_drop": self.performance_drop,
            "checks": [c.row() for c in self.checks],
        }


def _drop(metric: str, champion: float, window: float) -> float:
    """How much worse the window is than the champion's holdout (positive = worse)."""
    return worse_by(metric, champion, window)


def _listed(items: tuple[str, ...], most: int) -> str:
    return ", ".join(items[:most]) + ("…" if len(items) > most else "")


# -- the rules ----------------------------------------------------------------------------------------
def _performance_drop(obs: Observation, policy: DriftPolicy) -> float | None:
    """The primary metric's drop from the champion's holdout; None when it cannot be judged."""
    if obs.champion_metric is None or obs.labelled_rows < policy.min_labelled_rows or obs.window_metric is None:
        return None
    return _drop(policy.primary_metric, obs.champion_metric, obs.window_metric)


def _streak(day: date, history: list[dict[str, Any]], need: int) -> int:
    """Windows in a row that signalled, `day`'s included, counted up to `need` (a gap breaks it)."""
    by_day = {h["day"]: h for h in history}  # of two decisions for one day, the later
    streak, d = 1, day - timedelta(days=1)
    while streak < need and by_day.get(d.isoformat(), {}).get("signal"):
        streak, d = streak + 1, d - timedelta(days=1)
    return streak


@dataclass
class RuleInputs:
    """What the rules read: the window, the policy, earlier decisions, the ledger, and two derived numbers."""

    obs: Observation
    policy: DriftPolicy
    history: tuple[dict[str, Any], ...]  # decisions of earlier windows only, oldest first
    ledger: tuple[dict[str, Any], ...]
    end: datetime  # the window's end: a promotion after it (a backfill) does not count
    drop: float | None  # `_performance_drop`
    streak: int  # `_streak`

    @classmethod
    def of(
        cls,
        obs: Observation,
        policy: DriftPolicy,
        history: list[dict[str, Any]] | None,
        ledger: list[dict[str, Any]] | None,
        window_end: datetime | None,
    ) -> RuleInputs:
        day = obs.day.isoformat()
        earlier = sorted((h for h in history or [] if h.get("day", "") < day), key=lambda h: h["day"])
        end = window_end or datetime(obs.day.year, obs.day.month, obs.day.day, tzinfo=UTC) + timedelta(days=1)
        drop, streak = _performance_drop(obs, policy), _streak(obs.day, earlier, policy.consecutive_windows)
        return cls(obs, policy, tuple(earlier), tuple(ledger or ()), end, drop, streak)

    def last_change(self) -> tuple[float, str] | None:
        """(age in days, what) of the latest retrain decision or done promotion before the window's end."""
        changes = [
            (float((self.obs.day - date.fromisoformat(h["day"])).days), f"retrain decided for window {h['day']}")
            for h in self.history
            if h.get("action") == RETRAIN
        ]
        for e in self.ledger:
            if e.get("action") == "promote" and e.get("status", "done") == "done" and e.get("at"):
                age = (self.end - as_utc(e["at"])).total_seconds() / 86400
                if age >= 0:
                    changes.append((age, f"v{e.get('to_version')} promoted at {e['at']}"))
        return min(changes, key=lambda c: c[0], default=None)  # the first of equals, as listed


def data_quality_rule(w: RuleInputs) -> RuleCheck | None:
    """A failed data-quality check blocks everything: alert, never retrain on broken inputs."""
    threshold = f"<= {w.policy.max_bad_fraction:.3f} bad"
    failures = w.obs.data_quality_failures
    if w.obs.data_quality_passed:
        return RuleCheck("data quality", "passed", threshold, PASS)
    failed = _listed(failures, 4)
    why = f"data-quality check failed ({failed}): quarantined, not retraining"
    return RuleCheck("data quality", f"{len(failures)} failed", threshold, BLOCK, failed, QUARANTINE, why)


def minimum_rows_rule(w: RuleInputs) -> RuleCheck | None:
    """Too few rows to judge blocks the window."""
    rows, need = w.obs.rows, w.policy.min_rows
    if rows >= need:
        return RuleCheck("minimum rows", str(rows), f">= {need}", PASS)
    why = f"{rows} rows < minimum {need}"
    return RuleCheck("minimum rows", str(rows), f">= {need}", BLOCK, "too few to judge", INSUFFICIENT, why)


def drift_share_rule(w: RuleInputs) -> RuleCheck | None:
    """A share of drifted features at or above the threshold is a signal."""
    share, limit = w.obs.drift_share, w.policy.drift_share
    drifted = share >= limit
    top = _listed(w.obs.drifted_features, 5)
    why = f"drift share {share:.3f} >= {limit:.3f}" if drifted else ""
    return RuleCheck("drift share", f"{share:.3f}", f">= {limit:.3f}", SIGNAL if drifted else PASS, top, reason=why)


def performance_drop_rule(w: RuleInputs) -> RuleCheck | None:
    """The champion's holdout metric minus the window's, at or above the threshold, is a signal."""
    o, p = w.obs, w.policy
    rule, threshold = f"{p.primary_metric} drop", f">= {p.performance_drop:.3f}"
    if o.champion_metric is None:
        return RuleCheck(rule, "-", threshold, SKIP, "champion has no holdout metric")
    if w.drop is None:
        return RuleCheck(rule, "-", threshold, SKIP, f"{o.labelled_rows} labelled rows < {p.min_labelled_rows}")
    dropped = w.drop >= p.performance_drop
    note = f"champion {o.champion_metric:.4f}, window {o.window_metric:.4f} on {o.labelled_rows} labelled"
    why = f"{p.primary_metric} dropped {w.drop:.4f} >= {p.performance_drop:.3f}" if dropped else ""
    return RuleCheck(rule, f"{w.drop:+.4f}", threshold, SIGNAL if dropped else PASS, note, reason=why)


def consecutive_windows_rule(w: RuleInputs) -> RuleCheck | None:
    """A signal must persist for N windows in a row (a gap in the history breaks the streak)."""
    need = w.policy.consecutive_windows
    if w.streak >= need:
        return RuleCheck("consecutive windows", str(w.streak), f">= {need}", PASS)
    why = f"signal in {w.streak} window(s) in a row, policy wants {need}"
    note = "waiting for the signal to persist"
    return RuleCheck("consecutive windows", str(w.streak), f">= {need}", BLOCK, note, WATCH, why)


def cooldown_rule(w: RuleInputs) -> RuleCheck | None:
    """A retrain decision or a promotion less than N days before blocks."""
    days = w.policy.cooldown_days
    threshold = f">= {days:g} d"
    last = w.last_change()
    if last is None:
        return RuleCheck("cooldown", "-", threshold, PASS)
    age, what = last
    if age >= days:
        return RuleCheck("cooldown", f"{age:.1f} d", threshold, PASS, what)
    why = f"{what}, {age:.1f} d ago: within the {days:g}-day cooldown"
    return RuleCheck("cooldown", f"{age:.1f} d", threshold, BLOCK, what, COOLDOWN, why)


Rule = Callable[[RuleInputs], RuleCheck | None]
# Always checked, in order of precedence: the gates, then the evidence.
EVIDENCE_RULES: tuple[Rule, ...] = (data_quality_rule, minimum_rows_rule, drift_share_rule, performance_drop_rule)
# Checked only when the evidence signals and no gate blocked: does the signal warrant acting now?
PERSISTENCE_RULES: tuple[Rule, ...] = (consecutive_windows_rule, cooldown_rule)


def decide(
    obs: Observation,
    policy: DriftPolicy,
    history: list[dict[str, Any]] | None = None,
    ledger: list[dict[str, Any]] | None = None,
    window_end: datetime | None = None,
) -> DriftDecision:
    """Apply the policy to one window: the first BLOCK decides, else any SIGNAL retrains.

    `history`: earlier decisions (`to_dict()` of earlier windows, with `day`); only windows before
    `obs.day` count. `ledger`: deployment ledger entries (`at`, `action`); a promotion counts for
    the cooldown only if it happened before the window's end, so a backfill of old windows is not
    blocked by a promotion made later.
    """
    w = RuleInputs.of(obs, policy, history, ledger, window_end)
    checks = [c for rule in EVIDENCE_RULES if (c := rule(w)) is not None]
    signal = any(c.result == SIGNAL for c in checks) and not any(c.result == BLOCK for c in checks)
    if signal:
        checks += [c for rule in PERSISTENCE_RULES if (c := rule(w)) is not None]
    blocks = [c for c in checks if c.result == BLOCK]
    if blocks:
        action, reason = blocks[0].action, blocks[0].reason
    elif signal:
        action, reason = RETRAIN, " and ".join(c.reason for c in checks if c.result == SIGNAL)
    else:
        action, reason = NO_DRIFT, "no rule signalled"
    return DriftDecision(
        action=action,
        day=obs.day.isoformat(),
        reason=reason,
        signal=signal,
        streak=w.streak if signal else 0,
        checks=checks,
        performance_drop=w.drop,
    )
