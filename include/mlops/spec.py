"""The dataset spec: one YAML file that says what the data is and how to learn from it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SPEC_DIR = Path(__file__).resolve().parent.parent / "specs"
NUMERIC_TYPES = {"int", "float"}
FEATURE_TYPES = NUMERIC_TYPES | {"category"}


class SpecError(ValueError):
    """The dataset spec is malformed; the message names the offending key."""


@dataclass(frozen=True)
class Feature:
    name: str
    type: str  # int | float | category
    required: bool = True
    range: tuple[float, float] | None = None
    values: tuple[str, ...] | None = None

    @property
    def is_numeric(self) -> bool:
        return self.type in NUMERIC_TYPES


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    task: str
    entity_name: str
    entity_key: str
    timestamp: str
    label: str
    label_delay_days: int
    features: tuple[Feature, ...]
    raw: dict[str, Any] = field(repr=False, default_factory=dict)
    path: str = ""

    # -- convenience views ------------------------------------------------------------------
    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def numeric_features(self) -> list[str]:
        return [f.name for f in self.features if f.is_numeric]

    @property
    def categorical_features(self) -> list[str]:
        return [f.name for f in self.features if not f.is_numeric]

    @property
    def raw_columns(self) -> list[str]:
        return [self.entity_key, self.timestamp, *self.feature_names]

    @property
    def is_classification(self) -> bool:
        return self.task == "classification"

    @property
    def model_name(self) -> str:
        return f"{self.name}_model"

    @property
    def feature_view_name(self) -> str:
        return f"{self.name}_features_fv"

    @property
    def feature_service_name(self) -> str:
        return f"{self.name}_model_v1"

    def section(self, key: str) -> dict[str, Any]:
        return dict(self.raw.get(key) or {})

    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)


def _require(raw: dict[str, Any], key: str, where: str) -> Any:
    if key not in raw or raw[key] is None:
        raise SpecError(f"{where}: missing required key {key!r}")
    return raw[key]


def parse_spec(raw: dict[str, Any], path: str = "<dict>") -> DatasetSpec:
    """Check a spec dict and turn it into a DatasetSpec; errors name the key that is wrong."""
    name = _require(raw, "name", path)
    task = _require(raw, "task", path)
    if task not in {"classification", "regression"}:
        raise SpecError(f"{path}: task must be classification or regression, not {task!r}")
    entity = _require(raw, "entity", path)
    label = _require(raw, "label", path)
    feats_raw = _require(raw, "features", path)
    if not isinstance(feats_raw, dict) or not feats_raw:
        raise SpecError(f"{path}: features must be a non-empty mapping of name -> definition")
    features = []
    for fname, fdef in feats_raw.items():
        where = f"{path}: features.{fname}"
        ftype = _require(fdef, "type", where)
        if ftype not in FEATURE_TYPES:
            raise SpecError(f"{where}.type must be one of {sorted(FEATURE_TYPES)}, not {ftype!r}")
        rng = fdef.get("range")
        if rng is not None and (len(rng) != 2 or rng[0] > rng[1]):
            raise SpecError(f"{where}.range must be [low, high] with low <= high")
        values = fdef.get("values")
        if ftype == "category" and not values:
            raise SpecError(f"{where}.values is required for a category feature")
        features.append(
            Feature(
                name=fname,
                type=ftype,
                required=bool(fdef.get("required", True)),
                range=tuple(rng) if rng is not None else None,
                values=tuple(str(v) for v in values) if values else None,
            )
        )
    return DatasetSpec(
        name=name,
        task=task,
        entity_name=_require(entity, "name", f"{path}: entity"),
        entity_key=_require(entity, "key", f"{path}: entity"),
        timestamp=raw.get("timestamp", "event_timestamp"),
        label=_require(label, "name", f"{path}: label"),
        label_delay_days=int(label.get("delay_days", 0)),
        features=tuple(features),
        raw=raw,
        path=path,
    )


def load_spec(name_or_path: str) -> DatasetSpec:
    """Load a spec by name (a file in include/specs) or by path."""
    import yaml

    p = Path(name_or_path)
    if not p.suffix:
        p = SPEC_DIR / f"{name_or_path}.yaml"
    if not p.exists():
        known = sorted(x.stem for x in SPEC_DIR.glob("*.yaml"))
        raise SpecError(f"dataset spec {name_or_path!r} not found (known: {known})")
    with p.open() as fh:
        raw = yaml.safe_load(fh)
    return parse_spec(raw, str(p))
