import pytest

from include.mlops.spec import SpecError, load_spec, parse_spec


@pytest.mark.parametrize("name", ["churn", "housing"])
def test_shipped_specs_load(name):
    spec = load_spec(name)
    assert spec.name == name
    assert 12 <= len(spec.features) <= 20
    assert spec.numeric_features and spec.categorical_features
    assert spec.raw_columns[:2] == [spec.entity_key, spec.timestamp]


def test_unknown_spec_names_the_known_ones():
    with pytest.raises(SpecError, match="churn"):
        load_spec("nope")


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r.pop("label"), "missing required key 'label'"),
        (lambda r: r.update(task="ranking"), "task must be classification or regression"),
        (lambda r: r["features"]["plan"].pop("values"), "features.plan.values is required"),
        (lambda r: r["features"]["tenure_months"].update(range=[5, 1]), "features.tenure_months.range"),
        (lambda r: r["features"]["tenure_months"].update(type="bool"), "features.tenure_months.type"),
    ],
)
def test_bad_specs_name_the_key(mutate, message):
    import copy

    raw = copy.deepcopy(load_spec("churn").raw)
    mutate(raw)
    with pytest.raises(SpecError, match=message):
        parse_spec(raw)
