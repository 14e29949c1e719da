"""Where things live in the object store: one function per kind of object, keyed by spec and day.

Keys are relative to the store's root (`file://…` or `s3://…`); prefixes end with "/". The
landing zone is what teams write to; everything else is written by the platform and overwritten
per day, which is what makes a re-run of a day idempotent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datetime import date

    from include.mlops.spec import DatasetSpec

DEMO_PART = "part-0.parquet"  # the name the demo generator writes; any file name is read


# -- landing zone (written by the data's owners) --------------------------------------------------
def events_landing_prefix(spec: DatasetSpec, day: date) -> str:
    """The folder of the day's raw event files: `<source.landing_prefix>/events/dt=YYYY-MM-DD/`."""
    return f"{spec.landing_prefix}/events/dt={day.isoformat()}/"


def labels_landing_prefix(spec: DatasetSpec, arrival: date) -> str:
    """The folder of the label files that arrived on `arrival`: `<label.feed_prefix>/dt=YYYY-MM-DD/`."""
    return f"{spec.label_spec.feed_prefix}/dt={arrival.isoformat()}/"


def events_landing_key(spec: DatasetSpec, day: date, name: str = DEMO_PART) -> str:
    return events_landing_prefix(spec, day) + name


def labels_landing_key(spec: DatasetSpec, arrival: date, name: str = DEMO_PART) -> str:
    return labels_landing_prefix(spec, arrival) + name


# -- staging (extract's output, validate's input) -------------------------------------------------
def staging_events_prefix(spec: DatasetSpec, day: date) -> str:
    return f"staging/{spec.name}/events/dt={day.isoformat()}/"


def staging_events_key(spec: DatasetSpec, day: date) -> str:
    """The day's events, every landed file in one parquet (the label split off when it is inline)."""
    return staging_events_prefix(spec, day) + "events.parquet"


def staging_labels_prefix(spec: DatasetSpec, day: date) -> str:
    return f"staging/{spec.name}/labels/dt={day.isoformat()}/"


def staging_labels_key(spec: DatasetSpec, day: date) -> str:
    """Labels (entity key, timestamp, label) that arrived on `day`; inline labels arrive with their events."""
    return staging_labels_prefix(spec, day) + "labels.parquet"


def staging_key(spec: DatasetSpec, day: date, what: str = "events") -> str:
    """The day's staged `events` or `labels`."""
    return staging_labels_key(spec, day) if what == "labels" else staging_events_key(spec, day)


def staging_labels_root(spec: DatasetSpec) -> str:
    """Every day's staged labels (`dt=YYYY-MM-DD/` below it: the day they arrived)."""
    return f"staging/{spec.name}/labels/"


# -- training (train's output, evaluate's input) --------------------------------------------------
def training_split_key(spec: DatasetSpec, interval_key: str, split: str) -> str:
    """An interval's `train` or `holdout` split as trained on (`Interval.key` names the interval)."""
    return f"training/{spec.name}/{interval_key}/{split}.parquet"


# -- rejected data and reports --------------------------------------------------------------------
def quarantine_prefix(spec: DatasetSpec, day: date) -> str:
    """A rejected day: the batch (or the unreadable raw files) and why it was rejected."""
    return f"quarantine/{spec.name}/dt={day.isoformat()}/"


def validation_report_prefix(spec: DatasetSpec, day: date) -> str:
    """The day's validation result: `validation.json` and `validation.html`."""
    return f"reports/validation/{spec.name}/dt={day.isoformat()}/"


# -- features (prepare's output, Feast's offline source) ------------------------------------------
def features_prefix(spec: DatasetSpec) -> str:
    return f"features/{spec.name}/"


def features_key(spec: DatasetSpec, day: date) -> str:
    """The day's offline feature rows; a day has features once `prepare` ran for it."""
    return f"{features_prefix(spec)}part-{day.isoformat()}.parquet"


# -- the prediction log (the service's and batch scoring's output, monitoring's input) ------------
def predictions_prefix(spec: DatasetSpec) -> str:
    """Every online prediction-log object of the dataset (`serving.predlog` writes under it)."""
    return f"predictions/{spec.name}/"


def online_predictions_prefix(spec: DatasetSpec, day: date) -> str:
    """The online requests whose event time falls on `day`, one parquet per flushed batch."""
    return f"{predictions_prefix(spec)}dt={day.isoformat()}/"


def online_predictions_key(spec: DatasetSpec, day: date, part: str = "part-0") -> str:
    return f"{online_predictions_prefix(spec, day)}{part}.parquet"


def batch_predictions_prefix(spec: DatasetSpec, day: date) -> str:
    return f"predictions/batch/{spec.name}/dt={day.isoformat()}/"


def batch_predictions_key(spec: DatasetSpec, day: date) -> str:
    """The day's batch scores (ml_batch_scoring overwrites it on a re-run)."""
    return batch_predictions_prefix(spec, day) + "predictions.parquet"


# -- monitoring ----------------------------------------------------------------------------------
def monitoring_report_prefix(spec: DatasetSpec, day: date) -> str:
    """A window's Evidently reports (`<kind>.html`, `<kind>.json`), `variants.md` and `summary.json`."""
    return f"reports/monitoring/{spec.name}/dt={day.isoformat()}/"


def reference_key(spec: DatasetSpec, version: str) -> str:
    """The champion's training set scored by that version: monitoring's reference, cached per version."""
    return f"monitoring/{spec.name}/reference/v{version}.parquet"


def drift_decision_key(dataset: str, day: date | str) -> str:
    """The drift policy's decision for the window of `day` (monitoring writes one a window)."""
    d = day if isinstance(day, str) else day.isoformat()
    return f"monitoring/{dataset}/decisions/dt={d}.json"


def monitoring_quarantine_prefix(spec: DatasetSpec, day: date | str) -> str:
    """A window the drift policy refused to judge: its prediction log and data-quality result."""
    d = day if isinstance(day, str) else day.isoformat()
    return f"quarantine/{spec.name}/monitoring/dt={d}/"
