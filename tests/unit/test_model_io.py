"""Model artifacts are data: the allowlist matches what training builds, and every other format or
type is refused before anything in the artifact is deserialized (real MLflow save, real skops)."""

from __future__ import annotations

import os
import re
from datetime import date
from pathlib import Path

import pytest

from include.mlops import model_io
from include.mlops.constants import CLASSIFIERS, REGRESSORS
from include.mlops.spec import load_spec


class Explodes:
    """Unpickling this runs a shell command that writes the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"echo pwned > {self.marker}",))

    def predict(self, X):  # so MLflow adds a pyfunc flavour, as for a real model
        return X


class NotAllowed:
    """A harmless class, but not one the platform's pipelines contain."""

    def __init__(self) -> None:
        self.classes_ = [0, 1]

    def predict(self, X):
        return X


NOT_ALLOWED = f"{NotAllowed.__module__}.NotAllowed"


def save_sklearn(model, path: str, **kwargs) -> None:
    """mlflow.sklearn.save_model with the requirements given (inferring them takes ~15 s)."""
    import mlflow.sklearn

    mlflow.sklearn.save_model(model, path, pip_requirements=["scikit-learn"], **kwargs)


def _fitted(spec_name: str, family: str, labels=None):
    from include.mlops.data.generator import generate_day
    from include.mlops.features.build import build_features, model_features
    from include.mlops.training.fit import build_pipeline

    spec = load_spec(spec_name)
    spec = spec.model_copy(update={"model": spec.model.model_copy(update={"family": family, "params": {}})})
    events, truth = generate_day(spec, date(2026, 10, 1), rows=200)
    X = build_features(events, spec)[model_features(spec)]
    y = truth[spec.label] if labels is None else labels(truth[spec.label])
    small = {"n_estimators": 5} if family == "random_forest" else {"max_iter": 10}
    return build_pipeline(spec, small if family != "ridge" else {}).fit(X, y)


@pytest.mark.parametrize(
    ("spec_name", "family", "labels"),
    [
        *[("churn", f, None) for f in CLASSIFIERS],
        ("churn", "hist_gradient_boosting", lambda y: y.map({0: "no", 1: "yes"}).where(y.index % 3 > 0, "maybe")),
        *[("housing", f, None) for f in REGRESSORS],
    ],
)
def test_the_allowlist_covers_every_family_training_builds(spec_name, family, labels):
    """Derived again from build_pipeline: a scikit-learn upgrade or a new family that needs a new
    type fails here (with the type named), not in the scoring service."""
    found = model_io.check_writable(_fitted(spec_name, family, labels))
    assert set(found) <= set(model_io.TRUSTED_TYPES)


def test_a_pipeline_with_an_unlisted_type_fails_at_logging():
    with pytest.raises(model_io.UnsafeModelError, match=re.escape(NOT_ALLOWED)):
        model_io.check_writable(NotAllowed())


def hostile_cloudpickle_model(path: Path, marker: Path) -> None:
    """An MLflow sklearn model in cloudpickle format whose pickle runs a shell command on load.
    (Saved harmless, then its pickle replaced: MLflow copies the object while saving, which
    would already run the command.)"""
    import cloudpickle
    from sklearn.dummy import DummyClassifier

    save_sklearn(DummyClassifier().fit([[0], [1]], [0, 1]), str(path), serialization_format="cloudpickle")
    (path / "model.pkl").write_bytes(cloudpickle.dumps(Explodes(marker)))


def test_a_cloudpickle_model_is_refused_unopened(tmp_path):
    import mlflow.sklearn

    marker = tmp_path / "marker"
    path = tmp_path / "model"
    hostile_cloudpickle_model(path, marker)
    with pytest.raises(model_io.UnsafeModelError) as err:
        model_io.load_local(path, "churn_model v9")
    msg = str(err.value)
    assert "churn_model v9" in msg and "'cloudpickle'" in msg and "skops" in msg
    assert not marker.exists()
    mlflow.sklearn.load_model(str(path))  # the threat is real: MLflow's own loader runs it
    assert marker.read_text().strip() == "pwned"


