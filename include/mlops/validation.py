"""Data validation: a Great Expectations suite generated from the dataset spec.

Two severities. `critical` expectations are the contract (column set, types, required values,
ranges and category sets beyond a tolerated fraction, a non-empty batch, a unique entity+time,
event times inside the batch's day): a failure quarantines the batch and stops the run.
`warning` expectations record value skew that should not stop training (any value out of range,
optional columns mostly null).

The column set and the event times are checked here in plain pandas before GX runs, so their
failures read as what is wrong and how to fix it, and GX never evaluates an expectation on a
column the batch does not have (it fails those with its own internal errors).
"""

from __future__ import annotations

import difflib
import html
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from include.mlops.spec import DatasetSpec

INT_TYPES = [
    "int8",
    "int16",
    "int32",
    "int64",
    "Int8",
    "Int16",
    "Int32",
    "Int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
]
FLOAT_TYPES = ["float16", "float32", "float64", "Float32", "Float64"]
TEXT_TYPES = ["object", "str", "string", "StringDtype", "category"]


class DataValidationError(Exception):
    """A batch broke the data contract; the message lists the failed expectations."""


class BadBatchError(DataValidationError):
    """A landed file cannot be read as the spec's format (empty, not parquet, truncated, a CSV
    that does not parse); it was quarantined with its cause. Not retried: the same file fails
    the same way."""


class NoDataError(FileNotFoundError):
    """No file of the expected format landed for a day; the message says where extract looked."""


COLUMN_SET = "expect_table_columns_to_match_set"
EVENT_TIMES = "event_times_in_batch_day"


@dataclass(frozen=True)
class ColumnCheck:
    """How a batch's columns differ from what the spec says a landed events file holds."""

    missing: list[str]
    unexpected: list[str]
    label_in_events: str | None = None  # the label column, found in the events of a separate feed

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.label_in_events)

    def message(self) -> str:
        parts = []
        if self.missing:
            parts.append(
                f"missing column(s) {', '.join(self.missing)}: the spec lists them and the file does not have them; "
                "add them to the file (or take them out of the spec)"
            )
        if self.unexpected:
            parts.append(
                f"unexpected column(s) {', '.join(self.unexpected)}: the file has them and the spec does not; "
                "add them to the spec's features or drop them from the file"
            )
        for new, old in self.renamed().items():
            parts.append(f"{new} looks like {old} renamed: map it with source.rename: {{{new}: {old}}}")
        if self.label_in_events:
            parts.append(
                f"the label column {self.label_in_events} is in the events file: set label.feed: inline, "
                "or drop it from the events"
            )
        return "columns do not match the spec: " + "; ".join(parts)

    def renamed(self) -> dict[str, str]:
        """Unexpected columns that look like a missing one under another name."""
        out: dict[str, str] = {}
        left = list(self.missing)
        for col in self.unexpected:
            close = difflib.get_close_matches(col, left, n=1, cutoff=0.6)
            if close:
                out[col] = close[0]
                left.remove(close[0])
        return out


def check_columns(columns: Iterable[str], spec: DatasetSpec) -> ColumnCheck:
    """Compare a batch's column names with `spec.raw_columns` (header only, no rows read)."""
    have = list(dict.fromkeys(str(c) for c in columns))
    want = spec.raw_columns
    label_in_events = spec.label if not spec.labels_inline and spec.label in have else None
    return ColumnCheck(
        missing=[c for c in want if c not in have],
        unexpected=[c for c in have if c not in want and c != label_in_events],
        label_in_events=label_in_events,
    )


