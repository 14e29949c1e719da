from datetime import date

import numpy as np
import pytest

from include.mlops.data.generator import Scenario, generate_day
from include.mlops.spec import load_spec
from include.mlops.validation.checks import failure_message, render_html, validate_frame

DAY = date(2026, 10, 3)


@pytest.fixture(scope="module")
def spec():
    return load_spec("churn")


def _types(outcome):
    return {(f["type"], f["column"]) for f in outcome.failures}


def test_clean_batch_passes(spec):
    ev, _ = generate_day(spec, DAY, rows=800)
    out = validate_frame(ev, spec)
    assert out.success and not out.failures and out.rows == 800


def test_corrupted_batch_fails_on_nulls_ranges_and_categories(spec):
    ev, _ = generate_day(spec, DAY, Scenario("corrupted", DAY), rows=800)
    out = validate_frame(ev, spec)
    assert not out.success
    t = _types(out)
    assert ("expect_column_values_to_not_be_null", spec.numeric_features[0]) in t
    assert ("expect_column_values_to_be_in_set", spec.categorical_features[0]) in t
    assert any(k == "expect_column_values_to_be_between" for k, _ in t)


@pytest.mark.parametrize(
    "scenario, expected",
    [
        ("schema_missing", "expect_table_columns_to_match_set"),
        ("schema_renamed", "expect_table_columns_to_match_set"),
        ("schema_retyped", "expect_column_values_to_be_in_type_list"),
    ],
)
def test_schema_breaks_fail(spec, scenario, expected):
    ev, _ = generate_day(spec, DAY, Scenario(scenario, DAY), rows=300)
    out = validate_frame(ev, spec)
    assert not out.success
    assert expected in {f["type"] for f in out.failures}


def test_small_value_skew_is_a_warning_not_a_failure(spec):
    ev, _ = generate_day(spec, DAY, rows=1000)
    ev.loc[:2, "monthly_charges"] = 999.0  # 0.3 % out of range: under the 1 % tolerance
    out = validate_frame(ev, spec)
    assert out.success
    assert any(w["column"] == "monthly_charges" for w in out.warnings)


def test_duplicate_entity_time_fails(spec):
    ev, _ = generate_day(spec, DAY, rows=200)
    ev.loc[1, [spec.entity_key, spec.timestamp]] = ev.loc[0, [spec.entity_key, spec.timestamp]].to_numpy()
    out = validate_frame(ev, spec)
    assert "expect_compound_columns_to_be_unique" in {f["type"] for f in out.failures}


def test_empty_batch_fails(spec):
    ev, _ = generate_day(spec, DAY, rows=10)
    out = validate_frame(ev.iloc[0:0], spec)
    assert "expect_table_row_count_to_be_between" in {f["type"] for f in out.failures}


def test_message_and_report_name_what_failed(spec):
    ev, _ = generate_day(spec, DAY, Scenario("corrupted", DAY), rows=300)
    ev["tenure_months"] = ev["tenure_months"].astype(float)
    ev.loc[:50, "tenure_months"] = np.nan
    out = validate_frame(ev, spec)
    msg = failure_message(out, "churn 2026-10-03", "file:///r/validation.json", "file:///q/")
    assert "expect_column_values_to_not_be_null[tenure_months]" in msg
    assert "file:///r/validation.json" in msg and "quarantined to file:///q/" in msg
    page = render_html(out, "t")
    assert "FAILED" in page and "tenure_months" in page
