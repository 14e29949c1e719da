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
TEXT_TYPES = ["object", "str", "string", "category"]


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
    tol = float(spec.section("validation").get("max_bad_fraction", 0.01))
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


def validate_frame(df: pd.DataFrame, spec: DatasetSpec) -> ValidationOutcome:
    """Run the spec's suite on one DataFrame with an ephemeral GX context."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch_def = (
        ctx.data_sources.add_pandas(f"{spec.name}_pandas")
        .add_dataframe_asset(f"{spec.name}_batch")
        .add_batch_definition_whole_dataframe("whole")
    )
    suite = ctx.suites.add(gx.ExpectationSuite(name=f"{spec.name}_contract"))
    for exp in build_expectations(spec):
        suite.add_expectation(exp)
    vd = ctx.validation_definitions.add(
        gx.ValidationDefinition(name=f"{spec.name}_validation", data=batch_def, suite=suite)
    )
    result = vd.run(batch_parameters={"dataframe": df}, result_format="SUMMARY")

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
            "sample": [str(v) for v in (r.result.get("partial_unexpected_list") or [])[:5]],
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
