"""The service's fast feature frame must equal features.build.build_features, or not be used."""

from __future__ import annotations

import pandas as pd
import pytest

from include.mlops.features.build import build_features, model_features
from include.mlops.serving.frames import FrameBuilder
from include.mlops.spec import load_spec, parse_spec


@pytest.mark.parametrize("name", ["churn", "housing"])
def test_fast_frame_equals_build_features(name):
    spec = load_spec(name)
    b = FrameBuilder(spec)
    assert b.fast, "the shipped specs' derived features are numpy-evaluable"
    rows = b.probe_rows(40, seed=3)
    expected = build_features(pd.DataFrame(rows, columns=spec.feature_names), spec)[model_features(spec)]
    pd.testing.assert_frame_equal(b.frame(rows), expected.reset_index(drop=True))
    assert list(b.frame([]).columns) == model_features(spec)


def test_division_by_zero_gives_nan_like_pandas():
    spec = load_spec("churn")
    b = FrameBuilder(spec)
    row = b.probe_rows(1)[0]
    names = spec.feature_names
    row[names.index("num_devices")] = 0.0  # support_calls_per_device = x / 0
    row[names.index("support_calls_30d")] = 0.0
    out = b.frame([row])
    assert out["support_calls_per_device"].isna().all()


def test_comparisons_and_functions_agree_on_both_paths():
    raw = load_spec("churn").to_dict() | {
        "derived_features": {
            "tenure_years": "tenure_months / 12",
            "flag": "(tenure_months > 3) & (monthly_charges > 5)",
            "log_usage": "log1p(data_usage_gb) + where(num_devices > 2, 1, 0)",
        }
    }
    spec = parse_spec(raw)
    b = FrameBuilder(spec)
    assert b.fast
    rows = b.probe_rows(5)
    expected = build_features(pd.DataFrame(rows, columns=spec.feature_names), spec)[model_features(spec)]
    pd.testing.assert_frame_equal(b.frame(rows), expected.reset_index(drop=True))