def test_a_pyfunc_python_model_is_refused(tmp_path):
    import mlflow.pyfunc

    class Anything(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input):
            return model_input

    path = tmp_path / "model"
    mlflow.pyfunc.save_model(str(path), python_model=Anything(), pip_requirements=["mlflow"])
    with pytest.raises(model_io.UnsafeModelError, match=r"no sklearn flavour \(flavors: python_function"):
        model_io.load_local(path, "churn_model v3")


def test_a_skops_model_with_an_unlisted_type_is_refused_even_if_the_artifact_trusts_it(tmp_path):
    """The artifact's own skops_trusted_types names the class: that list is never read."""
    import skops.io

    obj = NotAllowed()
    path = tmp_path / "model"
    save_sklearn(obj, str(path), skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(obj)))
    assert "NotAllowed" in (path / "MLmodel").read_text()
    with pytest.raises(model_io.UnsafeModelError, match=re.escape(f"outside the platform's allowlist: {NOT_ALLOWED}")):
        model_io.load_local(path, "churn_model v4")


def test_the_operator_can_allow_their_own_class(tmp_path, monkeypatch):
    import skops.io

    obj = NotAllowed()
    path = tmp_path / "model"
    save_sklearn(obj, str(path), skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(obj)))
    monkeypatch.setenv(model_io.EXTRA_TYPES_ENV, NOT_ALLOWED)
    assert isinstance(model_io.load_local(path, "churn_model v4"), NotAllowed)


def test_a_platform_model_loads_and_scores(tmp_path):
    import numpy as np

    model = _fitted("churn", "hist_gradient_boosting")
    path = tmp_path / "model"
    save_sklearn(model, str(path), skops_trusted_types=model_io.trusted_types())
    loaded = model_io.load_local(path, "churn_model v1")
    from include.mlops.data.generator import generate_day
    from include.mlops.features.build import build_features, model_features

    spec = load_spec("churn")
    X = build_features(generate_day(spec, date(2026, 10, 2), rows=20)[0], spec)[model_features(spec)]
    np.testing.assert_allclose(loaded.predict_proba(X), model.predict_proba(X))


@pytest.mark.parametrize(
    ("edit", "found"),
    [
        (lambda t: t.replace("serialization_format: skops", "serialization_format: pickle"), "serialized as 'pickle'"),
        (
            lambda t: t.replace("pickled_model: model.skops", "pickled_model: ../../elsewhere.skops"),
            "not a file inside",
        ),
        (lambda t: t.replace("loader_module: mlflow.sklearn", "loader_module: evil.loader"), "'evil.loader'"),
        (lambda t: t.replace("code: null", "code: code"), "ships code"),
    ],
)
def test_metadata_that_is_not_the_platform_format_is_refused(tmp_path, edit, found):
    from sklearn.linear_model import LogisticRegression

    path = tmp_path / "model"
    save_sklearn(LogisticRegression().fit([[0.0], [1.0]], [0, 1]), str(path))
    mlmodel = path / "MLmodel"
    edited = edit(mlmodel.read_text())
    assert edited != mlmodel.read_text()
    mlmodel.write_text(edited)
    with pytest.raises(model_io.UnsafeModelError, match=re.escape(found)):
        model_io.load_local(path, "m v1")


def test_a_damaged_skops_file_is_refused_not_crashed_on(tmp_path):
    from sklearn.linear_model import LogisticRegression

    path = tmp_path / "model"
    save_sklearn(LogisticRegression().fit([[0.0], [1.0]], [0, 1]), str(path))
    (path / "model.skops").write_bytes(b"not a zip archive")
    with pytest.raises(model_io.UnsafeModelError, match="not a readable skops archive"):
        model_io.load_local(path, "m v1")
