"""What a classifier's output means: the one place that turns class probabilities into scores.

A model's `predict_proba` gives one column per class, in the order of its `classes_`. Which of
them is the score, and which class a row is predicted to be, is decided here and nowhere else:
training's search, evaluation and the gate, the plots, batch scoring, the scoring service and
monitoring all call these functions.

- Binary: the score is the probability of `label.positive_class`, resolved against the model's
  classes (1 or True by default when the classes are 0/1 or False/True). The prediction is the
  positive class when the score reaches `DECISION_THRESHOLD`, else the other class: a class
  value ("yes", True, 1), never a 0/1 stand-in.
- Multiclass (`label.classes` lists 3 or more): the prediction is the most probable class and
  the score is that class's probability (the model's confidence).

Class values are matched as they are, and as text when their types differ: a spec's
`positive_class: 1` resolves against labels "0"/"1" read from a CSV.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from include.mlops.spec import DatasetSpec

DECISION_THRESHOLD = 0.5  # a binary row is predicted positive when its score is at least this


class LabelError(ValueError):
    """The labels and the spec's label section disagree; the message names the field and the fix."""


# -- class values -------------------------------------------------------------------------------------
def plain(value: Any) -> Any:
    """A numpy scalar as the Python value it holds (np.int64(1) -> 1, np.str_("a") -> "a")."""
    return value.item() if hasattr(value, "item") and not isinstance(value, str) else value


def class_values(classes: Any) -> list[Any]:
    """A model's `classes_` (or any sequence of labels) as plain Python values."""
    return [plain(c) for c in classes]


def _kind(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int | float):
        return "number"
    return type(v).__name__


def label_text(v: Any) -> str:
    """A class value as text: booleans as true/false, 1.0 as "1", anything else as str()."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v).strip().lower() if isinstance(v, str) and v.strip().lower() in ("true", "false") else str(v)


def same_class(a: Any, b: Any) -> bool:
    """Whether two label values name the same class: equal, or equal as text when types differ."""
    a, b = plain(a), plain(b)
    if _kind(a) == _kind(b):
        return bool(a == b)
    return label_text(a) == label_text(b)


def find_class(value: Any, classes: list[Any]) -> int | None:
    """The index of `value` among `classes` (see `same_class`), or None."""
    exact = [i for i, c in enumerate(classes) if _kind(plain(c)) == _kind(plain(value)) and plain(c) == plain(value)]
    if exact:
        return exact[0]
    loose = [i for i, c in enumerate(classes) if same_class(c, value)]
    return loose[0] if len(loose) == 1 else None


# -- the positive class -------------------------------------------------------------------------------
def positive_index(classes: Any, spec: DatasetSpec) -> int:
    """The column of `predict_proba` that holds the positive class's probability (binary only)."""
    values = class_values(classes)
    wanted = spec.label_spec.positive_class
    if len(values) != 2:
        raise LabelError(
            f"label {spec.label!r}: a positive class needs exactly two classes, the model has {len(values)} "
            f"({values}); a label with more classes is multiclass: list them under label.classes"
        )
    if wanted is None:
        for default, other in ((1, 0), (True, False)):
            idx, rest = find_class(default, values), find_class(other, values)
            if idx is not None and rest is not None and idx != rest:
                return idx
        raise LabelError(
            f"label.positive_class is not set and the classes of {spec.label!r} are {values}, not 0/1 or "
            f"false/true: set label.positive_class in the spec to the class whose probability is the score "
            f"(one of {values})"
        )
    idx = find_class(wanted, values)
    if idx is None:
        raise LabelError(
            f"label.positive_class {wanted!r} matches none of the classes seen in {spec.label!r}: {values}; "
            f"set label.positive_class to one of them"
        )
    return idx


def positive_class(classes: Any, spec: DatasetSpec) -> Any:
    """The positive class as the model's own class value (e.g. "1" when the spec says 1)."""
    return class_values(classes)[positive_index(classes, spec)]


def positive_scores(proba: Any, classes: Any, spec: DatasetSpec) -> np.ndarray:
    """The positive class's probability for each row of a binary model's `predict_proba`."""
    import numpy as np

    return np.asarray(proba, dtype=np.float64)[:, positive_index(classes, spec)]


def is_positive(y: Any, classes: Any, spec: DatasetSpec) -> np.ndarray:
    """1 where a label value is the positive class, else 0 (labels of a binary task)."""
    import numpy as np
    import pandas as pd

    pos = positive_class(classes, spec)
    arr = np.asarray(y)
    if arr.dtype.kind in "biuf" and _kind(pos) == ("bool" if arr.dtype.kind == "b" else "number"):  # at C speed
        return (arr == pos).astype(np.int64)
    values = pd.Series(arr.astype(object))
    hits = [v for v in class_values(values.dropna().unique()) if same_class(v, pos)]
    return values.isin(hits).to_numpy().astype(np.int64)


