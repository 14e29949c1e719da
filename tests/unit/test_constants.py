"""The facts the DAGs and the library share: metric directions are judged one way everywhere."""

from __future__ import annotations

import pytest

from include.mlops.constants import lower_is_better, worse_by


@pytest.mark.parametrize(
    ("metric", "reference", "value", "worse"),
    [
        ("roc_auc", 0.80, 0.75, 0.05),  # higher is better: a drop is worse
        ("roc_auc", 0.80, 0.85, -0.05),
        ("rmse", 10.0, 12.0, 2.0),  # lower is better: a rise is worse
        ("slice.rmse", 10.0, 8.0, -2.0),  # a slice's metric reads as the metric
        ("log_loss", 0.4, 0.5, 0.1),
    ],
)
def test_worse_by_follows_the_metric_direction(metric: str, reference: float, value: float, worse: float) -> None:
    assert worse_by(metric, reference, value) == pytest.approx(worse)
    assert lower_is_better(metric) == (worse_by(metric, 1.0, 2.0) > 0)