def _utc(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%d %H:%M:%S UTC")


def check_event_times(ts: pd.Series, day: date, tolerance_hours: float, column: str) -> dict[str, Any] | None:
    """A failure item when event times fall outside [day - tolerance, day + 1 day + tolerance).

    Vectorised over int64 nanoseconds: no per-row Python. Nulls are left to the not-null check.
    """
    import numpy as np
    import pandas as pd

    start = datetime(day.year, day.month, day.day, tzinfo=UTC) - timedelta(hours=tolerance_hours)
    end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1, hours=tolerance_hours)
    window = f"[{_utc(start)}, {_utc(end)})"
    if not pd.api.types.is_datetime64_any_dtype(ts.dtype):
        return _failure(
            EVENT_TIMES,
            column,
            f"event times: column {column} holds {ts.dtype} values, not date-times; write it as a parquet "
            "timestamp (or, in a CSV, as ISO 8601 text such as 2026-10-01T08:30:00Z)",
        )
    idx = pd.DatetimeIndex(ts)
    idx = idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")
    ns = idx.as_unit("ns").asi8
    known = ns[~idx.isna()]
    if not len(known):
        return None
    lo, hi = pd.Timestamp(start).value, pd.Timestamp(end).value
    outside = int(np.count_nonzero((known < lo) | (known >= hi)))
    if not outside:
        return None
    first, last = _utc(pd.Timestamp(known.min(), tz="UTC")), _utc(pd.Timestamp(known.max(), tz="UTC"))
    item = _failure(
        EVENT_TIMES,
        column,
        f"event times: {outside} of {len(known)} row(s) fall outside the batch's day {day.isoformat()} "
        f"{window} (seen from {first} to {last}); check the dt= folder the file landed in and the time zone "
        f"of {column}, or allow some spill-over with validation.time_tolerance_hours",
    )
    item.update(unexpected_count=outside, observed={"min": first, "max": last})
    return item


def _failure(kind: str, column: str | None, message: str) -> dict[str, Any]:
    return {
        "label": message.split(":")[0] + (f"[{column}]" if column else ""),
        "type": kind,
        "column": column,
        "severity": "critical",
        "unexpected_count": None,
        "unexpected_percent": None,
        "observed": None,
        "sample": [],
        "error": None,
        "message": message,
    }


@dataclass
class ValidationOutcome:
    success: bool
    failures: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    statistics: dict[str, Any] = field(default_factory=dict)
    rows: int = 0
    result: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "rows": self.rows,
            "failed": [f["label"] for f in self.failures],
            "warnings": [w["label"] for w in self.warnings],
            "statistics": self.statistics,
        }


def build_expectations(spec: DatasetSpec, columns: Collection[str] | None = None) -> list[Any]:
    """The suite, as GX expectation objects, derived from the spec alone.

    With `columns` (the batch's), expectations on a column the batch lacks are left out: the
    column-set check reports it, and GX would only fail them with internal errors.
    """
    import great_expectations as gx

    E = gx.expectations
    tol = spec.validation.max_bad_fraction
    has = (lambda c: True) if columns is None else set(columns).__contains__
    key, ts = spec.entity_key, spec.timestamp
    out: list[Any] = [
        E.ExpectTableColumnsToMatchSet(column_set=spec.raw_columns, exact_match=True),
        E.ExpectTableRowCountToBeBetween(min_value=1),
    ]
    if has(key) and has(ts):
        out.append(E.ExpectCompoundColumnsToBeUnique(column_list=[key, ts]))
    if has(key):
        out.append(E.ExpectColumnValuesToNotBeNull(column=key))
    if has(ts):
        out.append(E.ExpectColumnValuesToNotBeNull(column=ts))
    if has(key):
        out.append(E.ExpectColumnValuesToBeInTypeList(column=key, type_list=key_types(spec)))
    for f in spec.features:
        if not has(f.name):
            continue
        types = INT_TYPES + FLOAT_TYPES if f.is_numeric else TEXT_TYPES
        out.append(E.ExpectColumnValuesToBeInTypeList(column=f.name, type_list=types))
        if f.required:
            out.append(E.ExpectColumnValuesToNotBeNull(column=f.name))
        else:
            out.append(E.ExpectColumnValuesToNotBeNull(column=f.name, mostly=0.95, severity="warning"))
        if f.range is not None:
            lo, hi = f.range
            out.append(E.ExpectColumnValuesToBeBetween(column=f.name, min_value=lo, max_value=hi, mostly=1 - tol))
            out.append(E.ExpectColumnValuesToBeBetween(column=f.name, min_value=lo, max_value=hi, severity="warning"))
        if f.values is not None:
            vals = list(f.values)
            out.append(E.ExpectColumnValuesToBeInSet(column=f.name, value_set=vals, mostly=1 - tol))
            out.append(E.ExpectColumnValuesToBeInSet(column=f.name, value_set=vals, severity="warning"))
    return out


