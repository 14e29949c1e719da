"""`mlops ingest`: a user's table landed as the daily batches and label feed the pipeline reads.

Events go to `<landing_prefix>/events/dt=<event day>/`, labels (unless they come inline) to
`<label.feed_prefix>/dt=<event day + label.delay_days>/`, one file per source file and day, named
after the source file: ingesting the same file again overwrites what it wrote, another file of
the same days lands beside it.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from include.mlops.spec import DatasetSpec
    from include.mlops.spec_sections import Feature
    from include.mlops.storage import ObjectStore


class IngestError(ValueError):
    """The file does not fit the spec; the message names the columns or values at fault."""


@dataclass(frozen=True)
class LandedDay:
    day: date
    events: int
    labels: int
    events_uri: str
    labels_uri: str | None


def install_spec(spec_path: Path, home: Path) -> Path:
    """Copy a spec file into `$MLOPS_HOME/specs/<name>.yaml`, where the DAGs and the service find it
    by name (they take names only). The copy replaces whatever is there, a link included."""
    from include.mlops.spec import load_spec_file

    spec = load_spec_file(spec_path)
    dst = home / "specs" / f"{spec.name}.yaml"
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink() or spec_path.resolve() != dst.resolve():
        tmp = dst.with_name(f".{dst.name}.tmp")
        shutil.copyfile(spec_path, tmp)
        tmp.replace(dst)  # replaces a link itself, never writes through it
    return dst


def _spec_columns(df: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """A copy of the spec's columns (after `source.rename`); raises naming the missing ones."""
    df = df.rename(columns={str(k): v for k, v in spec.source.rename.items()})
    wanted = [spec.entity_key, spec.timestamp, *spec.feature_names, spec.label]
    missing = [c for c in wanted if c not in df.columns]
    if missing:
        extra = sorted(set(map(str, df.columns)) - set(wanted))
        hint = f"; columns the spec does not name: {extra} (source.rename maps a file column to a spec name)"
        raise IngestError(f"the file lacks the spec's column(s) {missing}{hint if extra else ''}")
    return df[wanted].copy()


def _event_times(col: pd.Series, name: str) -> pd.Series:
    """The event times as UTC; raises on values that are not times or lie more than a day ahead."""
    import pandas as pd

    from include.mlops.data.draft import to_utc

    ts = to_utc(col)
    bad = int(ts.isna().sum())
    if bad:
        raise IngestError(
            f"{bad} value(s) of {name!r} are not dates or times, e.g. {col[ts.isna()].iloc[0]!r}; "
            "write ISO 8601 (2026-10-01T08:30:00Z) or epoch seconds"
        )
    future = ts > pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=1)
    if future.any():
        raise IngestError(
            f"{int(future.sum())} value(s) of {name!r} are in the future, e.g. "
            f"{col[future].iloc[0]!r} on data row {int(future.to_numpy().argmax()) + 1}; "
            "fix or drop those rows (each event day becomes a batch to train on)"
        )
    return ts


def _entity_keys(key: pd.Series, spec: DatasetSpec) -> pd.Series:
    """The keys as text, or as int64 for an integer entity (raising on values that are not integers)."""
    import pandas as pd

    if spec.entity_is_string:
        return key.astype(str)
    as_int = pd.to_numeric(key, errors="coerce")
    if as_int.isna().any() or not (as_int % 1 == 0).all():
        raise IngestError(
            f"entity key {spec.entity_key!r} holds values that are not integers (e.g. {key[as_int.isna()].iloc[0]!r}); "
            "set entity.dtype: string"
        )
    return as_int.astype("int64")