# -- probabilities -> (prediction, score) -------------------------------------------------------------
def scores_from_proba(proba: Any, classes: list[Any], pos: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(predicted class, score) per row; `pos` is `positive_index(...)` for binary, None for multiclass.

    Callers resolve `pos` once (per model) and call this per batch: the service does that."""
    import numpy as np

    proba = np.asarray(proba, dtype=np.float64)
    values = np.asarray(class_values(classes), dtype=object)
    if len(proba) == 0:
        return values[:0], np.empty(0, dtype=np.float64)
    if pos is not None:
        score = proba[:, pos]
        other = 1 - pos
        pred = np.where(score >= DECISION_THRESHOLD, values[pos], values[other])
    else:
        best = np.argmax(np.nan_to_num(proba, nan=-1.0), axis=1)
        score = proba[np.arange(len(proba)), best]
        pred = values[best]
    return _typed(pred, values), score


def _typed(pred: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Predictions with the classes' own dtype when they share one (int64, bool), else objects."""
    import numpy as np

    kinds = {_kind(v) for v in values.tolist()}
    if kinds == {"bool"}:
        return pred.astype(bool)
    if kinds == {"number"} and all(isinstance(v, int) for v in values.tolist()):
        return pred.astype(np.int64)
    return pred


def class_scores(proba: Any, classes: Any, spec: DatasetSpec) -> tuple[np.ndarray, np.ndarray]:
    """(predicted class, score) per row of `predict_proba`: see the module docstring."""
    values = class_values(classes)
    check_classes(values, spec)
    return scores_from_proba(proba, values, None if spec.is_multiclass else positive_index(values, spec))


@dataclass
class Scored:
    """A model's answer for some rows: what every consumer of predictions reads."""

    prediction: np.ndarray  # class values, or the regression values
    score: np.ndarray  # positive-class (binary) or predicted-class (multiclass) probability, or the value
    proba: np.ndarray | None = None  # (rows, classes) for a classifier
    classes: list[Any] | None = None  # the column order of `proba`

    def __len__(self) -> int:
        return len(self.score)

    def take(self, idx: Any) -> Scored:
        """The rows at `idx` (positions)."""
        return Scored(
            self.prediction[idx], self.score[idx], None if self.proba is None else self.proba[idx], self.classes
        )


def score_model(model: Any, X: pd.DataFrame, spec: DatasetSpec) -> Scored:
    """Score rows with a fitted Pipeline (or any estimator with classes_/predict_proba)."""
    import numpy as np

    if not spec.is_classification:
        value = np.asarray(model.predict(X), dtype=np.float64) if len(X) else np.empty(0)
        return Scored(value, value)
    classes = class_values(model.classes_)
    check_classes(classes, spec)
    if len(X):
        proba = np.asarray(model.predict_proba(X), dtype=np.float64)
    else:
        proba = np.empty((0, len(classes)))
    pred, score = scores_from_proba(proba, classes, None if spec.is_multiclass else positive_index(classes, spec))
    return Scored(pred, score, proba, classes)


# -- training labels ----------------------------------------------------------------------------------
def check_classes(seen: Any, spec: DatasetSpec) -> list[Any]:
    """The classes seen in training labels (or a model's classes_) against the spec's label section.

    More than two without `label.classes` is refused (multiclass is opted into by listing the
    classes), as is a class the listed ones do not name."""
    import math

    values = [v for v in class_values(seen) if not (isinstance(v, float) and math.isnan(v))]
    listed = spec.label_spec.classes
    if listed is None:
        if len(values) > 2:
            shown = values if len(values) <= 20 else [*values[:20], "..."]
            raise LabelError(
                f"label {spec.label!r} has {len(values)} classes ({shown}) but the spec lists none: "
                f"a label with more than two classes is multiclass; list them under label.classes "
                f"(and remove label.positive_class)"
            )
    else:
        unknown = [v for v in values if find_class(v, list(listed)) is None]
        if unknown:
            raise LabelError(
                f"label {spec.label!r} has values {unknown[:20]} that label.classes {list(listed)} does not list; "
                f"add them to label.classes or fix the labels"
            )
    if not spec.is_multiclass and len(values) == 2:
        positive_index(values, spec)  # a positive class that names neither class fails here, clearly
    return values


def training_classes(y: Any, spec: DatasetSpec) -> list[Any]:
    """The classes of a training set's labels, checked against the spec; at least two are needed."""
    import pandas as pd

    seen = sorted(pd.unique(pd.Series(y).dropna()).tolist(), key=lambda v: (_kind(v), v))
    values = check_classes(seen, spec)
    if len(values) < 2:
        raise LabelError(
            f"label {spec.label!r} has only {values} in the training data: a classifier needs at least two "
            f"classes; widen training.window_days or check the label feed"
        )
    return values
