"""Data validation: the pandas checks, the outcome and its report, around the spec's GX suite.

Two severities. `critical` expectations are the contract (column set, types, required values,
ranges and category sets beyond a tolerated fraction, a non-empty batch, a unique entity+time,
event times inside the batch's day): a failure quarantines the batch and stops the run.
`warning` expectations record value skew that should not stop training (any value out of range,
optional columns mostly null).

The column set and the event times are checked here in plain pandas before GX runs, so their
failures read as what is wrong and how to fix it, and GX never evaluates an expectation on a
column the batch does not have (it fails those with its own internal errors). The suite itself,
and how it runs fast on a wide batch, is in `validation.suite`; the outcome, its HTML report
and the failure message are here.
"""

from __future__ import annotations

import difflib
import html
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from include.mlops.validation.suite import finding, run_suite

if TYPE_CHECKING:
    import pandas as pd

    from include.mlops.spec import DatasetSpec


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


def validate_frame(df: pd.DataFrame, spec: DatasetSpec, day: date | None = None) -> ValidationOutcome:
    """Run the spec's suite on one DataFrame with an ephemeral GX context.

    `df` holds the columns of the landed events file (the label too when it comes inline). With
    `day`, the batch's event times must fall inside that day (give or take
    `validation.time_tolerance_hours`). The column set and the event times are checked first, in
    pandas, and reported in plain words (`check_columns`, `check_event_times`); then the GX suite
    runs, one GX batch per column (`suite.run_suite` says why).
    """
    checks = _pandas_checks(df, spec, day)
    result, text = run_suite(df, spec)
    failures, warnings = list(checks), []
    for r in result.results:
        if r.success:
            continue
        if r.expectation_config.type == COLUMN_SET and any(c["type"] == COLUMN_SET for c in checks):
            continue  # reported by check_columns, in plain words
        item = finding(r, text)
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
