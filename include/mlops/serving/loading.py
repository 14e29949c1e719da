"""Loading one model version from the registry: download, refuse what is unsafe, check, warm.

Models are loaded through `include.mlops.model_io`: only the sklearn flavour in skops format with
the code's trusted types; anything else is refused unopened (`refused` in /ready says which
version and why). A version is served only once it is warmed and has passed its smoke test on
known inputs: the model manager (`models`) decides which versions to load and when.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from include.mlops.scores import scores_from_proba

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from include.mlops.serving.frames import FrameBuilder
    from include.mlops.serving.validation import RecordValidator
    from include.mlops.spec import DatasetSpec

log = logging.getLogger(__name__)


class SmokeTestFailed(Exception):
    """A freshly loaded model gave outputs of the wrong shape or range on known inputs."""


@dataclass
class LoadedModel:
    name: str
    version: str
    model: Any
    input_columns: list[str]
    classes: list[Any] | None
    positive_index: int | None
    validator: RecordValidator
    run_id: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    loaded_at: float = 0.0
    load_seconds: float = 0.0

    @property
    def is_classifier(self) -> bool:
        return self.classes is not None

    def score(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(prediction, score, class probabilities or None) for a model-feature frame.

        Prediction and score as `include.mlops.scores` defines them: the predicted class value
        and the positive class's probability (binary; `positive_index` resolved at load), the
        most probable class and its probability (multiclass), or the regression value."""
        import numpy as np

        X = X[self.input_columns] if list(X.columns) != self.input_columns else X
        if self.classes is None:
            pred = np.asarray(self.model.predict(X), dtype=np.float64)
            return pred, pred, None
        proba = np.asarray(self.model.predict_proba(X), dtype=np.float64)
        pred, score = scores_from_proba(proba, self.classes, self.positive_index)
        return pred, score, proba

    def describe(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "run_id": self.run_id,
            "loaded_at": self.loaded_at,
            "load_seconds": round(self.load_seconds, 3),
        }


def smoke_test(lm: LoadedModel, X: pd.DataFrame) -> None:
    """Known inputs must give one finite output per row; probabilities in [0, 1] summing to 1."""
    import numpy as np

    pred, score, proba = lm.score(X)
    if len(pred) != len(X) or len(score) != len(X):
        raise SmokeTestFailed(f"v{lm.version}: {len(pred)} predictions for {len(X)} rows")
    if not np.all(np.isfinite(score)):
        raise SmokeTestFailed(f"v{lm.version}: non-finite scores on known inputs")
    if proba is not None:
        if proba.shape != (len(X), len(lm.classes or [])):
            raise SmokeTestFailed(f"v{lm.version}: probabilities of shape {proba.shape}")
        if (proba < 0).any() or (proba > 1).any() or not np.allclose(proba.sum(axis=1), 1.0, atol=1e-6):
            raise SmokeTestFailed(f"v{lm.version}: class probabilities outside [0, 1] or not summing to 1")


def load_version(
    spec: DatasetSpec, builder: FrameBuilder, tracking_uri: str, version: str, read_version: Callable[[], Any]
) -> LoadedModel:
    """Read the version (`read_version`), download it, check the format and types and load
    (`model_io`), check the signature against the spec, warm up and smoke-test."""
    from mlflow.artifacts import download_artifacts
    from mlflow.models import Model

    from include.mlops import model_io
    from include.mlops.serving.validation import RecordValidator, signature_columns

    name = spec.model_name
    t0 = time.perf_counter()
    mv = read_version()
    with tempfile.TemporaryDirectory(prefix=f"mlops-serve-{version}-") as tmp:
        local = download_artifacts(
            artifact_uri=f"models:/{name}/{version}",
            dst_path=tmp,
            tracking_uri=tracking_uri,
            registry_uri=tracking_uri,
        )
        model = model_io.load_local(local, f"{name} v{version}")  # refused unopened unless skops + allowlist
        meta = Model.load(local)
        try:
            example = meta.load_input_example(local)
        except Exception:
            example = None
    sig = signature_columns(meta.signature)
    validator = RecordValidator(spec, sig)  # raises SchemaMismatch for an unservable model
    columns = [c for c, _ in sig] if sig else list(builder.columns)
    classes = None
    positive = None
    if hasattr(model, "predict_proba") and hasattr(model, "classes_") and spec.is_classification:
        from include.mlops.scores import check_classes, class_values
        from include.mlops.scores import positive_index as resolve_positive

        classes = class_values(model.classes_)
        check_classes(classes, spec)  # a model whose classes the spec does not name never serves
        positive = None if spec.is_multiclass else resolve_positive(classes, spec)
    lm = LoadedModel(
        name,
        str(version),
        model,
        columns,
        classes,
        positive,
        validator,
        run_id=mv.run_id or "",
        tags=dict(mv.tags or {}),
    )
    warm(lm, builder, example)
    lm.loaded_at = time.time()
    lm.load_seconds = time.perf_counter() - t0
    log.info("loaded %s v%s in %.2fs (warmed, smoke test passed)", name, version, lm.load_seconds)
    return lm


def warm(lm: LoadedModel, builder: FrameBuilder, example: Any) -> None:
    """Smoke-test on the model's input example (else probe rows) and on probe rows, then pay for
    the slow first calls of a fresh model."""
    import pandas as pd

    probe = builder.frame(builder.probe_rows(64))
    if isinstance(example, pd.DataFrame) and set(lm.input_columns) <= set(example.columns):
        known = example[lm.input_columns].reset_index(drop=True)
    else:
        known = probe
    smoke_test(lm, known)
    smoke_test(lm, probe)
    for n in (1, 8, 32):  # the first calls of a fresh model are slow: pay for them here
        lm.score(probe.head(n))
