"""Data validation: a Great Expectations suite generated from the dataset spec.

Two severities. `critical` expectations are the contract (column set, types, required values,
ranges and category sets beyond a tolerated fraction, a non-empty batch, a unique entity+time):
a failure quarantines the batch and stops the run. `warning` expectations record value skew
that should not stop training (any value out of range, optional columns mostly null).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
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


def build_expectations(spec: DatasetSpec) -> list[Any]:
    """The suite, as GX expectation objects, derived from the spec alone."""
    import great_expectations as gx

    E = gx.expectations
    tol = spec.validation.max_bad_fraction
    out: list[Any] = [
        E.ExpectTableColumnsToMatchSet(column_set=spec.raw_columns, exact_match=True),
        E.ExpectTableRowCountToBeBetween(min_value=1),
        E.ExpectCompoundColumnsToBeUnique(column_list=[spec.entity_key, spec.timestamp]),
        E.ExpectColumnValuesToNotBeNull(column=spec.entity_key),
        E.ExpectColumnValuesToNotBeNull(column=spec.timestamp),
        E.ExpectColumnValuesToBeInTypeList(column=spec.entity_key, type_list=INT_TYPES),
    ]
    for f in spec.features:
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
    if column is None or column in (spec.entity_key, spec.timestamp):
        return KEYS_BATCH  # row count, entity+time uniqueness, the key columns
    if kind == "ExpectColumnValuesToBeInTypeList" and column in text:
        return TEXT_TYPES_BATCH
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


def validate_frame(df: pd.DataFrame, spec: DatasetSpec) -> ValidationOutcome:
    """Run the spec's suite on one DataFrame with an ephemeral GX context.

    The suite runs as several GX batches over the same rows, one per column (plus the header, the
    keys, and the text columns' type checks), and the results are merged back in suite order.
    GX's pandas engine copies its whole batch frame for every column expectation it evaluates
    (`df[df[col].notnull()]`, up to four times each in SUMMARY format), so one batch costs the
    frame's width times the number of expectations. On 1M rows x 18 columns one batch took
    ~11 s and this ~2 s, of which ~1 s is GX's own cost per expectation whatever the rows
    (`python -m bench.validate`).
    """
    import great_expectations as gx
    from great_expectations.core.expectation_validation_result import ExpectationSuiteValidationResult
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch_def = (
        ctx.data_sources.add_pandas(f"{spec.name}_pandas")
        .add_dataframe_asset(f"{spec.name}_batch")
        .add_batch_definition_whole_dataframe("whole")
    )
    expectations = build_expectations(spec)
    text = {c for c in spec.categorical_features if c in df.columns and _all_text(df[c])}
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
    order = {exp.id: i for i, exp in enumerate(expectations)}
    results.sort(key=lambda r: order.get(r.expectation_config.id, len(order)))
    passed = sum(1 for r in results if r.success)
    result = ExpectationSuiteValidationResult(
        success=passed == len(results),
        results=results,
        suite_name=f"{spec.name}_contract",
        statistics={
            "evaluated_expectations": len(results),
            "successful_expectations": passed,
            "unsuccessful_expectations": len(results) - passed,
            "success_percent": passed / len(results) * 100 if results else None,
        },
        meta={"great_expectations_version": gx.__version__, "rows": len(df), "batches": metas},
    )

    failures, warnings = [], []
    for r in result.results:
        if r.success:
            continue
        cfg = r.expectation_config
        item = {
            "label": _label(cfg),
            "type": cfg.type,
            "column": cfg.kwargs.get("column"),
            "severity": str(getattr(cfg.severity, "value", cfg.severity)),
            "unexpected_count": r.result.get("unexpected_count"),
            "unexpected_percent": r.result.get("unexpected_percent"),
            "observed": r.result.get("observed_value"),
            "sample": [
                _sample(v, cfg.kwargs.get("column") in text)
                for v in (r.result.get("partial_unexpected_list") or [])[:5]
            ],
            "error": (r.exception_info or {}).get("exception_message") if r.exception_info else None,
        }
        (warnings if item["severity"] == "warning" else failures).append(item)
    return ValidationOutcome(
        success=not failures,
        failures=failures,
        warnings=warnings,
        statistics=dict(result.statistics),
        rows=len(df),
        result=result.to_json_dict(),
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
                        i["label"],
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
    lines = [f"batch {batch} failed {len(outcome.failures)} critical expectation(s):"]
    for f in outcome.failures:
        detail = f" unexpected={f['unexpected_count']}" if f.get("unexpected_count") else ""
        detail += f" observed={f['observed']}" if f.get("observed") is not None and not detail else ""
        detail += f" error={f['error']}" if f.get("error") else ""
        lines.append(f"  - {f['label']}{detail}")
    lines.append(f"quarantined to {quarantine_uri}; full report: {report_uri}")
    return "\n".join(lines)
