import copy
from pathlib import Path

import pytest

from include.mlops.constants import SPEC_DIR
from include.mlops.spec import SpecError, load_spec, load_spec_file, parse_spec, read_yaml


def churn_raw() -> dict:
    return copy.deepcopy(read_yaml(SPEC_DIR / "churn.yaml"))


@pytest.mark.parametrize("name", ["churn", "housing"])
def test_shipped_specs_load(name):
    spec = load_spec(name)
    assert spec.name == name
    assert 12 <= len(spec.features) <= 20
    assert spec.numeric_features and spec.categorical_features
    assert spec.raw_columns[:2] == [spec.entity_key, spec.timestamp]


def test_defaults_live_in_the_models():
    raw = churn_raw()
    for key in ("validation", "training", "gate", "deployment", "monitoring", "features_store", "demo"):
        raw.pop(key)
    raw["model"] = {}
    raw["source"] = {}
    raw["label"] = {"name": "churned", "positive_class": 1}
    spec = parse_spec(raw)
    assert spec.landing_prefix == "raw/churn"
    assert spec.label_spec.feed_prefix == "raw/churn/labels"
    assert spec.label_spec.feed == "separate" and spec.source.format == "parquet"
    assert spec.primary_metric == "roc_auc"
    assert spec.gate.slice_max_regression == spec.gate.max_regression
    assert spec.monitoring.policy.max_bad_fraction == spec.validation.max_bad_fraction
    assert spec.monitoring.retraining.window_days == spec.training.window_days
    assert spec.entity.dtype == "int64"


def test_yes_no_stay_text(tmp_path: Path):
    text = (SPEC_DIR / "churn.yaml").read_text().replace("positive_class: 1", "positive_class: yes")
    p = tmp_path / "churn.yaml"
    p.write_text(text)
    spec = load_spec_file(p)
    assert spec.label_spec.positive_class == "yes"
    assert spec.feature("paperless_billing").values == ("yes", "no")


def test_multiclass_and_regression_defaults():
    raw = churn_raw()
    raw["label"] = {"name": "churned", "classes": ["a", "b", "c"]}
    raw["model"].pop("primary_metric")
    raw["gate"]["minimums"] = {"f1_macro": 0.3}
    spec = parse_spec(raw)
    assert spec.task_kind == "multiclass" and spec.primary_metric == "f1_macro"
    housing = load_spec("housing")
    assert housing.task_kind == "regression" and housing.primary_metric == "r2"


def test_unknown_spec_names_the_known_ones():
    with pytest.raises(SpecError, match="churn"):
        load_spec("nope")


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r.pop("label"), r"label: required key is missing"),
        (lambda r: r.update(task="ranking"), r"task: Input should be 'classification' or 'regression'"),
        (lambda r: r["features"]["tenure_months"].update(range=[5, 1]), r"features.tenure_months: range must be"),
        (lambda r: r["features"]["tenure_months"].update(type="bool"), r"features.tenure_months.type"),
        (lambda r: r["gate"].update(minimum={"roc_auc": 0.7}), r"gate.minimum: unknown key; did you mean 'minimums'"),
        (lambda r: r.update(trainig={}), r"trainig: unknown key; did you mean 'training'"),
        (lambda r: r["training"].update(window_days="many"), r"training.window_days: Input should be a valid integer"),
        (
            lambda r: r["gate"].update(slices=["tenure_months"]),
            r"gate.slices: 'tenure_months' is a numeric \(int\) feature",
        ),
        (lambda r: r["gate"].update(slices=["nope"]), r"gate.slices: 'nope' is not a feature"),
        (lambda r: r["model"].update(primary_metric="r2"), r"model.primary_metric: 'r2' does not fit a binary task"),
        (lambda r: r["gate"].update(minimums={"rmse": 1}), r"gate.minimums.rmse: not a metric of a binary task"),
        (lambda r: r["model"].update(family="ridge"), r"model.family: 'ridge' does not fit a classification"),
        (lambda r: r.update(name="../../etc/x"), r"name: '../../etc/x' is not a slug"),
        (lambda r: r["entity"].update(dtype="uuid"), r"entity.dtype: Input should be 'int64' or 'string'"),
        (lambda r: r["source"].update(format="xlsx"), r"source.format: Input should be 'parquet' or 'csv'"),
        (lambda r: r["label"].update(feed="later"), r"label.feed: Input should be 'separate' or 'inline'"),
        (lambda r: r["label"].update(classes=["a", "b", "c"]), r"label.positive_class: a multiclass label"),
        (lambda r: r["features"].update({"mean radius": {"type": "float"}}), r"source.rename maps"),
        (lambda r: r["training"].update(holdout_days=20), r"holdout_days \(20\) must be smaller"),
        (
            lambda r: r["deployment"].update(strategy="big_bang"),
            r"deployment.strategy: .*'big_bang' is not a strategy: use one of direct, canary",
        ),
        (lambda r: r["deployment"].update(canary_share=0.2), r"canary_share was replaced by deployment.canary.steps"),
        (
            lambda r: r["deployment"].update(canary={"steps": [0.5, 0.25]}),
            r"deployment.canary.steps: .*steps must grow",
        ),
        (
            lambda r: r["deployment"].update(ab_test={"metric": "squared_error"}),
            r"deployment.ab_test.metric: 'squared_error' does not fit a classification task; "
            r"choose one of \['accuracy', 'log_loss'\]",
        ),
        (
            lambda r: (
                r["label"].update(classes=["a", "b", "c"]),
                r["deployment"].update(ab_test={"metric": "log_loss"}),
            ),
            r"deployment.ab_test.metric: 'log_loss' does not fit a multiclass task",
        ),
    ],
)
def test_bad_specs_name_the_field_and_the_fix(mutate, message):
    raw = churn_raw()
    mutate(raw)
    with pytest.raises(SpecError, match=message):
        parse_spec(raw)


def test_regression_refuses_classes():
    raw = read_yaml(SPEC_DIR / "housing.yaml")
    raw["label"]["positive_class"] = 1
    with pytest.raises(SpecError, match="label.positive_class: a regression label has no classes"):
        parse_spec(raw)
