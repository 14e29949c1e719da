"""The lifecycle steps as plain functions: what each `ml_training` task does, minus Airflow.

Each step takes the spec, the data interval and small inputs, reads and writes the object store,
and returns a small dict for XCom (URIs, versions, metrics). Every step is idempotent for its
interval: outputs are overwritten at interval-keyed paths and a re-run trains and registers
nothing new.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from include.mlops.config import Settings
    from include.mlops.spec import DatasetSpec
    from include.mlops.storage import ObjectStore

log = logging.getLogger(__name__)


class NotEnoughData(Exception):
    """Too few labelled rows to train yet; the DAG skips training rather than failing."""


@dataclass(frozen=True)
class Interval:
    start: datetime
    end: datetime

    @property
    def days(self) -> list[date]:
        """Calendar days whose batches belong to the interval [start, end)."""
        first = self.start.date()
        last = (self.end - timedelta(microseconds=1)).date() if self.end > self.start else first
        return [first + timedelta(days=i) for i in range((last - first).days + 1)]

    @property
    def key(self) -> str:
        return f"{self.start:%Y%m%dT%H%M%S}_{self.end:%Y%m%dT%H%M%S}"

    @property
    def label(self) -> str:
        return f"{self.start.isoformat()}/{self.end.isoformat()}"


def _ctx(spec_name: str | None = None) -> tuple[DatasetSpec, ObjectStore, Settings]:
    from include.mlops.config import get_settings
    from include.mlops.spec import load_spec
    from include.mlops.storage import ObjectStore

    s = get_settings()
    return load_spec(spec_name or s.dataset), ObjectStore(s.store_uri, s.s3_endpoint_url), s


def staging_key(spec: DatasetSpec, day: date, what: str = "events") -> str:
    from include.mlops import layout

    return layout.staging_labels_key(spec, day) if what == "labels" else layout.staging_events_key(spec, day)


# -- extract ------------------------------------------------------------------------------------
EXTENSIONS = {"parquet": (".parquet",), "csv": (".csv", ".csv.gz")}
BYOD_HELP = 'see README.md, section "Bring your own data"'


class _Unreadable(Exception):
    """One landed file cannot be read; the message is the cause in plain words."""


def extract(interval: Interval, spec_name: str | None = None) -> dict[str, Any]:
    """Stage the interval's landed events (every file of each day, one parquet per day) and the
    labels that arrived in it, overwriting; unreadable files are quarantined and fail the day.

    The common case, one parquet file per day, is a byte copy: no decoding and re-encoding of
    the table (a second per 200k rows); the parquet footer gives the row count and proves the
    object is a table. Several files, CSV, `source.rename` and inline labels go through Arrow.
    """
    spec, store, _ = _ctx(spec_name)
    staged, rows, labels = [], 0, 0
    for day in interval.days:
        uri, n, n_labels = extract_day(store, spec, day)
        staged.append(uri)
        rows += n
        labels += n_labels
    log.info("staged %d rows from %d day(s) and %d labels for %s", rows, len(staged), labels, interval.label)
    return {"staged": staged, "rows": rows, "labels": labels, "days": [d.isoformat() for d in interval.days]}


def extract_day(store: ObjectStore, spec: DatasetSpec, day: date) -> tuple[str, int, int]:
    """Stage one day: (staged events URI, event rows, label rows). Raises NoDataError when no
    file of the spec's format landed, BadBatchError (after quarantining) on an unreadable file,
    LandingReadError when the store cannot give a file back.

    Every landed file is read before staging changes, so a read that fails halfway (a store
    error on the labels after the events were read) leaves the day's staging as it was: the
    complete day of an earlier run, or nothing; never events without their labels."""
    from include.mlops import layout
    from include.mlops.validation import NoDataError

    events_prefix = layout.events_landing_prefix(spec, day)
    files, ignored = _landed_files(store, spec, events_prefix)
    if not files:
        raise NoDataError(_no_data_message(store, spec, day, events_prefix, ignored))
    label_files = [] if spec.labels_inline else _landed_files(store, spec, layout.labels_landing_prefix(spec, day))[0]
    events_key, labels_key = layout.staging_events_key(spec, day), layout.staging_labels_key(spec, day)

    fast = spec.source.format == "parquet" and not spec.source.rename
    bad: list[tuple[str, str, str]] = []  # (key, kind, cause)
    events = labels = None  # what to stage: (rows, parquet bytes)
    if fast and len(files) == 1 and not spec.labels_inline:
        events = _parquet_object(store, files[0], "events", bad)
    else:
        table = _read_files(store, spec, files, "events", bad)
        if table is not None:
            if spec.labels_inline and spec.label in table.column_names:
                keep = [c for c in (spec.entity_key, spec.timestamp, spec.label) if c in table.column_names]
                labels = _parquet_table(table.select(keep))
                table = table.drop_columns([spec.label])
            events = _parquet_table(table)
    if label_files:
        if fast and len(label_files) == 1:
            labels = _parquet_object(store, label_files[0], "labels", bad)
        else:
            table = _read_files(store, spec, label_files, "labels", bad)
            labels = _parquet_table(table) if table is not None else None

    store.delete_prefix(layout.staging_events_prefix(spec, day))
    store.delete_prefix(layout.staging_labels_prefix(spec, day))
    uri, n, n_labels = "", 0, 0
    if events is not None:
        n, uri = events[0], store.put_bytes(events_key, events[1])
    if labels is not None:
        n_labels = labels[0]
        store.put_bytes(labels_key, labels[1])
    if bad:  # the day's events go; labels that arrived today stay unless they are the bad ones
        _reject_files(store, spec, day, bad)
    log.info("%s %s: staged %d rows to %s and %d labels", spec.name, day, n, uri, n_labels)
    return uri, n, n_labels


class LandingReadError(RuntimeError):
    """The object store could not give back a landed file (not a bad file: a store error)."""


def _get_landed(store: ObjectStore, key: str) -> bytes:
    """A landed file's bytes; a store error names the file (a retry of the task reads it again)."""
    try:
        return store.get_bytes(key)
    except Exception as exc:
        raise LandingReadError(
            f"could not read the landed file {store.uri(key)}: {type(exc).__name__}: {exc}; "
            "nothing was staged for the day, and a retry reads it again"
        ) from exc


