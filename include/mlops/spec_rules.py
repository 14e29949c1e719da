"""The dataset spec's cross-field rules: what pydantic's types cannot say, each problem as
'field: problem; fix'. `DatasetSpec` runs them (`problems`) once its sections have parsed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from include.mlops.constants import (
    AB_TEST_METRICS,
    BINARY_METRICS,
    CLASSIFIERS,
    MULTICLASS_METRICS,
    REGRESSION_METRICS,
    REGRESSORS,
)
from include.mlops.spec import COLUMN, SLUG, _slug

if TYPE_CHECKING:
    from include.mlops.spec import DatasetSpec


def metrics_for(kind: str) -> tuple[str, ...]:
    """The metrics a binary, multiclass or regression task can be judged by."""
    return {"binary": BINARY_METRICS, "multiclass": MULTICLASS_METRICS, "regression": REGRESSION_METRICS}[kind]


def problems(spec: DatasetSpec) -> list[str]:
    """Cross-field rules pydantic's types cannot say, each as 'field: problem; fix' (none: the spec holds)."""
    return [problem for check in _CHECKS for problem in check(spec)]


def _check_name(spec: DatasetSpec) -> list[str]:
    if SLUG.match(spec.name):
        return []
    return [f"name: {spec.name!r} is not a slug; use lowercase letters, digits and underscores, starting with a letter"]


def _check_prefixes(spec: DatasetSpec) -> list[str]:
    out: list[str] = []
    for field, prefix in (
        ("source.landing_prefix", spec.source.landing_prefix),
        ("label.feed_prefix", spec.label_spec.feed_prefix),
    ):
        if prefix is None:  # filled from the name (a slug) once the spec is parsed
            continue
        parts = str(prefix).split("/")
        if any(part in ("", ".", "..") or "\\" in part or "\x00" in part for part in parts):
            out.append(
                f"{field}: {prefix!r} must be a relative folder in the store (names separated by '/', "
                "no '.', '..' or empty parts); e.g. raw/my_dataset"
            )
    return out


def _check_feature_names(spec: DatasetSpec) -> list[str]:
    return [
        f"features.{fname}: a feature name must be letters, digits and underscores; rename the column "
        f"(source.rename maps a file's column to a new name, e.g. {{{fname!r}: {_slug(fname)!r}}})"
        for fname in spec.feature_map
        if not COLUMN.match(fname)
    ]


def _check_special_columns(spec: DatasetSpec) -> list[str]:
    special = {"entity.key": spec.entity.key, "timestamp": spec.timestamp, "label.name": spec.label_spec.name}
    out = [
        f"{where}: {col!r} is also listed under features; a column is a feature or the {where}"
        for where, col in special.items()
        if col in spec.feature_map
    ]
    if len(set(special.values())) < len(special):
        out.append(f"entity.key, timestamp and label.name must be three different columns, not {special}")
    return out


def _check_derived_features(spec: DatasetSpec) -> list[str]:
    from include.mlops.features.expressions import ExpressionError, parse_expression

    out: list[str] = []
    usable = set(spec.numeric_features)
    for name, expr in spec.derived_features.items():
        if not COLUMN.match(name) or name in spec.feature_map:
            out.append(f"derived_features.{name}: must be a new name of letters, digits and underscores")
        try:
            parse_expression(expr, usable)
        except ExpressionError as exc:
            out.append(f"derived_features.{name}: {exc}; use numeric features, numbers, arithmetic and comparisons")
        usable.add(name)
    return out


def _check_label_classes(spec: DatasetSpec) -> list[str]:
    lab = spec.label_spec
    if not spec.is_classification:
        return [
            f"label.{key}: a regression label has no classes; remove it"
            for key in ("positive_class", "classes")
            if getattr(lab, key) is not None
        ]
    out: list[str] = []
    if lab.classes is not None and len({str(c) for c in lab.classes}) != len(lab.classes or ()):
        out.append(f"label.classes: {lab.classes} lists a class twice")
    if lab.classes is not None and len(lab.classes) < 2:
        out.append("label.classes: a classification needs at least two classes")
    if spec.task_kind == "multiclass" and lab.positive_class is not None:
        out.append(
            f"label.positive_class: a multiclass label ({len(lab.classes or [])} classes) has no positive class; "
            "remove it"
        )
    if (
        lab.positive_class is not None
        and lab.classes is not None
        and str(lab.positive_class) not in {str(c) for c in lab.classes}
    ):
        out.append(f"label.positive_class: {lab.positive_class!r} is not one of label.classes {lab.classes}")
    return out


def _check_model(spec: DatasetSpec) -> list[str]:
    out: list[str] = []
    families = CLASSIFIERS if spec.is_classification else REGRESSORS
    if spec.model.family not in families:
        out.append(f"model.family: {spec.model.family!r} does not fit a {spec.task}; choose one of {sorted(families)}")
    kind = spec.task_kind
    allowed = metrics_for(kind)
    if spec.model.primary_metric is not None and spec.model.primary_metric not in allowed:
        out.append(
            f"model.primary_metric: {spec.model.primary_metric!r} does not fit a {kind} task; choose one of {list(allowed)}"
        )
    return out


def _check_gate(spec: DatasetSpec) -> list[str]:
    kind = spec.task_kind
    allowed = metrics_for(kind)
    out = [
        f"gate.minimums.{metric}: not a metric of a {kind} task; choose from {list(allowed)}"
        for metric in spec.gate.minimums
        if metric not in allowed
    ]
    for col in spec.gate.slices:
        if col not in spec.feature_map:
            out.append(f"gate.slices: {col!r} is not a feature; slice by one of {spec.categorical_features}")
        elif spec.feature_map[col].type != "category":
            out.append(
                f"gate.slices: {col!r} is a numeric ({spec.feature_map[col].type}) feature; slices must be category features "
                f"({spec.categorical_features})"
            )
    return out


def _check_training_rows(spec: DatasetSpec) -> list[str]:
    if spec.training.min_rows >= spec.model.search.cv_folds * 2:
        return []
    return [
        f"training.min_rows ({spec.training.min_rows}) must be at least twice model.search.cv_folds "
        f"({spec.model.search.cv_folds})"
    ]


def _check_ab_test(spec: DatasetSpec) -> list[str]:
    metric = spec.deployment.ab_test.metric
    if metric is None:  # the task's default, which always fits
        return []
    fits = AB_TEST_METRICS[spec.task]
    if metric not in fits:
        return [
            f"deployment.ab_test.metric: {metric!r} does not fit a {spec.task} task; choose one of {list(fits)} "
            f"(or leave it unset for {fits[0]})"
        ]
    if metric == "log_loss" and spec.is_multiclass:
        return [
            "deployment.ab_test.metric: 'log_loss' does not fit a multiclass task (the prediction log keeps only the "
            "predicted class's probability); choose 'accuracy' (or leave it unset)"
        ]
    return []


_CHECKS = (
    _check_name,
    _check_prefixes,
    _check_feature_names,
    _check_special_columns,
    _check_derived_features,
    _check_label_classes,
    _check_model,
    _check_gate,
    _check_training_rows,
    _check_ab_test,
)
