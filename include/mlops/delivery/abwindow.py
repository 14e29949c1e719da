"""Reading an A/B test's window: the two arms' answers in the prediction log and the labels that
arrived for them (`monitoring.reading`), as outcomes for `abtest.decide` (`ab_outcomes`) or as the
counts the waiting trigger compares with `ab_test.samples_per_arm` (`labelled_per_arm`).

The trigger counts every `poll_seconds` until the test is judged. Its polls share a
`ReadOnceStore`: each prediction-log object is read the first time a poll lists it and only its
arms' rows of the window are kept; each label object is read once and kept. A poll so reads only
the objects that arrived since the one before (the listing is done every poll, so a new object is
always seen). The judgement itself reads the window afresh.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from include.mlops.delivery.abtest import ARMS, ABOutcomes, outcome_metric, row_outcomes

if TYPE_CHECKING:
    import pandas as pd

    from include.mlops.spec import DatasetSpec
    from include.mlops.storage import ObjectStore

EVENT_LOOKBACK_DAYS = 1  # log partitions are by event day: a request just after midnight may sit in the day before


class ReadOnceStore:
    """An object store whose parquet objects are read once and kept (`get_parquet`, or what
    `keep` derives from one); every other call (listing, `exists`, ...) goes to the store as it
    is. Shared by the polls of one wait: a prediction-log object is written once under a new name
    (`serving.predlog`), a label file is a delivery of its own, so an object already read holds
    what it held then."""

    def __init__(self) -> None:
        self.store: ObjectStore | None = None
        self.frames: dict[Any, pd.DataFrame] = {}  # key (or what was derived from it) -> the frame
        self.reads = 0  # objects read from the store

    def over(self, store: ObjectStore) -> ReadOnceStore:
        """This cache in front of `store` (another store: the kept objects are dropped)."""
        if self.store is not None and self.store.root != store.root:
            self.frames.clear()
        self.store = store
        return self

    def get_parquet(self, key: str, **options: Any) -> pd.DataFrame:
        if options:  # a partial read is not kept
            return self._store.get_parquet(key, **options)
        if key not in self.frames:
            self.frames[key] = self._store.get_parquet(key)
            self.reads += 1
        return self.frames[key].copy(deep=False)  # a caller's new column stays the caller's

    def keep(self, what: tuple[Any, ...], key: str, derive: Callable[[pd.DataFrame], pd.DataFrame]) -> pd.DataFrame:
        """`derive` of the object at `key`, read and derived once per `what` (which names the key)."""
        if what not in self.frames:
            self.frames[what] = derive(self._store.get_parquet(key))
            self.reads += 1
        return self.frames[what]

    @property
    def _store(self) -> ObjectStore:
        if self.store is None:
            raise ValueError("ReadOnceStore has no store yet: call over(store) first")
        return self.store

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("store", "frames", "reads"):  # not set yet (copy, pickle)
            raise AttributeError(name)
        return getattr(self._store, name)


def _utc(t: float | datetime) -> datetime:
    if isinstance(t, datetime):
        return t if t.tzinfo else t.replace(tzinfo=UTC)
    return datetime.fromtimestamp(float(t), UTC)


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def arm_rows(
    store: ObjectStore | ReadOnceStore,
    spec: DatasetSpec,
    since: float | datetime,
    until: float | datetime,
    *,
    versions: dict[str, str] | None = None,
) -> pd.DataFrame:
    """The service's answers of the two arms (variants champion and challenger; with `versions`,
    only the named version of each arm) to requests made in [since, until], one row per request
    id (the latest). Batch scores are left out: the champion scores every entity there, whatever
    its arm. A `ReadOnceStore` reads each online log object once and keeps its arms' rows."""
    import pandas as pd

    from include.mlops.monitoring.reading import prediction_keys

    start, end = _utc(since), _utc(until)
    days = _days(start.date() - timedelta(days=EVENT_LOOKBACK_DAYS), end.date())
    derive = functools.partial(_arms_of, spec=spec, start=start, versions=versions)
    what = ("arms", start, tuple(sorted((versions or {}).items())))  # what a kept part was derived for
    parts = [
        store.keep((*what, key), key, derive) if isinstance(store, ReadOnceStore) else derive(store.get_parquet(key))
        for source, key in prediction_keys(store, spec, days)  # type: ignore[arg-type]  # it reads as a store
        if source == "online"
    ]
    if not parts:
        return pd.DataFrame()
    rows = pd.concat(parts, ignore_index=True)
    rows = rows[rows["ts"] <= pd.Timestamp(end)]
    return rows.drop_duplicates("request_id", keep="last").reset_index(drop=True)