def _landed_files(store: ObjectStore, spec: DatasetSpec, prefix: str) -> tuple[list[str], list[str]]:
    """The keys of the files directly under `prefix` with the spec's extension, in name order,
    and the names of the other files there (logged as ignored)."""
    exts = EXTENSIONS[spec.source.format]
    files, ignored = [], []
    for key in store.list(prefix):
        name = key[len(prefix) :]
        if "/" in name:
            continue
        (files if name.lower().endswith(exts) and not name.startswith(("_", ".")) else ignored).append(key)
    for key in ignored:
        log.info("ignored %s: not a %s file (source.format: %s)", store.uri(key), "/".join(exts), spec.source.format)
    return sorted(files, key=lambda k: k.rsplit("/", 1)[-1]), [k.rsplit("/", 1)[-1] for k in ignored]


def _no_data_message(store: ObjectStore, spec: DatasetSpec, day: date, prefix: str, ignored: list[str]) -> str:
    exts = " or ".join(EXTENSIONS[spec.source.format])
    other = f" ({len(ignored)} other file(s) there were ignored: {', '.join(ignored[:5])})" if ignored else ""
    return (
        f"no data for dataset {spec.name} on {day.isoformat()}: no {exts} file in {store.uri(prefix)}{other}. "
        f"Land the day's files there (the folder follows source.landing_prefix, the extension source.format), "
        f"or run a day that has data; {BYOD_HELP}"
    )


def _parquet_object(store: ObjectStore, src: str, kind: str, bad: list) -> tuple[int, bytes] | None:
    """One landed parquet object as it is, to stage byte for byte: (rows, bytes), or None (and
    an entry in `bad`) when it is not parquet."""
    import io

    import pyarrow.parquet as pq

    data = _get_landed(store, src)
    try:
        rows = pq.read_metadata(io.BytesIO(data)).num_rows
    except Exception:
        bad.append((src, kind, _parquet_cause(data)))
        return None
    log.info("read %s: %d rows", store.uri(src), rows)
    return rows, data


def _parquet_cause(data: bytes) -> str:
    """Why bytes that should be parquet are not, in plain words."""
    if not data:
        return "the file is empty (0 bytes)"
    if not data.startswith(b"PAR1"):
        head = data[:4096]
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError:
            text = ""
        if text and ("\n" in text or "," in text or ";" in text):
            return (
                "it is text (a CSV?) under a .parquet name, not parquet: write it as parquet, "
                "or name it .csv and set source.format: csv in the spec"
            )
        return "it is not a parquet file (parquet files start with the bytes PAR1): it may be another format or damaged"
    if not data.endswith(b"PAR1"):
        return "the parquet file is truncated (its footer is missing): it was perhaps copied while being written; land it again"
    return "the parquet file is damaged: its footer or data pages cannot be decoded; write it again"