def key_types(spec: DatasetSpec) -> list[str]:
    """The dtypes the entity key may arrive as, by `entity.dtype`."""
    return TEXT_TYPES if spec.entity_is_string else INT_TYPES


def _label(cfg: Any) -> str:
    kw = {k: v for k, v in cfg.kwargs.items() if k not in {"batch_id", "column"}}
    col = cfg.kwargs.get("column")
    short = ", ".join(f"{k}={v}" for k, v in kw.items() if k not in {"value_set", "column_set", "type_list"})
    target = f"[{col}]" if col else ""
    return f"{cfg.type}{target}" + (f" ({short})" if short else "")


TABLE_BATCH, KEYS_BATCH, TEXT_TYPES_BATCH = "__table__", "__keys__", "__text_types__"


def _batch_of(expectation: Any, spec: DatasetSpec, text: set[str]) -> str:
    """The GX batch an expectation runs in (see `_batch_frame`)."""
    kind = type(expectation).__name__
    if kind == "ExpectTableColumnsToMatchSet":
        return TABLE_BATCH
    column = getattr(expectation, "column", None)
    if kind == "ExpectColumnValuesToBeInTypeList" and column in text:
        return TEXT_TYPES_BATCH  # a text entity key too
    if column is None or column in (spec.entity_key, spec.timestamp):
        return KEYS_BATCH  # row count, entity+time uniqueness, the key columns
    return column


def _all_text(col: pd.Series) -> bool:
    """Every non-null value is a str (one pass in C), for object and categorical columns."""
    import pandas as pd

    if isinstance(col.dtype, pd.CategoricalDtype):
        return pd.api.types.infer_dtype(col.cat.categories, skipna=True) in ("string", "empty")
    return col.dtype == object and pd.api.types.infer_dtype(col, skipna=True) == "string"


def _batch_frame(df: pd.DataFrame, batch: str, spec: DatasetSpec, text: set[str]) -> pd.DataFrame:
    """What one batch sees: the same rows (and index) as `df`, only the columns it checks.

    `text` names the categorical features whose every value is a str (`_all_text`, over all
    rows). GX checks an object column's type by calling isinstance on each value (~1 s per
    million rows) but reads any other column's type from its dtype alone, and it tests nulls and
    set membership far faster on a pandas category than on Python strings. So these columns
    reach their other checks as categories, and their type checks as pandas' string dtype on
    the header only: that check never reads rows, and the values were checked in `_all_text`.
    A text column holding anything else reaches GX as plain values, whose per-value check
    reports it as before.
    """
    import pandas as pd

    if batch == TABLE_BATCH:
        return df.iloc[:0]  # the column-set check reads the header only
    if batch == KEYS_BATCH:
        return df[[c for c in (spec.entity_key, spec.timestamp) if c in df.columns]]
    if batch == TEXT_TYPES_BATCH:
        return pd.DataFrame({c: pd.Series([], dtype="string") for c in sorted(text)})
    if batch not in df.columns:
        return df.iloc[:, :0]  # GX reports the missing column on each of its expectations
    col = df[batch]
    if batch in text and col.dtype == object:
        col = col.astype("category")
    elif batch not in text and isinstance(col.dtype, pd.CategoricalDtype):
        col = col.astype(col.cat.categories.dtype)  # e.g. codes sent as numbers: judged as such
    return col.to_frame()


def _sample(value: Any, text: bool) -> str:
    """An unexpected value as the report shows it; a text column's nulls read `None` whatever dtype GX saw."""
    import pandas as pd

    return "None" if text and pd.api.types.is_scalar(value) and pd.isna(value) else str(value)


def _pandas_checks(df: pd.DataFrame, spec: DatasetSpec, day: date | None) -> list[dict[str, Any]]:
    """The column set and, with `day`, the event times, checked in pandas and reported in plain words."""
    columns = check_columns(df.columns, spec)
    checks: list[dict[str, Any]] = []
    if not columns.ok:
        checks.append(_failure(COLUMN_SET, None, columns.message()))
    if day is not None and spec.timestamp in df.columns:
        timing = check_event_times(df[spec.timestamp], day, spec.validation.time_tolerance_hours, spec.timestamp)
        if timing is not None:
            checks.append(timing)
    return checks


