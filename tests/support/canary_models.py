"""Model versions for canary, shadow and A/B tests, registered for real in MLflow.

| kind | what it is | how a test tells it apart |
|---|---|---|
| `good` | a new version of the champion's own model | answers as the champion does |
| `faulty` | the champion's model, refusing rows whose `fault_point` feature holds the fault value | those rows fail (500), others answer |
| `slow` | the champion's model, `delay` seconds later per call (`tests.support.slow_model`) | latency ratio |
| `disagreeing` | the champion's model with its class probabilities reversed | the opposite class, every row |

The wrappers are our own classes, outside the platform's trusted types: a service that must
load them runs with `MLOPS_TRUSTED_TYPES_EXTRA=TRUSTED_EXTRA` (the operator's extension of the
allowlist, `include.mlops.model_io`). They live in this importable module so the service
process can import them when it loads such a version.

The faulty model passes the service's load-time smoke test (its probe rows never hold the fault
value: range ends, zeros, uniform draws) and fails only on the rows live traffic sends it
(`faulty_record`), which the champion scores like any other.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

KINDS = ("good", "faulty", "slow", "disagreeing")
TRUSTED_EXTRA = (
    "tests.support.canary_models.FailsOn,tests.support.canary_models.Flipped,tests.support.slow_model.SlowModel"
)


class FaultyRows(ValueError):
    """What the faulty model raises on the rows it cannot score."""


class FailsOn:
    """Answers what `model` answers, but raises on any batch holding `value` in `column`."""

    def __init__(self, model: Any = None, column: str = "", value: float = 0.0) -> None:
        self.model, self.column, self.value = model, column, value
        if model is not None and hasattr(model, "classes_"):
            self.classes_ = model.classes_

    def _check(self, X: Any) -> None:
        if self.column in X.columns and (X[self.column] == self.value).any():
            raise FaultyRows(f"{self.column} = {self.value}: this version cannot score it")

    def predict_proba(self, X: Any) -> Any:
        self._check(X)
        return self.model.predict_proba(X)

    def predict(self, X: Any) -> Any:
        self._check(X)
        return self.model.predict(X)


class Flipped:
    """The champion's model with its class probabilities reversed: the opposite class (binary)."""

    def __init__(self, model: Any = None) -> None:
        self.model = model
        if model is not None and hasattr(model, "classes_"):
            self.classes_ = model.classes_

    def predict_proba(self, X: Any) -> Any:
        return self.model.predict_proba(X)[:, ::-1]

    def predict(self, X: Any) -> Any:
        import numpy as np

        return np.asarray(self.classes_)[self.predict_proba(X).argmax(axis=1)]


def fault_point(spec: Any) -> tuple[str, float]:
    """(feature, value) the faulty model refuses: an odd value inside a float feature's range,
    which validation accepts and no probe row or sampled row holds."""
    for f in spec.features:
        if f.type == "float" and f.range:
            lo, hi = f.range
            return f.name, round(lo + (hi - lo) * 0.4321, 3) + 0.000123
    raise ValueError(f"spec {spec.name} has no float feature with a range to plant the fault in")


def faulty_record(record: dict[str, Any], spec: Any) -> dict[str, Any]:
    """`record` with the fault value planted: the faulty model fails on it, the champion does not."""
    column, value = fault_point(spec)
    return {**record, column: value}


def _ready(client: Any, name: str, version: str, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while client.get_model_version(name, version).status != "READY":
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} v{version} not READY within {timeout}s")
        time.sleep(0.2)
    return str(version)


def _log_wrapper(client: Any, name: str, base: str, wrapper: Any, kind: str) -> str:
    """Log `wrapper` as a new version of `name` with the base version's signature and run's experiment."""
    import mlflow
    import skops.io
    from mlflow.models import get_model_info

    from include.mlops.model_io import FORMAT

    info = get_model_info(f"models:/{name}/{base}")
    src = client.get_model_version(name, base)
    experiment = client.get_run(src.run_id).info.experiment_id
    with mlflow.start_run(experiment_id=experiment, run_name=f"{kind}-model") as run:
        logged = mlflow.sklearn.log_model(
            wrapper,
            name="model",
            signature=info.signature,
            pip_requirements=["scikit-learn"],
            pyfunc_predict_fn="predict_proba" if hasattr(wrapper, "classes_") else "predict",
            serialization_format=FORMAT,
            skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(wrapper)),
        )
    mv = client.create_model_version(
        name, logged.model_uri, run_id=run.info.run_id, tags={"gate": "passed", "test.kind": kind}
    )
    return _ready(client, name, mv.version)


@contextlib.contextmanager
def _client_uris(client: Any) -> Iterator[None]:
    """MLflow's process-wide URIs pointed at `client`'s store while a version is logged, then put back."""
    import mlflow

    saved = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(client.tracking_uri)
    mlflow.set_registry_uri(client._registry_uri or client.tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved[0])
        mlflow.set_registry_uri(saved[1])


def register(client: Any, spec: Any, kind: str, *, base: str | None = None, delay: float = 0.2) -> str:
    """A new version of the spec's model, of `kind` (KINDS), built from version `base` (default:
    the champion), in `client`'s registry; returns its version. `delay`: seconds per call of the
    slow model."""
    with _client_uris(client):
        return _register(client, spec, kind, base, delay)


def _register(client: Any, spec: Any, kind: str, base: str | None, delay: float) -> str:
    import mlflow

    from include.mlops.constants import CHAMPION
    from include.mlops.registry import alias_version

    if kind not in KINDS:
        raise ValueError(f"kind {kind!r}: use one of {', '.join(KINDS)}")
    name = spec.model_name
    base = base or alias_version(client, name, CHAMPION)
    if base is None:
        raise AssertionError(f"{name} has no champion to build a {kind} version from")
    if kind == "good":
        src = client.get_model_version(name, base)
        mv = client.create_model_version(
            name, src.source, run_id=src.run_id, tags={"gate": "passed", "test.kind": kind}
        )
        return _ready(client, name, mv.version)
    model = mlflow.sklearn.load_model(f"models:/{name}/{base}")
    if kind == "faulty":
        column, value = fault_point(spec)
        wrapper: Any = FailsOn(model, column, value)
    elif kind == "slow":
        from tests.support.slow_model import SlowModel

        wrapper = SlowModel(model, delay=delay)
    else:
        if not spec.is_classification:
            raise ValueError("a disagreeing version reverses class probabilities: a classification spec only")
        wrapper = Flipped(model)
    return _log_wrapper(client, name, base, wrapper, kind)