def _read_files(store: ObjectStore, spec: DatasetSpec, keys: list[str], kind: str, bad: list) -> Any:
    """The files as one Arrow table (columns renamed to the spec's names, in the first file's
    order), or None when any is unreadable; each unreadable or inconsistent file goes to `bad`."""
    import pyarrow as pa

    tables: list[tuple[str, Any]] = []
    for key in keys:
        try:
            table = _read_table(store, spec, key)
        except _Unreadable as exc:
            bad.append((key, kind, str(exc)))
            continue
        log.info("read %s: %d rows", store.uri(key), table.num_rows)
        tables.append((key, table))
    if not tables or len(tables) < len(keys):
        return None
    first_key, first = tables[0]
    names = first.column_names
    first_name = first_key.rsplit("/", 1)[-1]
    consistent = []
    for key, table in tables[1:]:
        missing = [c for c in names if c not in table.column_names]
        extra = [c for c in table.column_names if c not in names]
        if missing or extra:
            diff = ", ".join([*(f"lacks {c}" for c in missing), *(f"adds {c}" for c in extra)])
            cause = f"its columns differ from those of {first_name} ({diff}): a day's files must share their columns"
            bad.append((key, kind, cause))
        else:
            consistent.append(table.select(names))
    if len(consistent) < len(tables) - 1:
        return None
    try:
        return pa.concat_tables([first, *consistent], promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        for key, table in tables[1:]:
            clash = [c for c in names if table.schema.field(c).type != first.schema.field(c).type]
            if clash:
                types = ", ".join(
                    f"{c} is {table.schema.field(c).type} (in {first_name}: {first.schema.field(c).type})"
                    for c in clash
                )
                bad.append((key, kind, f"its column types differ from those of {first_name}: {types}"))
        return None


def _read_table(store: ObjectStore, spec: DatasetSpec, key: str) -> Any:
    """One landed file as an Arrow table with the spec's column names; `_Unreadable` if it is not
    a table of the spec's format."""
    import pyarrow as pa

    data = _get_landed(store, key)
    if not data:
        raise _Unreadable("the file is empty (0 bytes)")
    if spec.source.format == "parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(pa.BufferReader(data))
        except Exception:
            raise _Unreadable(_parquet_cause(data)) from None
    else:
        table = _read_csv(spec, key, data)
    if spec.source.rename:
        table = table.rename_columns([spec.source.rename.get(c, c) for c in table.column_names])
    return table


def _read_csv(spec: DatasetSpec, key: str, data: bytes) -> Any:
    """A CSV (optionally gzipped) as an Arrow table: the spec's delimiter, the entity key as text
    when `entity.dtype` is string, category features as text, the timestamp parsed to UTC."""
    import gzip
    import re

    import pyarrow as pa
    import pyarrow.csv as pacsv

    if key.lower().endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError):
            raise _Unreadable("it is named .csv.gz but is not a complete gzip file") from None
        if not data:
            raise _Unreadable("the file is empty once decompressed")
    if data.startswith(b"PAR1"):
        raise _Unreadable("it is a parquet file under a .csv name: name it .parquet and set source.format: parquet")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Unreadable(
            f"it is not UTF-8 text (undecodable byte at position {exc.start}): it may be binary or another encoding"
        ) from None
    file_name = {new: old for old, new in spec.source.rename.items()}
    text_cols = [*spec.categorical_features, *([spec.entity_key] if spec.entity_is_string else [])]
    delim = spec.source.csv_delimiter
    try:
        table = pacsv.read_csv(
            pa.BufferReader(data),
            parse_options=pacsv.ParseOptions(delimiter=delim),
            # a text column's types under both names (a team's file or `mlops ingest`'s, which
            # lands the spec's names); an empty field is a missing value, as pandas writes it
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for c in text_cols for name in {c, file_name.get(c, c)}},
                strings_can_be_null=True,
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        counts = re.search(r"Expected (\d+) columns, got (\d+)", str(exc))
        if counts:
            raise _Unreadable(
                f"the CSV does not parse: a row has {counts.group(2)} field(s) where the header has "
                f"{counts.group(1)} (source.csv_delimiter is {delim!r}; check it and the quoting)"
            ) from None
        raise _Unreadable(
            f"the CSV does not parse with source.csv_delimiter {delim!r}: check the delimiter, the quoting and "
            "that every row has the header's number of fields"
        ) from None
    ts_col = file_name.get(spec.timestamp, spec.timestamp)
    if ts_col in table.column_names:
        i = table.column_names.index(ts_col)
        table = table.set_column(i, ts_col, _utc_times(table.column(i), ts_col))
    return table


def _utc_times(col: Any, name: str) -> Any:
    """A CSV's timestamp column as UTC nanoseconds: ISO 8601 text (an offset or Z, else read as
    UTC) or epoch seconds. `_Unreadable` naming the first value that is not a date-time."""
    import pyarrow as pa

    ns_utc = pa.timestamp("ns", tz="UTC")
    if pa.types.is_timestamp(col.type):
        return col.cast(pa.timestamp(col.type.unit, tz="UTC")).cast(ns_utc)  # naive times are taken as UTC
    if pa.types.is_null(col.type):
        return col.cast(ns_utc)
    from include.mlops.data.draft import to_utc  # the one reading of times: ISO 8601 or epoch seconds

    values = col.to_pandas()
    parsed = to_utc(values)
    wrong = parsed.isna() & values.notna()
    if wrong.any():
        pos = int(wrong.to_numpy().argmax())
        raise _Unreadable(
            f"the CSV does not parse: column {name} has {int(wrong.sum())} value(s) that are not date-times, "
            f"e.g. {values.iloc[pos]!r} on data row {pos + 1}; write ISO 8601 (2026-10-01T08:30:00Z) or epoch seconds"
        )
    return pa.array(parsed, type=ns_utc)