def _arms_of(df: pd.DataFrame, spec: DatasetSpec, start: datetime, versions: dict[str, str] | None) -> pd.DataFrame:
    """One online log object's answers of the arms (the named versions) made at or after `start`,
    typed as `monitoring.reading.read_predictions` types them."""
    import pandas as pd

    from include.mlops.monitoring.reading import SOURCE
    from include.mlops.serving.predlog import with_variant_columns

    df = with_variant_columns(df if "ts" in df.columns else df.assign(ts=pd.NaT))  # no request time: not in it
    df[SOURCE] = "online"
    df["ts"] = pd.to_datetime(df["ts"], utc=True)
    if spec.timestamp in df.columns:
        df[spec.timestamp] = pd.to_datetime(df[spec.timestamp], utc=True)
    keep = df["variant"].isin(ARMS) & (df["ts"] >= pd.Timestamp(start))
    if versions:
        keep &= df["model_version"].astype(str) == df["variant"].map(lambda v: str(versions.get(v, "")))
    return df[keep]


def labelled_rows(
    store: ObjectStore | ReadOnceStore,
    spec: DatasetSpec,
    since: float | datetime,
    until: float | datetime,
    *,
    versions: dict[str, str] | None = None,
    labels_until: float | datetime | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the arms' answers (`arm_rows`), those of them joined to the labels that arrived by
    `labels_until`, default `until`)."""
    from include.mlops.monitoring.reading import join_labels, read_labels

    answers = arm_rows(store, spec, since, until, versions=versions)
    if answers.empty:
        return answers, answers
    first = _utc(since).date() - timedelta(days=EVENT_LOOKBACK_DAYS)
    last = _utc(labels_until if labels_until is not None else until).date()
    labels = read_labels(store, spec, first, last)  # type: ignore[arg-type]
    return answers, join_labels(answers, labels, spec)


def labelled_per_arm(
    store: ObjectStore | ReadOnceStore,
    spec: DatasetSpec,
    since: float | datetime,
    until: float | datetime,
    *,
    versions: dict[str, str] | None = None,
) -> dict[str, int]:
    """Labelled outcomes so far per arm ({"champion": n, "challenger": m}): what the waiting
    trigger compares with `ab_test.samples_per_arm` (its polls pass one `ReadOnceStore`)."""
    _, rows = labelled_rows(store, spec, since, until, versions=versions)
    counts = rows["variant"].value_counts() if len(rows) else {}
    return {arm: int(counts.get(arm, 0)) for arm in ARMS}


def ab_outcomes(
    store: ObjectStore,
    spec: DatasetSpec,
    since: float | datetime,
    until: float | datetime,
    *,
    versions: dict[str, str] | None = None,
    labels_until: float | datetime | None = None,
) -> ABOutcomes:
    """The per-arm outcomes (`row_outcomes` with the spec's `ab_test` metric) of the requests
    made in [since, until] whose labels have arrived."""
    import numpy as np

    metric = outcome_metric(spec.deployment.ab_test, spec)
    answers, rows = labelled_rows(store, spec, since, until, versions=versions, labels_until=labels_until)
    per_arm: dict[str, np.ndarray] = {}
    answered: dict[str, int] = {}
    seen: dict[str, list[str]] = {}
    for arm in ARMS:
        part = rows[rows["variant"] == arm] if len(rows) else rows
        per_arm[arm] = row_outcomes(part, metric, spec) if len(part) else np.empty(0)
        mine = answers["model_version"][answers["variant"] == arm] if len(answers) else []
        answered[arm] = len(mine)
        seen[arm] = sorted({str(v) for v in mine}, key=lambda v: (len(v), v))
        if not seen[arm] and versions and versions.get(arm):
            seen[arm] = [str(versions[arm])]
    return ABOutcomes(
        metric,
        per_arm["champion"],
        per_arm["challenger"],
        versions=seen,
        answered=answered,
        since=_utc(since).isoformat(timespec="seconds"),
        until=_utc(until).isoformat(timespec="seconds"),
    )
