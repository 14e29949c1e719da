"""The dataset spec: one YAML file that says what the data is and how to learn from it.

`DatasetSpec` assembles the typed sections of spec_sections.py (where each default is written
once), fills the defaults that follow from other sections, and offers the views the rest of the
code reads. Below it: finding, reading and parsing spec files. Every mistake is a `SpecError`
naming the field and what to change, raised before any work starts; `mlops spec check` runs this.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from include.mlops.constants import DEFAULT_PRIMARY_METRIC, SPEC_DIR, SPEC_NAME_PATTERN
from include.mlops.spec_sections import (
    DemoSpec,
    DeploymentSpec,
    EntitySpec,
    Feature,
    FeatureStoreSpec,
    GateSpec,
    LabelSpec,
    ModelSpec,
    MonitoringSpec,
    SourceSpec,
    TrainingSpec,
    ValidationSpec,
)

SLUG = re.compile(SPEC_NAME_PATTERN)
COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SPEC_SUFFIXES = (".yaml", ".yml")


class SpecError(ValueError):
    """The dataset spec is malformed; the message names the offending field and the fix."""


# -- the whole spec -------------------------------------------------------------------------------
class DatasetSpec(BaseModel):
    name: str
    description: str = ""
    task: Literal["classification", "regression"]
    source: SourceSpec = Field(default_factory=SourceSpec)
    entity: EntitySpec
    timestamp: str = "event_timestamp"
    label_spec: LabelSpec = Field(alias="label")
    feature_map: dict[str, Feature] = Field(alias="features", min_length=1)
    derived_features: dict[str, str] = Field(default_factory=dict)
    validation: ValidationSpec = Field(default_factory=ValidationSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    gate: GateSpec = Field(default_factory=GateSpec)
    deployment: DeploymentSpec = Field(default_factory=DeploymentSpec)
    monitoring: MonitoringSpec = Field(default_factory=MonitoringSpec)
    demo: DemoSpec | None = None
    features_store: FeatureStoreSpec = Field(default_factory=FeatureStoreSpec)
    path: str = Field("", exclude=True)

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _name_features(cls, raw: Any) -> Any:
        feats = raw.get("features") if isinstance(raw, dict) else None
        if isinstance(feats, dict):
            raw = {**raw, "features": {k: {**v, "name": k} if isinstance(v, dict) else v for k, v in feats.items()}}
        return raw

    @model_validator(mode="after")
    def _check_and_fill(self) -> DatasetSpec:
        from include.mlops.spec_rules import problems as cross_field_problems  # it imports this module

        problems = cross_field_problems(self)
        if problems:
            raise ValueError("\n".join(problems))
        # defaults that follow from other fields, filled once here
        self.source.landing_prefix = (self.source.landing_prefix or f"raw/{self.name}").strip("/")
        self.label_spec.feed_prefix = (self.label_spec.feed_prefix or f"{self.source.landing_prefix}/labels").strip("/")
        self.model.primary_metric = self.model.primary_metric or DEFAULT_PRIMARY_METRIC[self.task_kind]
        if self.gate.slice_max_regression is None:
            self.gate.slice_max_regression = self.gate.max_regression
        drift = self.monitoring.drift
        drift.prediction_method = drift.prediction_method or drift.num_method
        drift.prediction_threshold = drift.prediction_threshold or drift.num_threshold
        pol = self.monitoring.policy
        pol.min_labelled_rows = pol.min_labelled_rows or min(pol.min_rows, 200)
        if pol.max_bad_fraction is None:
            pol.max_bad_fraction = self.validation.max_bad_fraction
        if self.monitoring.label_lookback_days is None:
            self.monitoring.label_lookback_days = self.label_spec.delay_days
        if self.monitoring.retraining.window_days is None:
            self.monitoring.retraining.window_days = self.training.window_days
        if self.demo is not None and self.demo.history_days is None:
            self.demo.history_days = self.training.window_days + self.label_spec.delay_days
        return self

    # -- views the rest of the code reads ------------------------------------------------------
    @property
    def features(self) -> tuple[Feature, ...]:
        return tuple(self.feature_map.values())

    @property
    def entity_name(self) -> str:
        return self.entity.name

    @property
    def entity_key(self) -> str:
        return self.entity.key

    @property
    def entity_is_string(self) -> bool:
        return self.entity.dtype == "string"

    @property
    def label(self) -> str:
        """The label column's name."""
        return self.label_spec.name

    @property
    def label_delay_days(self) -> int:
        return self.label_spec.delay_days

    @property
    def labels_inline(self) -> bool:
        return self.label_spec.feed == "inline"

    @property
    def primary_metric(self) -> str:
        return str(self.model.primary_metric)

    @property
    def landing_prefix(self) -> str:
        return str(self.source.landing_prefix)

    @property
    def feature_names(self) -> list[str]:
        return list(self.feature_map)

    @property
    def numeric_features(self) -> list[str]:
        return [f.name for f in self.features if f.is_numeric]

    @property
    def categorical_features(self) -> list[str]:
        return [f.name for f in self.features if not f.is_numeric]

    @property
    def raw_columns(self) -> list[str]:
        """The columns of a landed events file (the label too when it comes inline)."""
        return [self.entity_key, self.timestamp, *self.feature_names, *([self.label] if self.labels_inline else [])]

    @property
    def is_classification(self) -> bool:
        return self.task == "classification"

    @property
    def is_multiclass(self) -> bool:
        return self.is_classification and len(self.label_spec.classes or ()) > 2

    @property
    def task_kind(self) -> str:
        """binary, multiclass or regression."""
        if not self.is_classification:
            return "regression"
        return "multiclass" if self.is_multiclass else "binary"

    @property
    def model_name(self) -> str:
        return f"{self.name}_model"

    @property
    def feature_view_name(self) -> str:
        return f"{self.name}_features_fv"

    @property
    def feature_service_name(self) -> str:
        return f"{self.name}_model_v1"

    def feature(self, name: str) -> Feature:
        return self.feature_map[name]

    def to_dict(self) -> dict[str, Any]:
        """The spec as a plain mapping (defaults filled in) that `parse_spec` reads back."""
        out = self.model_dump(by_alias=True, exclude={"path"}, mode="json")
        for feat in out["features"].values():
            feat.pop("name", None)
        return out