def _parquet_table(table: Any) -> tuple[int, bytes]:
    """A table encoded to stage: (rows, parquet bytes)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return table.num_rows, sink.getvalue().to_pybytes()


def _discard_day(store: ObjectStore, spec: DatasetSpec, day: date, labels: bool) -> None:
    """Downstream steps must never see a rejected day: its staging (and features) go."""
    from include.mlops import layout
    from include.mlops.features import feature_key

    store.delete_prefix(layout.staging_events_prefix(spec, day))
    if labels or spec.labels_inline:
        store.delete_prefix(layout.staging_labels_prefix(spec, day))
    store.delete_prefix(feature_key(spec, day.isoformat()))


def _reject_files(store: ObjectStore, spec: DatasetSpec, day: date, bad: list[tuple[str, str, str]]) -> None:
    """Quarantine unreadable landed files with their cause, discard the day, raise BadBatchError."""
    from include.mlops import layout
    from include.mlops.validation import BadBatchError

    qprefix = layout.quarantine_prefix(spec, day)
    store.delete_prefix(qprefix)
    entries = []
    for key, kind, cause in bad:
        name = key.rsplit("/", 1)[-1]
        dst = store.copy(key, f"{qprefix}{'labels/' if kind == 'labels' else ''}{name}")
        entries.append({"file": store.uri(key), "kind": kind, "cause": cause, "quarantined": dst})
        log.error("rejected %s: %s", store.uri(key), cause)
    cause_uri = store.put_json(
        f"{qprefix}cause.json",
        {"stage": "extract", "dataset": spec.name, "day": day.isoformat(), "success": False, "files": entries},
    )
    _discard_day(store, spec, day, labels=any(kind == "labels" for _, kind, _ in bad))
    lines = [f"extract rejected {len(bad)} file(s) of {spec.name} for {day.isoformat()}:"]
    lines += [f"  - {e['file']}: {e['cause']}" for e in entries]
    lines.append(
        f"quarantined to {store.uri(qprefix)} (why: {cause_uri}); replace the file(s) in the landing zone and re-run the day"
    )
    raise BadBatchError("\n".join(lines))


# -- validate -----------------------------------------------------------------------------------
def validate(interval: Interval, spec_name: str | None = None) -> dict[str, Any]:
    """Run the spec's GX suite on each staged batch; quarantine and raise on a broken contract."""
    from include.mlops import layout
    from include.mlops.validation import DataValidationError, failure_message, render_html, validate_frame

    spec, store, _ = _ctx(spec_name)
    reports, warnings, rows = [], [], 0
    for day in interval.days:
        # text columns arrive as categories (dictionary-decoded): quicker to read, and GX tests
        # categories far faster than Python strings (see validation._batch_frame)
        events_key = layout.staging_events_key(spec, day)
        try:
            df = store.get_parquet(events_key, read_dictionary=spec.categorical_features)
        except FileNotFoundError:
            raise
        except Exception as exc:  # extract's fast path copies one parquet file's bytes: its pages are read here
            log.error("staged events of %s do not decode: %s", day, exc)
            cause = "the parquet file's footer reads but its data does not decode (damaged or truncated pages)"
            _reject_files(store, spec, day, [(events_key, "events", cause)])
        labels_key = layout.staging_labels_key(spec, day)
        if spec.labels_inline and store.exists(labels_key):  # judged as landed: the label beside its events
            label = store.get_parquet(labels_key, columns=[spec.label])[spec.label]
            if len(label) == len(df):
                df[spec.label] = label.to_numpy()
        outcome = validate_frame(df, spec, day)
        base = layout.validation_report_prefix(spec, day)
        report_uri = store.put_json(
            f"{base}validation.json",
            {
                **outcome.summary(),
                "failures": outcome.failures,
                "warnings_detail": outcome.warnings,
                "gx_result": outcome.result,
            },
        )
        store.put_text(f"{base}validation.html", render_html(outcome, f"{spec.name} batch {day}"))
        reports.append(report_uri)
        rows += outcome.rows
        for w in outcome.warnings:
            log.warning(
                "value skew on %s (recorded, not blocking): %s unexpected=%s", day, w["label"], w["unexpected_count"]
            )
            warnings.append(f"{day}: {w['label']}")
        qprefix = layout.quarantine_prefix(spec, day)
        if not outcome.success:
            store.delete_prefix(qprefix)
            store.copy(events_key, f"{qprefix}events.parquet")  # the batch as validated: every file of the day
            if spec.labels_inline and store.exists(labels_key):
                store.copy(labels_key, f"{qprefix}labels.parquet")
            store.put_json(
                f"{qprefix}validation.json",
                {**outcome.summary(), "failures": outcome.failures, "gx_result": outcome.result},
            )
            _discard_day(store, spec, day, labels=False)
            raise DataValidationError(
                failure_message(outcome, f"{spec.name} {day}", report_uri, store.uri(qprefix.rstrip("/")))
            )
        store.delete_prefix(qprefix)  # a fixed batch re-run leaves no stale quarantine
    return {"reports": reports, "report_uri": reports[-1], "warnings": warnings, "rows": rows}


# -- prepare ------------------------------------------------------------------------------------
def prepare(interval: Interval, spec_name: str | None = None) -> dict[str, Any]:
    """Feature functions -> Feast offline source; apply the definitions; materialise the interval."""
    from include.mlops import features as F

    spec, store, settings = _ctx(spec_name)
    frames, uris = [], []
    for day in interval.days:
        raw = store.get_parquet(staging_key(spec, day))
        offline = F.offline_frame(spec, F.build_features(raw, spec), interval.end)
        uris.append(F.write_offline(store, spec, day.isoformat(), offline))
        frames.append(offline)
    fs = F.get_feature_store(settings)
    F.apply_definitions(fs, spec, store)
    import pandas as pd

    materialized = F.materialize_frame(fs, spec, pd.concat(frames, ignore_index=True))
    log.info("wrote %s; materialised %d entities to the online store", uris, materialized)
    return {"feature_uris": uris, "feature_service": spec.feature_service_name, "materialized": materialized}


# -- train --------------------------------------------------------------------------------------
def labelled_events(store: ObjectStore, spec: DatasetSpec, interval: Interval, window_days: int) -> pd.DataFrame:
    """Labels that have arrived by the interval's end for events in the window, restricted to
    days whose features exist (quarantined days have none and would be dropped by the join).

    Only label files that arrived within the window are read (a label never arrives before its
    event), so the cost follows the window, not the length of the history."""
    import pandas as pd

    end_day = interval.days[-1]
    first_event_day = end_day - timedelta(days=window_days + spec.label_delay_days - 1)
    frames = []
    for key in store.list(f"staging/{spec.name}/labels/"):
        arrival = date.fromisoformat(key.split("dt=")[1].split("/")[0])
        if first_event_day <= arrival <= end_day:
            frames.append(store.get_parquet(key))
    if not frames:
        return pd.DataFrame(columns=[spec.entity_key, spec.timestamp, spec.label])
    labels = pd.concat(frames, ignore_index=True)
    labels[spec.timestamp] = pd.to_datetime(labels[spec.timestamp], utc=True)
    # event days as UTC midnights, compared in bulk (per-row date objects cost seconds at 1M rows)
    ev_day = labels[spec.timestamp].dt.floor("D")
    have = [
        pd.Timestamp(k.split("part-")[1][:10], tz="UTC") for k in store.list(f"features/{spec.name}/") if "part-" in k
    ]
    featured = ev_day.isin(have)
    after_first = ev_day >= pd.Timestamp(first_event_day, tz="UTC")
    keep = after_first & (ev_day <= pd.Timestamp(end_day, tz="UTC")) & featured
    dropped = int((after_first & ~featured).sum())
    if dropped:
        log.warning("%d labelled events fall on days without features (quarantined or not ingested); excluded", dropped)
    return labels[keep].sort_values([spec.timestamp, spec.entity_key], ignore_index=True)


