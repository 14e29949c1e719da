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

The observation is the window's judged rows: the champion's answers (`monitoring.judged_rows`).
Shadow rows are never counted (they answered no one); a canary's or a pinned version's answers
are reported per version in the summary's `variants`, and judged by the rollout, not here: a
retrain is about the champion.

No signal at all is `no_drift`. The pure function `decide` is what the tests exercise; `decide_window`
adds the I/O: the decision history in the object store and the deployment ledger.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from include.mlops.constants import DATA_STRATEGIES, lower_is_better

if TYPE_CHECKING:
    from include.mlops.spec import DatasetSpec
    from include.mlops.storage import ObjectStore

log = logging.getLogger(__name__)

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


@dataclass
class RuleCheck:
    rule: str
    value: str
    threshold: str
    result: str  # pass | SIGNAL | BLOCK | skip
    note: str = ""


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
            "checks": [asdict(c) for c in self.checks],
        }


def _drop(metric: str, champion: float, window: float) -> float:
    """How much worse the window is than the champion's holdout (positive = worse)."""
    return window - champion if lower_is_better(metric) else champion - window


def _as_utc(v: str | datetime) -> datetime:
    dt = v if isinstance(v, datetime) else datetime.fromisoformat(str(v).replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def decide(
    obs: Observation,
    policy: DriftPolicy,
    history: list[dict[str, Any]] | None = None,
    ledger: list[dict[str, Any]] | None = None,
    window_end: datetime | None = None,
) -> DriftDecision:
    """Apply the policy to one window.

    `history`: earlier decisions (`to_dict()` of earlier windows, with `day`); only windows before
    `obs.day` count. `ledger`: deployment ledger entries (`at`, `action`); a promotion counts for
    the cooldown only if it happened before the window's end, so a backfill of old windows is not
    blocked by a promotion made later.
    """
    history = sorted((h for h in history or [] if h.get("day", "") < obs.day.isoformat()), key=lambda h: h["day"])
    end = window_end or datetime(obs.day.year, obs.day.month, obs.day.day, tzinfo=UTC) + timedelta(days=1)
    checks: list[RuleCheck] = []
    blocked_by: list[tuple[str, str]] = []

    # 1. data quality
    if obs.data_quality_passed:
        checks.append(RuleCheck("data quality", "passed", f"<= {policy.max_bad_fraction:.3f} bad", "pass"))
    else:
        failed = ", ".join(obs.data_quality_failures[:4]) + ("…" if len(obs.data_quality_failures) > 4 else "")
        checks.append(
            RuleCheck(
                "data quality",
                f"{len(obs.data_quality_failures)} failed",
                f"<= {policy.max_bad_fraction:.3f} bad",
                "BLOCK",
                failed,
            )
        )
        blocked_by.append((QUARANTINE, f"data-quality check failed ({failed}): quarantined, not retraining"))

    # 2. minimum sample size
    if obs.rows >= policy.min_rows:
        checks.append(RuleCheck("minimum rows", str(obs.rows), f">= {policy.min_rows}", "pass"))
    else:
        checks.append(RuleCheck("minimum rows", str(obs.rows), f">= {policy.min_rows}", "BLOCK", "too few to judge"))
        blocked_by.append((INSUFFICIENT, f"{obs.rows} rows < minimum {policy.min_rows}"))

    # 3. drift share
    drifted = obs.drift_share >= policy.drift_share
    top = ", ".join(obs.drifted_features[:5]) + ("…" if len(obs.drifted_features) > 5 else "")
    checks.append(
        RuleCheck(
            "drift share",
            f"{obs.drift_share:.3f}",
            f">= {policy.drift_share:.3f}",
            "SIGNAL" if drifted else "pass",
            top,
        )
    )

    # 4. performance drop against the champion's own evaluation
    drop = None
    perf_signal = False
    metric = policy.primary_metric
    if obs.champion_metric is None:
        checks.append(
            RuleCheck(
                f"{metric} drop", "-", f">= {policy.performance_drop:.3f}", "skip", "champion has no holdout metric"
            )
        )
    elif obs.labelled_rows < policy.min_labelled_rows or obs.window_metric is None:
        checks.append(
            RuleCheck(
                f"{metric} drop",
                "-",
                f">= {policy.performance_drop:.3f}",
                "skip",
                f"{obs.labelled_rows} labelled rows < {policy.min_labelled_rows}",
            )
        )
    else:
        drop = _drop(metric, obs.champion_metric, obs.window_metric)
        perf_signal = drop >= policy.performance_drop
        checks.append(
            RuleCheck(
                f"{metric} drop",
                f"{drop:+.4f}",
                f">= {policy.performance_drop:.3f}",
                "SIGNAL" if perf_signal else "pass",
                f"champion {obs.champion_metric:.4f}, window {obs.window_metric:.4f} on {obs.labelled_rows} labelled",
            )
        )
    signal = (drifted or perf_signal) and not blocked_by

    # 5. consecutive windows (a gap in the history breaks the streak)
    streak = 0
    if signal:
        streak = 1
        by_day = {h["day"]: h for h in history}
        d = obs.day - timedelta(days=1)
        while streak < policy.consecutive_windows and by_day.get(d.isoformat(), {}).get("signal"):
            streak += 1
            d -= timedelta(days=1)
        ok = streak >= policy.consecutive_windows
        checks.append(
            RuleCheck(
                "consecutive windows",
                str(streak),
                f">= {policy.consecutive_windows}",
                "pass" if ok else "BLOCK",
                "" if ok else "waiting for the signal to persist",
            )
        )
        if not ok:
            blocked_by.append(
                (WATCH, f"signal in {streak} window(s) in a row, policy wants {policy.consecutive_windows}")
            )

    # 6. cooldown after a retrain decision or a promotion
    if signal:
        last: tuple[float, str] | None = None
        for h in history:
            if h.get("action") == RETRAIN:
                age = (obs.day - date.fromisoformat(h["day"])).days
                if last is None or age < last[0]:
                    last = (float(age), f"retrain decided for window {h['day']}")
        for e in ledger or []:
            if e.get("action") != "promote" or e.get("status", "done") != "done" or not e.get("at"):
                continue
            age = (end - _as_utc(e["at"])).total_seconds() / 86400
            if 0 <= age and (last is None or age < last[0]):
                last = (age, f"v{e.get('to_version')} promoted at {e['at']}")
        if last is not None and last[0] < policy.cooldown_days:
            checks.append(RuleCheck("cooldown", f"{last[0]:.1f} d", f">= {policy.cooldown_days:g} d", "BLOCK", last[1]))
            blocked_by.append(
                (COOLDOWN, f"{last[1]}, {last[0]:.1f} d ago: within the {policy.cooldown_days:g}-day cooldown")
            )
        else:
            checks.append(
                RuleCheck(
                    "cooldown",
                    "-" if last is None else f"{last[0]:.1f} d",
                    f">= {policy.cooldown_days:g} d",
                    "pass",
                    "" if last is None else last[1],
                )
            )

    if blocked_by:
        action, reason = blocked_by[0]
    elif signal:
        parts = []
        if drifted:
            parts.append(f"drift share {obs.drift_share:.3f} >= {policy.drift_share:.3f}")
        if perf_signal:
            parts.append(f"{metric} dropped {drop:.4f} >= {policy.performance_drop:.3f}")
        action, reason = RETRAIN, " and ".join(parts)
    else:
        action, reason = NO_DRIFT, "no rule signalled"
    return DriftDecision(
        action=action,
        day=obs.day.isoformat(),
        reason=reason,
        signal=signal,
        streak=streak,
        checks=checks,
        performance_drop=drop,
    )


# -- I/O: the decision history and the ledger ------------------------------------------------------
def decision_key(dataset: str, day: date | str) -> str:
    d = day if isinstance(day, str) else day.isoformat()
    return f"monitoring/{dataset}/decisions/dt={d}.json"


def read_history(store: ObjectStore, dataset: str, day: date, lookback_days: int) -> list[dict[str, Any]]:
    """Decisions of the `lookback_days` windows before `day` (missing windows are simply absent)."""
    out = []
    for i in range(1, lookback_days + 1):
        key = decision_key(dataset, day - timedelta(days=i))
        if store.exists(key):
            out.append(store.get_json(key))
    return out


def event_extra(summary: dict[str, Any], decision: DriftDecision, spec_ref: str) -> dict[str, Any]:
    """What the drift Asset event carries: enough for `ml_retraining` and a human, no secrets."""
    return {
        "dataset": summary["dataset"],
        "spec": spec_ref,
        "window_start": summary["window"]["start"],
        "window_end": summary["window"]["end"],
        "window_day": summary["window"]["day"],
        "drift_share": summary.get("drift_share"),
        "drifted_features": list(summary.get("drifted_features") or []),
        "performance_drop": decision.performance_drop,
        "reason": decision.reason,
        "report_uri": summary.get("report_html"),
        "summary_uri": summary.get("summary_uri"),
        "champion_version": (summary.get("champion") or {}).get("version"),
        "monitoring_run_id": summary.get("run_id"),
    }


def quarantine_window(store: ObjectStore, spec: DatasetSpec, summary: dict[str, Any], decision: DriftDecision) -> str:
    """Copy the window's prediction log and its data-quality result under quarantine/ (overwrite)."""
    from include.mlops.monitoring import prediction_keys
    from include.mlops.pipeline import Interval

    day = summary["window"]["day"]
    iv = Interval(_as_utc(summary["window"]["start"]), _as_utc(summary["window"]["end"]))
    prefix = f"quarantine/{spec.name}/monitoring/dt={day}"
    store.delete_prefix(f"{prefix}/")
    for i, (source, key) in enumerate(prediction_keys(store, spec, iv.days)):
        store.copy(key, f"{prefix}/{source}-{i:03d}.parquet")
    store.put_json(
        f"{prefix}/data_quality.json",
        {
            "data_quality": summary.get("data_quality"),
            "decision": decision.to_dict(),
            "report_uri": (summary.get("reports") or {}).get("data_quality"),
        },
    )
    return store.uri(prefix)


def decide_window(summary: dict[str, Any], spec_name: str | None = None) -> dict[str, Any]:
    """The policy for a monitoring summary: reads history and ledger, writes the decision (overwrite).

    Returns the decision dict plus `event_extra` (when it fires) and the summary's links.
    """
    from include.mlops.config import get_settings
    from include.mlops.registry import read_ledger
    from include.mlops.spec import load_spec
    from include.mlops.storage import ObjectStore

    settings = get_settings()
    spec = load_spec(spec_name or settings.dataset)
    store = ObjectStore(settings.store_uri, settings.s3_endpoint_url)
    policy = DriftPolicy.from_spec(spec)
    obs = Observation.from_summary(summary, policy.primary_metric)
    lookback = max(policy.consecutive_windows, math.ceil(policy.cooldown_days)) + 1
    history = read_history(store, spec.name, obs.day, lookback)
    ledger = read_ledger(store, spec.model_name)
    decision = decide(obs, policy, history, ledger, _as_utc(summary["window"]["end"]))
    out: dict[str, Any] = {
        **decision.to_dict(),
        "dataset": spec.name,
        "spec": spec_name or spec.name,
        "policy": asdict(policy),
        "table": decision.table(),
        "report_html": summary.get("report_html"),
        "summary_uri": summary.get("summary_uri"),
        "run_id": summary.get("run_id"),
        "experiment_id": summary.get("experiment_id"),
        "model": spec.model_name,
        "champion_version": (summary.get("champion") or {}).get("version"),
        "drift_share": obs.drift_share,
        "drifted_features": list(obs.drifted_features),
        "rows": obs.rows,
        "labelled_rows": obs.labelled_rows,
        # what the rows above are: the champion's answers; the rest is in the summary's `variants`
        "answered_rows": summary.get("answered_rows", obs.rows),
        "shadow_rows": summary.get("shadow_rows", 0),
        "window": summary["window"],
    }
    if decision.action == QUARANTINE:
        out["quarantine_uri"] = quarantine_window(store, spec, summary, decision)
    if decision.fire:
        out["event_extra"] = event_extra(summary, decision, spec_name or spec.name)
    out["decision_uri"] = store.put_json(
        decision_key(spec.name, obs.day), {k: v for k, v in out.items() if k != "table"}
    )
    return out


# -- retraining: which data the retrain uses -----------------------------------------------------------
ALL_HISTORY_DAYS = 3650  # "everything": the label feed of ten years


def training_window_days(strategy: str, n_days: int, end_day: date, champion_end_day: date | None) -> int:
    """The `window_days` for `pipeline.train` under a data strategy.

    sliding_window: the last N days; all_history: everything; new_data_only: the days since the
    champion's training interval ended (labelled events it could not have seen), at least one.
    """
    if strategy == "sliding_window":
        return max(1, int(n_days))
    if strategy == "all_history":
        return ALL_HISTORY_DAYS
    if strategy == "new_data_only":
        if champion_end_day is None:
            return max(1, int(n_days))
        return max(1, (end_day - champion_end_day).days)
    raise ValueError(f"unknown data strategy {strategy!r} (known: {', '.join(DATA_STRATEGIES)})")


def _interval_end_day(interval_key: str | None) -> date | None:
    """The last day of a `pipeline.Interval.key` (`YYYYmmddTHHMMSS_YYYYmmddTHHMMSS`, end exclusive)."""
    if not interval_key or "_" not in interval_key:
        return None
    end = datetime.strptime(interval_key.split("_")[1], "%Y%m%dT%H%M%S")
    return (end - timedelta(microseconds=1)).date()


def plan_retraining(params: dict[str, Any], events: list[dict[str, Any]], run_after: datetime | None) -> dict[str, Any]:
    """What `ml_retraining` trains on: dataset, interval, window and strategies, and why.

    `events`: the `extra` of the triggering drift events (empty for a manual run), each with the
    time it was emitted as `emitted_at`. Precedence: the run's params, then the newest event (the
    latest window; of a window monitored twice, the later decision), then the spec
    (`monitoring.retraining`), then the run date.
    """
    from include.mlops.config import get_settings
    from include.mlops.spec import load_spec
    from include.mlops.storage import ObjectStore

    settings = get_settings()
    newest = max(events, key=lambda e: (str(e.get("window_end", "")), str(e.get("emitted_at", ""))), default=None)
    event = {k: v for k, v in (newest or {}).items() if k != "emitted_at"}
    spec_ref = params.get("dataset") or event.get("spec") or event.get("dataset") or settings.dataset
    spec = load_spec(spec_ref)
    if params.get("window_end"):
        last = date.fromisoformat(str(params["window_end"])[:10])
        end = datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=1)
    elif event.get("window_end"):
        end = _as_utc(event["window_end"])
    else:
        ra = _as_utc(run_after or datetime.now(UTC))
        end = datetime(ra.year, ra.month, ra.day, tzinfo=UTC)
    start = end - timedelta(days=1)
    rcfg = spec.monitoring.retraining
    strategy = params.get("data_strategy") or rcfg.data_strategy
    n = int(params.get("window_days") or rcfg.window_days or spec.training.window_days)
    champion_end = None
    if strategy == "new_data_only":
        champion_end = champion_interval_end(settings, spec)
    last_day = (end - timedelta(microseconds=1)).date()
    window = training_window_days(strategy, n, last_day, champion_end)
    store = ObjectStore(settings.store_uri, settings.s3_endpoint_url)
    gx = f"reports/validation/{spec.name}/dt={last_day.isoformat()}/validation.json"
    return {
        "dataset": spec_ref,
        "dataset_name": spec.name,
        "model": spec.model_name,
        "interval_start": start.isoformat(),
        "interval_end": end.isoformat(),
        "data_strategy": strategy,
        "window_days": window,
        "champion_interval_end": champion_end.isoformat() if champion_end else None,
        "deploy_strategy": params.get("deploy_strategy") or None,
        "trigger": "drift" if event else "manual",
        "event": event,
        "report_uri": store.uri(gx) if store.exists(gx) else "",
    }


def champion_interval_end(settings: Any, spec: DatasetSpec) -> date | None:
    """The last day of the data interval the current champion was trained for (run tag `mlops.interval`)."""
    from include.mlops.monitoring import registry_error
    from include.mlops.registry import CHAMPION, alias_version, setup_mlflow

    client = setup_mlflow(settings)
    try:
        version = alias_version(client, spec.model_name, CHAMPION)  # None only when there is none
        if version is None:
            return None
        run = client.get_run(client.get_model_version(spec.model_name, version).run_id)
    except Exception as exc:  # a fault must not widen the window as if there were no champion
        raise registry_error(f"the champion of {spec.model_name} and its training interval", exc) from exc
    return _interval_end_day(run.data.tags.get("mlops.interval"))