def _text_columns(df: pd.DataFrame, spec: DatasetSpec) -> set[str]:
    """Categorical features (and a string entity key) whose values are all text: checked as text."""
    text = {c for c in spec.categorical_features if c in df.columns and _all_text(df[c])}
    if spec.entity_is_string and spec.entity_key in df.columns and _all_text(df[spec.entity_key]):
        text.add(spec.entity_key)
    return text


def _run_batches(
    df: pd.DataFrame, spec: DatasetSpec, expectations: list[Any], text: set[str]
) -> tuple[list[Any], dict[str, Any]]:
    """(results, batch markers): each GX batch's suite run on its own slice of `df`, in an ephemeral context."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch_def = (
        ctx.data_sources.add_pandas(f"{spec.name}_pandas")
        .add_dataframe_asset(f"{spec.name}_batch")
        .add_batch_definition_whole_dataframe("whole")
    )
    groups: dict[str, list[Any]] = {}
    for exp in expectations:
        groups.setdefault(_batch_of(exp, spec, text), []).append(exp)
    results, metas = [], {}
    for batch, exps in groups.items():
        # the suite is built whole: adding expectations one by one re-serialises it each time
        suite = ctx.suites.add(gx.ExpectationSuite(name=f"{spec.name}_contract.{batch}", expectations=exps))
        vd = ctx.validation_definitions.add(
            gx.ValidationDefinition(name=f"{spec.name}_validation.{batch}", data=batch_def, suite=suite)
        )
        run = vd.run(batch_parameters={"dataframe": _batch_frame(df, batch, spec, text)}, result_format="SUMMARY")
        results.extend(run.results)
        metas[batch] = run.meta.get("batch_markers", {})
    return results, metas


def _merged_result(
    spec: DatasetSpec, expectations: list[Any], results: list[Any], metas: dict[str, Any], rows: int
) -> Any:
    """The batches' results as one suite result, in suite order, with the suite's statistics."""
    import great_expectations as gx
    from great_expectations.core.expectation_validation_result import ExpectationSuiteValidationResult

    order = {exp.id: i for i, exp in enumerate(expectations)}
    results.sort(key=lambda r: order.get(r.expectation_config.id, len(order)))
    passed = sum(1 for r in results if r.success)
    return ExpectationSuiteValidationResult(
        success=passed == len(results),
        results=results,
        suite_name=f"{spec.name}_contract",
        statistics={
            "evaluated_expectations": len(results),
            "successful_expectations": passed,
            "unsuccessful_expectations": len(results) - passed,
            "success_percent": passed / len(results) * 100 if results else None,
        },
        meta={"great_expectations_version": gx.__version__, "rows": rows, "batches": metas},
    )


def _finding(r: Any, text: set[str]) -> dict[str, Any]:
    """One failed expectation as the report lists it: what, where, how many and a sample of values."""
    cfg = r.expectation_config
    return {
        "label": _label(cfg),
        "type": cfg.type,
        "column": cfg.kwargs.get("column"),
        "severity": str(getattr(cfg.severity, "value", cfg.severity)),
        "unexpected_count": r.result.get("unexpected_count"),
        "unexpected_percent": r.result.get("unexpected_percent"),
        "observed": r.result.get("observed_value"),
        "sample": [
            _sample(v, cfg.kwargs.get("column") in text) for v in (r.result.get("partial_unexpected_list") or [])[:5]
        ],
        "error": (r.exception_info or {}).get("exception_message") if r.exception_info else None,
    }


def validate_frame(df: pd.DataFrame, spec: DatasetSpec, day: date | None = None) -> ValidationOutcome:
    """Run the spec's suite on one DataFrame with an ephemeral GX context.

    `df` holds the columns of the landed events file (the label too when it comes inline). With
    `day`, the batch's event times must fall inside that day (give or take
    `validation.time_tolerance_hours`). The column set and the event times are checked first, in
    pandas, and reported in plain words (`check_columns`, `check_event_times`).

    The suite runs as several GX batches over the same rows, one per column (plus the header, the
    keys, and the text columns' type checks), and the results are merged back in suite order.
    GX's pandas engine copies its whole batch frame for every column expectation it evaluates
    (`df[df[col].notnull()]`, up to four times each in SUMMARY format), so one batch costs the
    frame's width times the number of expectations. On 1M rows x 18 columns one batch took
    ~11 s and this ~2 s, of which ~1 s is GX's own cost per expectation whatever the rows
    (`python -m bench.validate`).
    """
    checks = _pandas_checks(df, spec, day)
    expectations = build_expectations(spec, df.columns)
    text = _text_columns(df, spec)
    results, metas = _run_batches(df, spec, expectations, text)
    result = _merged_result(spec, expectations, results, metas, len(df))
    failures, warnings = list(checks), []
    for r in result.results:
        if r.success:
            continue
        if r.expectation_config.type == COLUMN_SET and any(c["type"] == COLUMN_SET for c in checks):
            continue  # reported by check_columns, in plain words
        item = _finding(r, text)
        (warnings if item["severity"] == "warning" else failures).append(item)
    return ValidationOutcome(
        success=not failures,
        failures=failures,
        warnings=warnings,
        statistics=dict(result.statistics),
        rows=len(df),
        result={**result.to_json_dict(), "checks": checks},
    )


def render_html(outcome: ValidationOutcome, title: str) -> str:
    """A self-contained page: verdict, failed and warned expectations, then every result."""
    verdict = "PASSED" if outcome.success else "FAILED"
    color = "#1a7f37" if outcome.success else "#cf222e"

    def rows(items: list[dict[str, Any]]) -> str:
        return (
            "".join(
                "<tr>"
                + "".join(
                    f"<td>{html.escape(str(v))}</td>"
                    for v in (
                        i["severity"],
                        i.get("message") or i["label"],
                        i.get("unexpected_count"),
                        i.get("observed"),
                        ", ".join(i["sample"]),
                        i.get("error") or "",
                    )
                )
                + "</tr>"
                for i in items
            )
            or "<tr><td colspan=6>none</td></tr>"
        )

    head = "<tr><th>severity</th><th>expectation</th><th>unexpected</th><th>observed</th><th>sample</th><th>error</th></tr>"
    all_rows = "".join(
        f"<tr><td>{'ok' if r['success'] else 'FAIL'}</td><td>{html.escape(r['expectation_config']['type'])}</td>"
        f"<td>{html.escape(str(r['expectation_config']['kwargs'].get('column', '')))}</td></tr>"
        for r in outcome.result.get("results", [])
    )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}</style>
</head><body><h1>{html.escape(title)}</h1>
<p style="color:{color};font-weight:bold">{verdict}: {outcome.rows} rows, {outcome.statistics}</p>
<h2>Failed (critical)</h2><table>{head}{rows(outcome.failures)}</table>
<h2>Warnings (value skew, recorded)</h2><table>{head}{rows(outcome.warnings)}</table>
<h2>All expectations</h2><table><tr><th>result</th><th>expectation</th><th>column</th></tr>{all_rows}</table>
</body></html>"""


def failure_message(outcome: ValidationOutcome, batch: str, report_uri: str, quarantine_uri: str) -> str:
    """What failed, in words a person can act on; GX's own error text stays in the report."""
    lines = [f"batch {batch} failed {len(outcome.failures)} critical expectation(s):"]
    for f in outcome.failures:
        if f.get("message"):
            lines.append(f"  - {f['message']}")
            continue
        detail = f" unexpected={f['unexpected_count']}" if f.get("unexpected_count") else ""
        detail += f" observed={f['observed']}" if f.get("observed") is not None and not detail else ""
        if f.get("error"):
            detail += " (could not be evaluated on this batch; the report has the details)"
        lines.append(f"  - {f['label']}{detail}")
    lines.append(f"quarantined to {quarantine_uri}; full report: {report_uri}")
    return "\n".join(lines)