def _slug(text: str) -> str:
    s = re.sub(r"[^0-9a-zA-Z]+", "_", text).strip("_").lower()
    return s if s and not s[0].isdigit() else f"c_{s}"


# -- parsing and error messages -------------------------------------------------------------------
def _fmt_loc(loc: tuple[Any, ...]) -> str:
    names = {"label_spec": "label", "feature_map": "features"}
    return ".".join(names.get(str(p), str(p)) for p in loc if not str(p).startswith("function-after"))


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys the section at `loc` accepts, for an 'unknown key' message."""
    model: Any = DatasetSpec
    parts = list(loc[:-1])
    while parts:
        part = parts.pop(0)
        if model is DatasetSpec and part in ("features", "feature_map"):
            model = Feature
            parts = parts[1:]  # skip the feature's name
            continue
        field = next((f for n, f in model.model_fields.items() if part in (n, f.alias)), None)
        if field is None:
            break
        args = getattr(field.annotation, "__args__", (field.annotation,))
        model = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), model)
    hidden = {"path", "name"} if model is Feature else {"path"}
    return [f.alias or n for n, f in model.model_fields.items() if n not in hidden]


def _explain(exc: ValidationError, where: str) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        field = _fmt_loc(loc)
        kind = err["type"]
        if kind == "extra_forbidden":
            key = str(loc[-1])
            allowed = _allowed_keys(loc)
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            lines.append(f"{field}: unknown key; {hint}allowed here: {', '.join(sorted(allowed))}")
        elif kind == "missing":
            lines.append(f"{field}: required key is missing")
        elif kind == "value_error":
            msg = str(err.get("ctx", {}).get("error", err["msg"]))
            for part in msg.split("\n"):
                lines.append(part if field == "" else f"{field}: {part}")
        else:
            got = err.get("input")
            shown = "" if isinstance(got, dict) else f" (got {got!r})"
            lines.append(f"{field}: {err['msg']}{shown}")
    return f"{where}: the dataset spec is invalid:\n" + "\n".join(f"  - {line}" for line in lines)


def parse_spec(raw: Any, path: str = "<dict>") -> DatasetSpec:
    """Check a spec mapping and turn it into a DatasetSpec; errors name the field and the fix."""
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a dataset spec is a YAML mapping of sections, not {type(raw).__name__}")
    try:
        spec = DatasetSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(_explain(exc, path)) from None
    spec.path = path
    return spec


class _Yaml12Loader:
    """yaml.SafeLoader that reads only true/false as booleans (YAML 1.2): `positive_class: yes`
    stays the text "yes", as it is in a CSV of yes/no labels."""

    _cls: Any = None

    @classmethod
    def get(cls) -> Any:
        if cls._cls is None:
            import yaml

            class Loader(yaml.SafeLoader):
                pass

            Loader.yaml_implicit_resolvers = {
                k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
                for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
            }
            Loader.add_implicit_resolver(
                "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
            )
            cls._cls = Loader
        return cls._cls


def read_yaml(path: Path) -> Any:
    import yaml

    try:
        return yaml.load(path.read_text(), Loader=_Yaml12Loader.get())  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from None


def spec_dirs() -> list[Path]:
    """Where specs are looked up by name: MLOPS_SPEC_DIRS, then $MLOPS_HOME/specs, then the shipped ones."""
    from include.mlops.config import get_settings

    s = get_settings()
    return [*s.spec_dirs, s.home / "specs", SPEC_DIR]


def _where_specs_live() -> str:
    from include.mlops.config import get_settings

    dirs = ", ".join(str(d) for d in spec_dirs())
    return (
        f"specs are looked up by name in the spec directories ({dirs}; MLOPS_SPEC_DIRS adds more); "
        f"to add one, run `mlops ingest DATA_FILE --spec FILE` or copy FILE to "
        f"{get_settings().home / 'specs'}/<name>.yaml"
    )


def check_spec_name(name: object) -> str:
    """`name` if it names a spec (a slug), else a SpecError. The `dataset` param, MLOPS_DATASET and
    every step take a name, never a path: a worker reads spec files only from the spec directories."""
    if isinstance(name, str) and SLUG.fullmatch(name):
        return name
    what = "a file path" if isinstance(name, str) and is_spec_file_arg(name) else "not a spec name"
    raise SpecError(
        f"dataset {name!r} is {what}: a dataset is named by its spec's `name` (a lowercase letter, then "
        f"lowercase letters, digits or _; at most 63), e.g. 'churn'; {_where_specs_live()}"
    )


def find_spec(name: str) -> Path:
    """The file of the spec called `name` in the first spec directory that has one. A file there that
    is a link to somewhere outside that directory is refused, not followed."""
    check_spec_name(name)
    for d in spec_dirs():
        cand = d / f"{name}.yaml"
        if not (cand.is_symlink() or cand.exists()):
            continue
        real, root = cand.resolve(), d.resolve()
        if not real.is_relative_to(root):
            raise SpecError(
                f"spec {name!r}: {cand} links to {real}, outside its spec directory {d}; a spec directory holds "
                "the spec files themselves: replace the link with a copy of the file"
            )
        if not real.is_file():
            raise SpecError(f"spec {name!r}: {cand} is not a file")
        return real
    known = sorted({x.stem for d in spec_dirs() if d.is_dir() for x in d.glob("*.yaml")})
    raise SpecError(f"dataset spec {name!r} not found (installed specs: {known}); {_where_specs_live()}")


def load_spec(name: str) -> DatasetSpec:
    """The spec called `name`, from the spec directories (see `find_spec`); never a path."""
    p = find_spec(name)
    spec = parse_spec(read_yaml(p), str(p))
    if spec.name != name:
        raise SpecError(
            f"{p}: the file is named {name}.yaml but the spec's name is {spec.name!r}; specs are found by "
            f"name, so rename the file to {spec.name}.yaml (or change `name`)"
        )
    return spec


def load_spec_file(path: str | Path) -> DatasetSpec:
    """A spec file the user points at on their own command line (`mlops spec check FILE`, `mlops
    ingest --spec FILE`). Workers never take one: they load installed specs by name (`load_spec`)."""
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"{path}: no such spec file")
    return parse_spec(read_yaml(p), str(p))


def is_spec_file_arg(text: str) -> bool:
    """Whether a command-line SPEC argument names a file (a path or a .yaml name) rather than an installed spec."""
    return "/" in text or "\\" in text or text.endswith(SPEC_SUFFIXES)
