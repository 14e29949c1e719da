"""Retraining planning: what `ml_retraining` trains on once the drift policy fired (or a person asked).

The plan names the dataset, the data interval (the drifted window's, a chosen day's, or the run's),
the data strategy and the training window it gives, and why (the drift event or the params). The
strategies (`constants.DATA_STRATEGIES`):

| strategy | training window |
|---|---|
| sliding_window | the last N days |
| all_history | everything (`ALL_HISTORY_DAYS`) |
| new_data_only | the days since the champion's training interval ended, at least one |
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from include.mlops.constants import DATA_STRATEGIES
from include.mlops.retraining.drift_policy import as_utc

if TYPE_CHECKING:
    from include.mlops.config import Settings
    from include.mlops.spec import DatasetSpec

ALL_HISTORY_DAYS = 3650  # "everything": the label feed of ten years


def training_window_days(strategy: str, n_days: int, end_day: date, champion_end_day: date | None) -> int:
    """The `window_days` for `pipeline.train` under a data strategy.

    new_data_only without a champion (nothing trained yet) falls back to the last N days.
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


def champion_interval_end(settings: Settings, spec: DatasetSpec) -> date | None:
    """The last day of the data interval the current champion was trained for (run tag `mlops.interval`)."""
    from include.mlops.constants import CHAMPION
    from include.mlops.registry import alias_version, registry_error, setup_mlflow

    client = setup_mlflow(settings)
    try:
        version = alias_version(client, spec.model_name, CHAMPION)  # None only when there is none
        if version is None:
            return None
        run = client.get_run(client.get_model_version(spec.model_name, version).run_id)
    except Exception as exc:  # a fault must not widen the window as if there were no champion
        raise registry_error(f"the champion of {spec.model_name} and its training interval", exc) from exc
    return _interval_end_day(run.data.tags.get("mlops.interval"))


def _newest_event(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The event of the latest window; of a window decided twice, the later decision (without `emitted_at`)."""
    newest = max(events, key=lambda e: (str(e.get("window_end", "")), str(e.get("emitted_at", ""))), default=None)
    return {k: v for k, v in (newest or {}).items() if k != "emitted_at"}


def _interval_end(params: dict[str, Any], event: dict[str, Any], run_after: datetime | None) -> datetime:
    """The end of the interval to train for: the `window_end` param's day, the event's window, or the run's day."""
    if params.get("window_end"):
        last = date.fromisoformat(str(params["window_end"])[:10])
        return datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=1)
    if event.get("window_end"):
        return as_utc(event["window_end"])
    ra = as_utc(run_after or datetime.now(UTC))
    return datetime(ra.year, ra.month, ra.day, tzinfo=UTC)


def plan_retraining(params: dict[str, Any], events: list[dict[str, Any]], run_after: datetime | None) -> dict[str, Any]:
    """What `ml_retraining` trains on: dataset, interval, window and strategies, and why.

    `events`: the `extra` of the triggering drift events (empty for a manual run), each with the
    time it was emitted as `emitted_at`. Precedence: the run's params, then the newest event (the
    latest window; of a window monitored twice, the later decision), then the spec
    (`monitoring.retraining`), then the run date.
    """
    from include.mlops.context import context
    from include.mlops.layout import validation_report_prefix

    event = _newest_event(events)
    requested = params.get("dataset") or event.get("spec") or event.get("dataset") or ""
    ctx = context(requested)  # the settings' dataset when neither the params nor an event name one
    spec, store = ctx.spec, ctx.store
    spec_ref = requested or ctx.settings.dataset
    end = _interval_end(params, event, run_after)
    rcfg = spec.monitoring.retraining
    strategy = params.get("data_strategy") or rcfg.data_strategy
    n = int(params.get("window_days") or rcfg.window_days or spec.training.window_days)
    champion_end = champion_interval_end(ctx.settings, spec) if strategy == "new_data_only" else None
    last_day = (end - timedelta(microseconds=1)).date()
    gx = validation_report_prefix(spec, last_day) + "validation.json"
    return {
        "dataset": spec_ref,
        "dataset_name": spec.name,
        "model": spec.model_name,
        "interval_start": (end - timedelta(days=1)).isoformat(),
        "interval_end": end.isoformat(),
        "data_strategy": strategy,
        "window_days": training_window_days(strategy, n, last_day, champion_end),
        "champion_interval_end": champion_end.isoformat() if champion_end else None,
        "deploy_strategy": params.get("deploy_strategy") or None,
        "trigger": "drift" if event else "manual",
        "event": event,
        "report_uri": store.uri(gx) if store.exists(gx) else "",
    }


def drift_events(triggering_asset_events: Any) -> list[dict[str, Any]]:
    """The `extra` of each drift event that triggered the run, with the time it was emitted
    (`emitted_at`): what `plan_retraining` reads from Airflow's `triggering_asset_events`."""
    return [
        {**dict(e.extra or {}), "emitted_at": e.timestamp.isoformat() if e.timestamp else ""}
        for evs in (triggering_asset_events or {}).values()
        for e in evs
    ]


def describe_plan(plan: dict[str, Any]) -> str:
    """The plan in one line, for the task log."""
    return (
        f"retraining {plan['dataset_name']} ({plan['trigger']}): {plan['data_strategy']} window of "
        f"{plan['window_days']} day(s) ending {plan['interval_end']}; deploy strategy "
        f"{plan['deploy_strategy'] or 'from the spec'}"
    )


def train_planned(plan: dict[str, Any], lineage: dict[str, str]) -> Any:
    """`pipeline.train` on the plan's interval and window, the run tagged with why it retrains
    (raises `pipeline.NotEnoughData` when the window holds too little)."""
    from include.mlops.pipeline import Interval, train

    interval = Interval(datetime.fromisoformat(plan["interval_start"]), datetime.fromisoformat(plan["interval_end"]))
    tags = {**lineage, "mlops.retrain_trigger": plan["trigger"], "mlops.data_strategy": plan["data_strategy"]}
    return train(interval, tags, plan["dataset"], plan["window_days"])
