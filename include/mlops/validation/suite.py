"""The spec's Great Expectations suite, and how it runs on one DataFrame.

`build_expectations` derives the suite from the spec alone. `run_suite` runs it as several GX
batches over the same rows, one per column (plus the header, the keys, and the text columns'
type checks), and merges the results back into one suite result in suite order. GX's pandas
engine copies its whole batch frame for every column expectation it evaluates
(`df[df[col].notnull()]`, up to four times each in SUMMARY format), so one batch costs the
frame's width times the number of expectations. On 1M rows x 18 columns one batch took ~11 s
and this ~2 s, of which ~1 s is GX's own cost per expectation whatever the rows
(`python -m bench.validate`). `finding` turns a failed result into the report's item.
"""

from __future__ import annotations

from collections.abc import Collection
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


def run_suite(df: pd.DataFrame, spec: DatasetSpec) -> tuple[Any, set[str]]:
    """(the merged suite result, the columns checked as text) for one DataFrame, in an ephemeral
    GX context; expectations on a column `df` lacks are left out (see `build_expectations`)."""
    expectations = build_expectations(spec, df.columns)
    text = _text_columns(df, spec)
    results, metas = _run_batches(df, spec, expectations, text)
    return _merged_result(spec, expectations, results, metas, len(df)), text


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


def finding(r: Any, text: set[str]) -> dict[str, Any]:
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
