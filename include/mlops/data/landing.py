"""Reading what teams land for a day: every file of the spec's format, to one staged parquet.

`extract_day` is what the `extract` step runs per day. A day's files are read in full before
staging changes; a file that is not a table of the spec's format is quarantined with its cause in
plain words (`reject_files`), and a store that cannot give a file back raises `LandingReadError`.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from include.mlops.spec import DatasetSpec
    from include.mlops.storage import ObjectStore

log = logging.getLogger(__name__)

EXTENSIONS = {"parquet": (".parquet",), "csv": (".csv", ".csv.gz")}
BYOD_HELP = 'see README.md, section "Bring your own data"'


class _Unreadable(Exception):
    """One landed file cannot be read; the message is the cause in plain words."""


def extract_day(store: ObjectStore, spec: DatasetSpec, day: date) -> tuple[str, int, int]:
    """Stage one day: (staged events URI, event rows, label rows). Raises NoDataError when no
    file of the spec's format landed, BadBatchError (after quarantining) on an unreadable file,
    LandingReadError when the store cannot give a file back.

    Every landed file is read before staging changes, so a read that fails halfway (a store
    error on the labels after the events were read) leaves the day's staging as it was: the
    complete day of an earlier run, or nothing; never events without their labels."""
    from include.mlops import layout
    from include.mlops.validation.checks import NoDataError

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
        reject_files(store, spec, day, bad)
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


def discard_day(store: ObjectStore, spec: DatasetSpec, day: date, labels: bool) -> None:
    """Downstream steps must never see a rejected day: its staging (and features) go."""
    from include.mlops import layout
    from include.mlops.features.build import feature_key

    store.delete_prefix(layout.staging_events_prefix(spec, day))
    if labels or spec.labels_inline:
        store.delete_prefix(layout.staging_labels_prefix(spec, day))
    store.delete_prefix(feature_key(spec, day.isoformat()))


def reject_files(store: ObjectStore, spec: DatasetSpec, day: date, bad: list[tuple[str, str, str]]) -> None:
    """Quarantine unreadable landed files with their cause, discard the day, raise BadBatchError."""
    from include.mlops import layout
    from include.mlops.validation.checks import BadBatchError

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
    discard_day(store, spec, day, labels=any(kind == "labels" for _, kind, _ in bad))
    lines = [f"extract rejected {len(bad)} file(s) of {spec.name} for {day.isoformat()}:"]
    lines += [f"  - {e['file']}: {e['cause']}" for e in entries]
    lines.append(
        f"quarantined to {store.uri(qprefix)} (why: {cause_uri}); replace the file(s) in the landing zone and re-run the day"
    )
    raise BadBatchError("\n".join(lines))


def labelled_events(store: ObjectStore, spec: DatasetSpec, end_day: date, window_days: int) -> pd.DataFrame:
    """Labels that have arrived by `end_day` (the interval's last day) for events in the window,
    restricted to days whose features exist (quarantined days have none and would be dropped by the join).

    Only label files that arrived within the window are read (a label never arrives before its
    event), so the cost follows the window, not the length of the history."""
    import pandas as pd

    from include.mlops import layout

    first_event_day = end_day - timedelta(days=window_days + spec.label_delay_days - 1)
    frames = []
    for key in store.list(layout.staging_labels_root(spec)):
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
        pd.Timestamp(k.split("part-")[1][:10], tz="UTC")
        for k in store.list(layout.features_prefix(spec))
        if "part-" in k
    ]
    featured = ev_day.isin(have)
    after_first = ev_day >= pd.Timestamp(first_event_day, tz="UTC")
    keep = after_first & (ev_day <= pd.Timestamp(end_day, tz="UTC")) & featured
    dropped = int((after_first & ~featured).sum())
    if dropped:
        log.warning("%d labelled events fall on days without features (quarantined or not ingested); excluded", dropped)
    return labels[keep].sort_values([spec.timestamp, spec.entity_key], ignore_index=True)