def _feature_values(col: pd.Series, feature: Feature) -> pd.Series:
    """A category's values as text (gaps kept), a numeric feature's as numbers; raises on what does not fit."""
    import pandas as pd

    if not feature.is_numeric:
        return col.where(col.isna(), col.astype(str)).astype(object)
    if pd.api.types.is_bool_dtype(col):
        raise IngestError(
            f"feature {feature.name!r} is {feature.type} in the spec but true/false in the file; make it a category"
        )
    if pd.api.types.is_numeric_dtype(col):
        return col
    as_num = pd.to_numeric(col, errors="coerce")
    wrong = as_num.isna() & col.notna()
    if wrong.any():
        raise IngestError(
            f"feature {feature.name!r} is {feature.type} in the spec but {int(wrong.sum())} value(s) are not numbers, "
            f"e.g. {col[wrong].iloc[0]!r}; fix the values or make it a category"
        )
    return as_num


def _regression_label(y: pd.Series, name: str) -> pd.Series:
    """A regression's label as numbers; true/false and text values raise."""
    import pandas as pd

    as_num = (
        pd.Series(float("nan"), index=y.index) if pd.api.types.is_bool_dtype(y) else pd.to_numeric(y, errors="coerce")
    )
    if as_num.isna().any():
        raise IngestError(
            f"label {name!r} of a regression holds values that are not numbers, e.g. "
            f"{y[as_num.isna()].iloc[0]!r}; fix them, or set task: classification with label.classes"
        )
    return as_num


def _check_classes(y: pd.Series, spec: DatasetSpec) -> None:
    """Raises when the label holds values outside `label.classes` (when the spec lists them)."""
    classes = spec.label_spec.classes if spec.is_classification else None
    if not classes:
        return

    def text(v: object) -> str:  # 1.0 read from a file is the class 1
        return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)

    unknown = sorted({text(v) for v in y.unique()} - {text(c) for c in classes})
    if unknown:
        raise IngestError(
            f"label {spec.label!r} has value(s) {unknown[:10]} that are not in label.classes {classes}; "
            "add them to label.classes (3 or more classes make a multiclass task) or fix the rows"
        )


def conform(df: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """The spec's columns in the spec's types, or an IngestError naming what does not fit."""
    out = _spec_columns(df, spec)
    out[spec.timestamp] = _event_times(out[spec.timestamp], spec.timestamp)
    out[spec.entity_key] = _entity_keys(out[spec.entity_key], spec)
    for f in spec.features:
        out[f.name] = _feature_values(out[f.name], f)
    if out[spec.label].isna().any():
        raise IngestError(f"{int(out[spec.label].isna().sum())} row(s) have no label {spec.label!r}")
    if not spec.is_classification:
        out[spec.label] = _regression_label(out[spec.label], spec.label)
    _check_classes(out[spec.label], spec)
    return out


def _write(store: ObjectStore, key: str, df: pd.DataFrame, fmt: str, delimiter: str) -> str:
    if fmt == "csv":
        text = df.to_csv(index=False, sep=delimiter, date_format="%Y-%m-%dT%H:%M:%S.%fZ")
        return store.put_text(key, text)
    return store.put_parquet(key, df)


def land(df: pd.DataFrame, spec: DatasetSpec, store: ObjectStore, source_name: str) -> list[LandedDay]:
    """Split `df` by event day and write events and labels where the pipeline looks for them."""
    from include.mlops import layout

    data = conform(df, spec)
    fmt = spec.source.format
    stem = Path(source_name).name.split(".")[0] or "file"
    fname = f"ingest-{stem}.{fmt}"
    days = data[spec.timestamp].dt.date
    out = []
    for day in sorted(days.unique()):
        rows = data[days == day].sort_values([spec.timestamp, spec.entity_key], ignore_index=True)
        events = rows if spec.labels_inline else rows.drop(columns=[spec.label])
        ev_uri = _write(store, layout.events_landing_prefix(spec, day) + fname, events, fmt, spec.source.csv_delimiter)
        lab_uri = None
        if not spec.labels_inline:
            arrival = day + timedelta(days=spec.label_delay_days)
            labels = rows[[spec.entity_key, spec.timestamp, spec.label]]
            lab_uri = _write(
                store, layout.labels_landing_prefix(spec, arrival) + fname, labels, fmt, spec.source.csv_delimiter
            )
        out.append(LandedDay(day, len(events), len(rows), ev_uri, lab_uri))
    return out