def _pinned_requirements() -> list[str]:
    from importlib.metadata import version

    pkgs = ["scikit-learn", "pandas", "numpy", "scipy", "skops", "cloudpickle", "mlflow-skinny", "pyarrow"]
    out = []
    for p in pkgs:
        try:
            out.append(f"{p}=={version(p)}")
        except Exception:
            continue
    return out


def train(
    interval: Interval, lineage: dict[str, str], spec_name: str | None = None, window_days: int | None = None
) -> dict[str, Any]:
    """Point-in-time training set from Feast, time split, budgeted search, logged to MLflow.

    Idempotent: a FINISHED run with the same interval and training-data hash is reused. Runs
    of the same interval and hash left RUNNING by a killed attempt are closed as FAILED first
    (`close_orphan_runs`), so an interval ends with one FINISHED run however often it is retried.
    """
    import mlflow

    from include.mlops import features as F
    from include.mlops import training as T
    from include.mlops.registry import ensure_experiment, setup_mlflow

    spec, store, settings = _ctx(spec_name)
    window = int(window_days or spec.training.window_days)
    entity_df = labelled_events(store, spec, interval, window)
    min_rows = spec.training.min_rows
    if len(entity_df) < min_rows:
        raise NotEnoughData(f"{len(entity_df)} labelled rows in the last {window} days, need {min_rows}")
    fs = F.get_feature_store(settings)
    joined = F.historical_features(fs, spec, entity_df)
    cols = [spec.entity_key, spec.timestamp, *F.model_features(spec), spec.label]
    joined = joined[cols].sort_values([spec.timestamp, spec.entity_key], ignore_index=True)
    digest = T.data_hash(joined)
    train_df, holdout = T.time_split(joined, spec, spec.training.holdout_days)

    client = setup_mlflow(settings)
    exp_id = ensure_experiment(client, spec.name, settings)
    close_orphan_runs(client, exp_id, interval.key, digest)
    prior = client.search_runs(
        [exp_id],
        f"tags.`mlops.interval` = '{interval.key}' and tags.`mlops.data_hash` = '{digest}' and attributes.status = 'FINISHED'",
        max_results=1,
    )
    base = f"training/{spec.name}/{interval.key}"
    rows = {"labelled": len(entity_df), "joined": len(joined), "train": len(train_df), "holdout": len(holdout)}
    if prior:
        run = prior[0]
        log.info("reusing run %s: same interval %s and data hash %s", run.info.run_id, interval.key, digest)
        return {
            "run_id": run.info.run_id,
            "model_uri": run.data.tags["mlops.model_uri"],
            "data_hash": digest,
            "rows": rows,
            "train_uri": store.uri(f"{base}/train.parquet"),
            "holdout_uri": store.uri(f"{base}/holdout.parquet"),
            "reused": True,
            "experiment_id": exp_id,
        }

    train_uri = store.put_parquet(f"{base}/train.parquet", train_df)
    holdout_uri = store.put_parquet(f"{base}/holdout.parquet", holdout)
    model, result = T.fit(spec, train_df)
    tags = {
        **lineage,
        "mlops.interval": interval.key,
        "mlops.data_hash": digest,
        "mlops.train_uri": train_uri,
        "mlops.holdout_uri": holdout_uri,
        "mlops.dataset": spec.name,
    }
    # the tags are part of the run's creation: a run killed at any later point can be found
    with mlflow.start_run(experiment_id=exp_id, run_name=f"{spec.name}-{interval.key}", tags=tags) as run:
        mlflow.log_params(
            {
                "family": spec.model.family,
                "window_days": window,
                **{f"best.{k}": v for k, v in result.best_params.items()},
                "search.candidates": len(result.candidates),
                "search.stopped_by_budget": result.stopped_by_budget,
            }
        )
        mlflow.log_metrics(
            {
                f"cv_{result.scoring}": result.best_score,
                "search_seconds": result.seconds,
                **{f"rows_{k}": v for k, v in rows.items()},
            }
        )
        for i, c in enumerate(result.candidates):
            mlflow.log_metric(f"cv_candidate_{result.scoring}", c["mean"], step=i)
        mlflow.log_dict({"scoring": result.scoring, "candidates": result.candidates}, "search/cv_results.json")
        mlflow.log_input(
            training_dataset(train_df, train_uri, f"{spec.name}-train-{interval.key}", spec.label, digest),
            context="training",
        )
        info = log_model(model, spec, train_df.head(5)[F.model_features(spec)])
        mlflow.set_tag("mlops.model_uri", info.model_uri)
    return {
        "run_id": run.info.run_id,
        "model_uri": info.model_uri,
        "data_hash": digest,
        "rows": rows,
        "train_uri": train_uri,
        "holdout_uri": holdout_uri,
        "reused": False,
        "experiment_id": exp_id,
        "candidates": len(result.candidates),
    }


