"""The step results survive a trip through XCom's JSON, and a malformed XCom names its step."""

from __future__ import annotations

import json

import pytest

from include.mlops.results import (
    EvaluateResult,
    ExtractResult,
    PrepareResult,
    PromoteResult,
    RegisterResult,
    StepResultError,
    TrainResult,
    ValidateResult,
)

SAMPLES = [
    ExtractResult(staged=["file:///s/events.parquet"], rows=400, labels=120, days=["2024-01-01"]),
    ValidateResult(
        reports=["file:///r/validation.json"], report_uri="file:///r/validation.json", warnings=[], rows=400
    ),
    ValidateResult(
        reports=["a.json", "b.json"],
        report_uri="b.json",
        warnings=["2024-01-02: plan values"],
        rows=800,
        report_html="b.html",
        report_url="http://mlflow/#/runs/1",
    ),
    PrepareResult(feature_uris=["file:///f/part-2024-01-01.parquet"], feature_service="churn_v1", materialized=37),
    TrainResult(
        run_id="r1",
        experiment_id="1",
        model_uri="models:/m-abc",
        train_uri="file:///t/train.parquet",
        holdout_uri="file:///t/holdout.parquet",
        data_hash="0123456789abcdef",
        rows={"labelled": 10, "joined": 10, "train": 8, "holdout": 2},
        reused=False,
        candidates=4,
    ),
    EvaluateResult(
        passed=False,
        reasons=["roc_auc below 0.7"],
        metrics={"roc_auc": 0.61},
        champion_metrics=None,
        champion_version=None,
        nan_predictions=0,
    ),
    RegisterResult(model="churn_model", version="3", created=True, run_id="r1", experiment_id="1"),
    PromoteResult(promoted=True, message="promoted v3", champion="3", gate_passed=True, previous="2", move="m1"),
]


@pytest.mark.parametrize("result", SAMPLES, ids=lambda r: type(r).__name__)
def test_round_trip_through_json(result):
    wire = json.loads(json.dumps(result.to_xcom()))
    back = type(result).from_xcom(wire)
    assert back == result
    assert type(result).from_xcom(result) is result


def test_xcom_keys_are_the_field_names():
    reg = RegisterResult(model="m", version="1", created=False, run_id="r")
    assert reg.to_xcom() == {"model": "m", "version": "1", "created": False, "run_id": "r", "experiment_id": None}


def test_missing_and_unknown_fields_are_named():
    with pytest.raises(StepResultError) as err:
        TrainResult.from_xcom({"run_id": "r", "runid": "r"})
    msg = str(err.value)
    assert "train step" in msg and "'model_uri'" in msg and "unknown ['runid']" in msg


def test_optional_fields_may_be_absent():
    out = EvaluateResult.from_xcom({"passed": True, "reasons": [], "metrics": {"roc_auc": 0.9}})
    assert (out.champion_version, out.champion_metrics, out.nan_predictions, out.reused) == (None, None, 0, False)


def test_not_a_dict_names_the_step():
    with pytest.raises(StepResultError, match="evaluate step's result must be an? EvaluateResult"):
        EvaluateResult.from_xcom(None)
    with pytest.raises(StepResultError, match="register step"):
        RegisterResult.from_xcom(TrainResult.from_xcom(SAMPLES[4].to_xcom()))
