"""A model that is really slower: a fitted estimator that sleeps before every call.

Imported by the scoring service when it loads such a version (skops names this class among the
version's trusted types), so it lives in an importable module, not in a test file.
"""

from __future__ import annotations

import time
from typing import Any


class SlowModel:
    """Answers what `model` answers, `delay` seconds later per call (a batch pays once)."""

    def __init__(self, model: Any = None, delay: float = 0.5) -> None:
        self.model = model
        self.delay = delay
        if model is not None and hasattr(model, "classes_"):
            self.classes_ = model.classes_

    def predict_proba(self, X: Any) -> Any:
        time.sleep(self.delay)
        return self.model.predict_proba(X)

    def predict(self, X: Any) -> Any:
        time.sleep(self.delay)
        return self.model.predict(X)
