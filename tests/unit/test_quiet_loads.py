"""Model saves and loads inside a task: skops' deprecation-warning flood is counted, not logged;
other warnings still reach the log, and nothing changes outside the call."""

from __future__ import annotations

import logging
import warnings

from include.mlops.training.tracking import quiet_deprecations


def test_the_flood_is_one_line_and_other_warnings_pass(caplog):
    with caplog.at_level(logging.INFO, logger="include.mlops.training.tracking"):
        with warnings.catch_warnings(record=True) as outside:
            warnings.simplefilter("always")
            with quiet_deprecations("loaded models:/m/1"):
                for i in range(1160):
                    warnings.warn(f"airflow.utils.x{i} is deprecated", FutureWarning, stacklevel=1)
                warnings.warn("old", DeprecationWarning, stacklevel=1)
                warnings.warn("integer columns cannot hold missing values", UserWarning, stacklevel=1)
            warnings.warn("after the call", DeprecationWarning, stacklevel=1)
    assert [str(w.message) for w in outside] == ["integer columns cannot hold missing values", "after the call"]
    assert [r.getMessage() for r in caplog.records] == [
        "loaded models:/m/1 (1161 deprecation warnings from skops' module scan not shown)"
    ]