def close_orphan_runs(client: Any, experiment_id: str, interval_key: str, digest: str) -> list[str]:
    """Close as FAILED, tagged `mlops.closed_reason`, the runs of this interval and data hash
    still RUNNING: what a killed training attempt leaves behind (Airflow runs one try of a task
    instance at a time, so when a try starts none of them is alive). Returns their ids."""
    from datetime import UTC

    orphans = client.search_runs(
        [experiment_id],
        f"tags.`mlops.interval` = '{interval_key}' and tags.`mlops.data_hash` = '{digest}' "
        "and attributes.status = 'RUNNING'",
        max_results=1000,
    )
    at = datetime.now(UTC).isoformat()
    for r in orphans:
        reason = f"left RUNNING by a killed training attempt; closed as FAILED by the retry at {at}"
        client.set_tag(r.info.run_id, "mlops.closed_reason", reason)
        client.set_terminated(r.info.run_id, status="FAILED")
        log.warning("run %s of interval %s: %s", r.info.run_id, interval_key, reason)
    return [r.info.run_id for r in orphans]


def schema_probe(df: pd.DataFrame) -> pd.DataFrame:
    """A few rows of `df` from which MLflow infers the same schema as from all of it: the first
    row, the first occurrence of every distinct value of each object (text) column, and each
    column's first missing value. MLflow reads types from the dtype, except for object columns,
    whose distinct values decide; `required` means "no missing value"."""
    import numpy as np

    rows = {0} if len(df) else set()
    for col in df.columns:
        values = df[col]
        if values.dtype.kind == "O":
            rows.update(np.flatnonzero(~values.duplicated().to_numpy()).tolist())
        missing = values.isna().to_numpy()
        if missing.any():
            rows.add(int(missing.argmax()))
    return df.iloc[sorted(rows)]


def training_dataset(df: pd.DataFrame, source: str, name: str, targets: str, digest: str) -> Any:
    """The training split as an MLflow dataset (source, digest, schema, row count).

    MLflow would infer the schema by walking every value of every column in Python (22-35 s
    for 800k rows x 21 columns); the schema is inferred on `schema_probe(df)` instead, which
    gives the same result in well under a second.
    """
    import mlflow

    dataset = mlflow.data.from_pandas(df, source=source, name=name, targets=targets, digest=digest)
    probe = mlflow.data.from_pandas(schema_probe(df), source=dataset.source, targets=targets, digest=digest)
    dataset.schema = probe.schema  # a cached property: set here, it is never inferred from `df`
    return dataset


def log_model(model: Any, spec: DatasetSpec, X: pd.DataFrame) -> Any:
    """Log the Pipeline with signature, input example (the first rows of `X`) and pinned
    requirements, in the skops format with the code's trusted-types allowlist
    (`include.mlops.model_io`); `UnsafeModelError` if the pipeline holds a type outside it.
    A classifier's pyfunc answers `predict_proba` (one column per class, in the order of the
    `classes` metadata), binary or multiclass alike."""
    import mlflow
    from mlflow.models import infer_signature

    from include.mlops.features import model_features
    from include.mlops.model_io import FORMAT, check_writable, trusted_types
    from include.mlops.scores import class_values

    example = X.head(5)
    out = model.predict_proba(example) if spec.is_classification else model.predict(example)
    signature = infer_signature(example, out)
    check_writable(model)  # a type outside the allowlist fails here, not when the service loads it
    with quiet_deprecations("logged the model"):  # log_model loads it back to check the format
        return mlflow.sklearn.log_model(
            model,
            name="model",
            signature=signature,
            input_example=example,
            pip_requirements=_pinned_requirements(),
            pyfunc_predict_fn="predict_proba" if spec.is_classification else "predict",
            serialization_format=FORMAT,  # explicit: the only format the platform loads
            skops_trusted_types=trusted_types(),
            metadata={
                "features": model_features(spec),
                "dataset": spec.name,
                "task": spec.task,
                **({"classes": [str(c) for c in class_values(model.classes_)]} if spec.is_classification else {}),
            },
        )


# -- evaluate -----------------------------------------------------------------------------------
_DEPRECATIONS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)


@contextlib.contextmanager
def quiet_deprecations(what: str) -> Iterator[None]:
    """Around a model save or load only: skops' module scan touches every imported module's
    deprecated attributes, ~1,160 Airflow deprecation warnings per call inside a task, which
    buried the gate table. They are counted in one line; other warnings pass through."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    quiet = 0
    for w in caught:
        if issubclass(w.category, _DEPRECATIONS):
            quiet += 1
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if quiet:
        log.info("%s (%d deprecation warnings from skops' module scan not shown)", what, quiet)


def load_sklearn(model_uri: str) -> Any:
    """A platform model (sklearn flavour, skops format, allowlisted types) from `model_uri`;
    `model_io.UnsafeModelError` for anything else, before any of it is deserialized."""
    from include.mlops import model_io

    return model_io.load(model_uri)


def evaluate(train_out: dict[str, Any], spec_name: str | None = None) -> dict[str, Any]:
    """Challenger against the current champion and the reference on the same holdout; the gate
    decides; every decision is kept in the run (`evaluation/gate-<UTC time>.json`, the first one
    also as `evaluation/gate.json`).

    Fails closed: a registry error, or a champion or reference model that cannot be loaded or
    scored, fails the task (`evaluation.GateError`), except the one explicit case of a model
    trained on features the holdout lacks (`gate.feature_change` decides). A re-run for a run
    whose model is or was champion reuses the decision recorded before the promotion rather
    than comparing the model with itself."""
    from dataclasses import asdict
    from datetime import UTC

    import numpy as np

    from include.mlops import evaluation as E
    from include.mlops import plots
    from include.mlops.features import model_features
    from include.mlops.registry import CHAMPION, alias_version, find_version, read_ledger, setup_mlflow
    from include.mlops.scores import score_model

    spec, store, settings = _ctx(spec_name)
    client = setup_mlflow(settings)
    run_id = train_out["run_id"]
    ledger = read_ledger(store, spec.model_name)
    champ_version = alias_version(client, spec.model_name, CHAMPION)
    own = find_version(client, spec.model_name, run_id)
    compared_with_before = False
    if own is not None and (own == champ_version or E.was_champion(ledger, own)):
        recorded = _recorded_gate(client, run_id)
        state = "is the champion" if own == champ_version else "was champion"
        if recorded is not None:
            log.info(
                "run %s: its model v%s %s; reusing the gate decision recorded at %s (%s) instead of comparing "
                "the model with itself",
                run_id,
                own,
                state,
                recorded.get("at", "its first evaluation"),
                "passed" if recorded["passed"] else "failed",
            )
            return {
                "passed": bool(recorded["passed"]),
                "reasons": list(recorded.get("reasons", [])),
                "metrics": recorded.get("challenger", {}),
                "champion_metrics": recorded.get("champion"),
                "champion_version": recorded.get("champion_version"),
                "nan_predictions": int(recorded.get("nan_predictions", 0)),
                "reused": True,
            }
        champ_version = E.champion_before(ledger, own)
        compared_with_before = True
        log.info(
            "run %s: its model v%s %s and no gate decision is recorded; comparing with the champion in force "
            "before it (%s)",
            run_id,
            own,
            state,
            f"v{champ_version}" if champ_version else "none: it was the first",
        )

    holdout = store.get_parquet(store.key_of(train_out["holdout_uri"]))
    X, y = holdout[model_features(spec)], holdout[spec.label]
    challenger = load_sklearn(train_out["model_uri"])
    scored = score_model(challenger, X, spec)  # NaN scores count against the gate; metrics fill them
    nan_preds = int(np.isnan(np.asarray(scored.score, dtype=float)).sum())
    ch_metrics = E.metrics(y, scored, spec)
    ch_slices = E.slice_metrics(holdout, scored, spec)

    g = spec.gate
    versions: dict[str, E.VersionScore | str] = {}
    champ: E.VersionScore | None = None
    unscorable: str | None = None
    champ_note = "no champion yet"
    if champ_version is not None:
        got = E.score_version(spec, champ_version, holdout, load_sklearn, role="champion")
        versions[champ_version] = got
        if isinstance(got, str):
            unscorable = got
            champ_note = f"champion v{champ_version} cannot score this holdout: {got}"
            log.warning("%s (gate.feature_change: %s)", champ_note, g.feature_change)
        else:
            champ = got
            champ_note = f"champion v{champ_version} scored on the same holdout"
    if compared_with_before:
        champ_note += " (the champion before this run's model)"
    champ_ci = E.paired_bootstrap(y, scored, champ.scored, spec, g.bootstrap_resamples, g.confidence) if champ else None
    candidates = [v for v in E.reference_versions(spec, ledger, champ_version) if v != own]
    reference = E.find_reference(spec, candidates, holdout, scored, load_sklearn, versions)
    decision = E.gate(
        spec,
        ch_metrics,
        ch_slices,
        nan_preds,
        champ.metrics if champ else None,
        champ.slices if champ else None,
        champion_version=champ_version,
        champion_ci=champ_ci,
        champion_unscorable=unscorable,
        reference=reference,
    )
    table = decision.table()
    log.info("gate for run %s (%s):\n%s", run_id, champ_note, table)

    for k, v in ch_metrics.items():
        client.log_metric(run_id, f"holdout_{k}", v)
    for k, v in (champ.metrics if champ else {}).items():
        client.log_metric(run_id, f"champion_holdout_{k}", v)
    now = datetime.now(UTC)
    record = {
        **decision.to_dict(),
        "at": now.isoformat(),
        "challenger": ch_metrics,
        "champion": champ.metrics if champ else None,
        "champion_version": champ_version,
        "champion_note": champ_note,
        "champion_ci": asdict(champ_ci) if champ_ci else None,
        "reference": reference.to_dict() if isinstance(reference, E.Reference) else reference,
        "slices": ch_slices,
        "champion_slices": champ.slices if champ else None,
        "nan_predictions": nan_preds,
        "model_version": own,
    }
    text = table + f"\n{champ_note}\n"
    kept = {a.path for a in client.list_artifacts(run_id, "evaluation")}
    stamp = now.strftime("%Y%m%dT%H%M%S%fZ")
    client.log_dict(run_id, record, f"evaluation/gate-{stamp}.json")  # history: one per decision
    client.log_text(run_id, text, f"evaluation/gate-{stamp}.txt")
    if "evaluation/gate.json" not in kept:  # the first decision, never overwritten
        client.log_dict(run_id, record, "evaluation/gate.json")
        client.log_text(run_id, text, "evaluation/gate.txt")
    client.set_tag(run_id, "mlops.gate", "passed" if decision.passed else "failed")
    plots.log_evaluation_plots(client, run_id, spec, challenger, holdout, scored)
    return {
        "passed": decision.passed,
        "reasons": decision.reasons,
        "metrics": ch_metrics,
        "champion_metrics": champ.metrics if champ else None,
        "champion_version": champ_version,
        "nan_predictions": nan_preds,
    }


def _recorded_gate(client: Any, run_id: str) -> dict[str, Any] | None:
    """The newest gate decision recorded in the run (`evaluation/gate-*.json`, else the first,
    `evaluation/gate.json`); None when the run has none. A read error propagates."""
    import json
    import tempfile

    paths = sorted(a.path for a in client.list_artifacts(run_id, "evaluation") if a.path.endswith(".json"))
    history = [p for p in paths if p.startswith("evaluation/gate-")]
    chosen = history[-1] if history else ("evaluation/gate.json" if "evaluation/gate.json" in paths else None)
    if chosen is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        local = client.download_artifacts(run_id, chosen, tmp)
        with open(local) as fh:
            return json.load(fh)


# -- register -----------------------------------------------------------------------------------
def register(
    train_out: dict[str, Any],
    eval_out: dict[str, Any],
    validate_out: dict[str, Any] | None,
    lineage: dict[str, str],
    interval: Interval,
    spec_name: str | None = None,
) -> dict[str, Any]:
    """A model version tagged with its lineage, alias `challenger`; one version per run."""
    from include.mlops.registry import register as reg
    from include.mlops.registry import setup_mlflow

    spec, _, settings = _ctx(spec_name)
    client = setup_mlflow(settings)
    tags = {
        **lineage,
        "data_interval": interval.label,
        "data_hash": train_out["data_hash"],
        "gx_result_uri": (validate_out or {}).get("report_uri", ""),
        "feast_feature_service": spec.feature_service_name,
        "git_commit": settings.git_commit,
        "rows": ",".join(f"{k}={v}" for k, v in train_out["rows"].items()),
        "gate": "passed" if eval_out["passed"] else "failed",
    }
    tags = {k: str(v) for k, v in tags.items()}
    version, created = reg(client, spec.model_name, train_out["model_uri"], train_out["run_id"], tags)
    log.info(
        "%s version %s %s (alias challenger)",
        spec.model_name,
        version,
        "registered" if created else "already registered",
    )
    return {"model": spec.model_name, "version": version, "created": created, "run_id": train_out["run_id"]}


# -- deploy (promotion) -------------------------------------------------------------------------
def promote(
    reg_out: dict[str, Any],
    eval_out: dict[str, Any],
    run_id: str,
    dag_id: str,
    strategy: str = "direct",
    spec_name: str | None = None,
    *,
    complete: bool = True,
) -> dict[str, Any]:
    """Move `champion` if the gate passed; otherwise keep it and say why (not a failure).
    `gate_passed` in the result says which: False is a gate rejection (what the gate alert reads).

    The move is a ledger transaction (see `registry`): this run's promotion of this version is
    begun once (`pending`), resumed by a retry, and with `complete` closed here (`done`); the
    deploy step passes `complete=False` and closes it only after its checks. A version that
    already is champion with no promotion of it pending is left alone."""
    from include.mlops.registry import (
        CHAMPION,
        DONE,
        PENDING,
        alias_version,
        apply_move,
        begin_move,
        complete_move,
        finish_open_moves,
        moves_of,
        promotion_base,
        setup_mlflow,
    )

    spec, store, settings = _ctx(spec_name)
    client = setup_mlflow(settings)
    model, version = reg_out["model"], str(reg_out["version"])
    if not eval_out["passed"]:
        champion = alias_version(client, model, CHAMPION)  # raises when the registry does not answer
        msg = "not promoted: " + "; ".join(eval_out["reasons"])
        log.info("%s (champion stays v%s)", msg, champion)
        return {"promoted": False, "message": msg, "champion": champion, "gate_passed": False}
    base = promotion_base(dag_id, run_id, version)
    mine = moves_of(store, model, base)
    move = mine[-1] if mine else None
    resumed = move is not None and move.status == PENDING
    if move is not None and not resumed:
        how = "completed" if move.status == DONE else f"ended ({move.status}: {move.outcome})"
        msg = f"v{version}: this run's promotion of it was {how} at {move.at}; nothing more to do"
        if move.status != DONE:
            msg = "not promoted: " + msg
        log.info(msg)
        return {
            "promoted": False,
            "message": msg,
            "champion": alias_version(client, model, CHAMPION),
            "previous": move.from_version,
            "move": move.move,
            "move_status": move.status,
            "gate_passed": True,
        }
    if move is None:
        finish_open_moves(client, store, model)  # another run's interrupted promotion completes first
        if alias_version(client, model, CHAMPION) == version:
            msg = f"v{version} already champion"
            log.info(msg)
            return {"promoted": False, "message": msg, "champion": version, "previous": None, "gate_passed": True}
        move = begin_move(
            client,
            store,
            model,
            version,
            action="promote",
            reason="gate passed: " + ", ".join(f"{k}={v:.4f}" for k, v in eval_out["metrics"].items()),
            run_id=run_id,
            dag_id=dag_id,
            strategy=strategy,
            base=base,
            awaits_check=not complete,
        )
    apply_move(client, move)
    status = PENDING
    if complete and not move.awaits_check:  # a rollout's promotion completes after its checks only
        status = complete_move(client, store, move, outcome="promoted without a deployment check").status
    before = f"previous: v{move.from_version}" if move.from_version else "the first champion"
    msg = f"promoted v{version} to champion ({before})" + (" - resumed after an interruption" if resumed else "")
    log.info(msg)
    return {
        "promoted": True,
        "message": msg,
        "champion": version,
        "previous": move.from_version,
        "move": move.move,
        "move_status": status,
        "resumed": resumed,
        "gate_passed": True,
    }
