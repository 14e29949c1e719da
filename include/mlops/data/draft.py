"""`mlops spec init`: a first dataset spec drafted from a sample of the user's table.

Reads the sample's columns and proposes what a person would write by hand: the key, the event
time and the label (by name and shape), each feature's type, range and category set, and
training, gate and monitoring settings scaled to the sample's size. The draft is a starting
point to review; `parse_spec` checks it like any other spec.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.mlops.spec import COLUMN, _slug

if TYPE_CHECKING:
    import pandas as pd

KEY_NAME = re.compile(r"(^|_)(id|key|uuid)$|^id_", re.IGNORECASE)
KEY_CAMEL = re.compile(r"[a-z](Id|Key)$")  # customerId
TIME_NAME = re.compile(r"time|date|^ts$|_ts$|_at$|timestamp", re.IGNORECASE)
LABEL_NAMES = ("label", "target", "y", "class", "outcome", "churned", "churn", "is_fraud", "fraud", "default")
POSITIVE_WORDS = ("yes", "true", "1", "positive", "pos", "y", "t")
MAX_CATEGORIES = 50


class DraftError(ValueError):
    """The sample does not say enough to draft a spec; the message says which option to pass."""


@dataclass
class Draft:
    spec: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    rows: int = 0
    days: int = 0


def read_table(path: Path, delimiter: str = ",") -> pd.DataFrame:
    """A CSV or parquet file as a frame; a clear error for anything else."""
    import pandas as pd

    name = path.name.lower()
    if not path.exists():
        raise DraftError(f"{path}: no such file")
    try:
        if name.endswith(".parquet"):
            return pd.read_parquet(path)
        if name.endswith((".csv", ".csv.gz", ".txt")):
            return pd.read_csv(path, sep=delimiter)
    except Exception as exc:  # the reader's own words, after ours
        head = path.read_bytes()[:4096]
        if name.endswith(".parquet") and not head.startswith(b"PAR1") and b"," in head and b"\n" in head:
            raise DraftError(
                f"{path}: it is text (a CSV?) under a .parquet name: write it as parquet, or name it .csv"
            ) from None
        if not name.endswith(".parquet") and head.startswith(b"PAR1"):
            raise DraftError(f"{path}: it is a parquet file under a CSV name: name it .parquet") from None
        raise DraftError(f"{path}: could not be read as {'parquet' if 'parquet' in name else 'CSV'} ({exc})") from None
    raise DraftError(f"{path}: use a .csv, .csv.gz or .parquet file")


def _pick(columns: list[str], given: str | None, what: str, option: str, candidates: list[str]) -> str:
    if given:
        if given not in columns:
            raise DraftError(f"{option} {given!r} is not a column of the file (columns: {columns})")
        return given
    if len(candidates) == 1:
        return candidates[0]
    found = f"candidates: {candidates}" if candidates else "none found"
    raise DraftError(f"cannot tell which column is the {what} ({found}); pass {option} COLUMN (columns: {columns})")


def _time_candidates(df: pd.DataFrame) -> list[str]:
    import pandas as pd

    out = []
    for col in df.columns:
        s = df[col]
        if pd.api.types.is_datetime64_any_dtype(s):
            out.append(col)
        elif _epoch_seconds(s) and TIME_NAME.search(_slug(str(col))):
            out.append(col)
        elif s.dtype == object and TIME_NAME.search(_slug(str(col))):
            parsed = pd.to_datetime(s.head(200), errors="coerce", utc=True)
            if parsed.notna().mean() > 0.95:
                out.append(col)
    return out


def _epoch_seconds(s: pd.Series) -> bool:
    """Numbers that read as epoch seconds between 1973 and 2286 (what the pipeline reads numeric times as)."""
    import pandas as pd

    if not pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
        return False
    values = s.dropna()
    return not values.empty and bool(((values >= 1e8) & (values < 1e10)).all())


def to_utc(s: pd.Series) -> pd.Series:
    """A time column as UTC times: ISO 8601 text (no offset means UTC) or epoch seconds; NaT where neither."""
    import pandas as pd

    if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
        return pd.to_datetime(s, unit="s", utc=True, errors="coerce")
    if pd.api.types.is_datetime64_any_dtype(s):
        return pd.to_datetime(s, utc=True)
    return pd.to_datetime(s, utc=True, errors="coerce", format="ISO8601")


def _native(v: Any) -> Any:
    """numpy scalars as plain Python values (for YAML)."""
    return v.item() if hasattr(v, "item") else v


def _classes(y: pd.Series) -> list[Any]:
    values = [_native(v) for v in y.dropna().unique()]
    return sorted(values, key=lambda v: (str(type(v)), v))


def _positive(classes: list[Any], y: pd.Series) -> Any:
    for c in classes:
        if str(c).strip().lower() in POSITIVE_WORDS:
            return c
    counts = y.value_counts()
    return _native(counts.idxmin())  # the rarer class is usually the one to find


def _feature(s: pd.Series, rows: int) -> tuple[dict[str, Any] | None, str | None]:
    """(definition, note): a feature's type, range or categories, or None with why it is left out."""
    import pandas as pd

    required = bool(s.notna().all())
    if pd.api.types.is_bool_dtype(s):
        return {"type": "category", "values": ["False", "True"], "required": required}, None
    if pd.api.types.is_numeric_dtype(s):
        values = s.dropna()
        if values.empty:
            return None, "has no values in the sample"
        lo, hi = float(values.min()), float(values.max())
        span = (hi - lo) or max(abs(hi), 1.0)
        low, high = lo - 0.25 * span, hi + 0.25 * span  # room for tomorrow's values
        if lo >= 0:
            low = max(low, 0.0)
        gaps_in_ints = not required and bool((values % 1 == 0).all())  # a CSV's integers with gaps read as floats
        if pd.api.types.is_integer_dtype(s) or gaps_in_ints:
            return {"type": "int", "range": [math.floor(low), math.ceil(high)], "required": required}, None
        return {"type": "float", "range": [round(low, 6), round(high, 6)], "required": required}, None
    text = s.dropna().astype(str)
    distinct = text.nunique()
    if distinct > MAX_CATEGORIES and distinct > 0.05 * rows:
        return None, f"is text with {distinct} distinct values (free text or an id, not a category)"
    return {"type": "category", "values": sorted(text.unique().tolist()), "required": required}, None


def _roles(df: pd.DataFrame, label: str | None, key: str | None, time: str | None) -> tuple[str, str, str]:
    """(time, key, label) columns: the ones given, or the only candidate by name and shape."""
    cols = list(df.columns)
    time_col = _pick(cols, time, "event time", "--time", _time_candidates(df))
    keys = [c for c in cols if (KEY_NAME.search(_slug(c)) or KEY_CAMEL.search(c)) and c != time_col]
    key_col = _pick(cols, key, "entity key", "--key", keys)
    label_col = _pick(cols, label, "label", "--label", [c for c in cols if _slug(c) in LABEL_NAMES])
    return time_col, key_col, label_col


def _task(y: pd.Series, label_col: str, task: str | None) -> str:
    """The task given, or classification for text labels and few integer values, else regression."""
    import pandas as pd

    numeric = pd.api.types.is_numeric_dtype(y) and not pd.api.types.is_bool_dtype(y)
    if task is None:
        few = y.nunique() <= 20
        task = "classification" if (not numeric or (few and pd.api.types.is_integer_dtype(y))) else "regression"
    if task == "regression" and not numeric:
        raise DraftError(
            f"--label {label_col!r} holds {y.dtype} values such as {y.dropna().iloc[0]!r}, not numbers: "
            "a regression needs a numeric label; use --task classification"
        )
    return task


def _days(df: pd.DataFrame, time_col: str) -> int:
    """How many distinct days the event times cover; raises when they do not parse or cover under 3."""
    ts = to_utc(df[time_col])
    if ts.isna().mean() > 0.05:
        raise DraftError(
            f"--time {time_col!r}: {int(ts.isna().sum())} of {len(ts)} values are not dates or times "
            "(the pipeline reads ISO 8601, e.g. 2026-10-01T08:30:00Z, or epoch seconds)"
        )
    days = int(ts.dt.normalize().nunique())
    if days < 3:
        raise DraftError(
            f"the event times span {days} day(s); the pipeline trains on daily batches with a time-based holdout, "
            "so it needs at least 3 days"
        )
    return days


def _features(df: pd.DataFrame, roles: tuple[str, ...], notes: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """(features, rename): a definition per usable column, and new names for columns that are not identifiers."""
    rename: dict[str, str] = {}
    features: dict[str, Any] = {}
    for col in df.columns:
        if col in roles:
            continue
        definition, why = _feature(df[col], len(df))
        if definition is None:
            notes.append(f"left out {col!r}: it {why}")
            continue
        fname = col if COLUMN.match(col) else _slug(col)
        if fname != col:
            rename[col] = fname
        features[fname] = definition
    for special in roles:
        if not COLUMN.match(special):
            rename[special] = _slug(special)
    if not features:
        raise DraftError("no usable feature columns besides the key, the time and the label")
    return features, rename


def _label(y: pd.Series, label_col: str, task: str, rename: dict[str, str], notes: list[str]) -> tuple[dict, str]:
    """(label section, kind): kind is binary, multiclass or regression; classes come from the sample."""
    label_spec: dict[str, Any] = {"name": rename.get(label_col, label_col), "feed": "separate", "delay_days": 0}
    if task != "classification":
        return label_spec, "regression"
    classes = _classes(y)
    if len(classes) < 2:
        raise DraftError(f"--label {label_col!r} has one class only ({classes}); a classifier needs two or more")
    label_spec["classes"] = classes
    if len(classes) > 2:
        return label_spec, "multiclass"
    label_spec["positive_class"] = _positive(classes, y)
    notes.append(f"label.positive_class is {label_spec['positive_class']!r}: check it is the class to detect")
    return label_spec, "binary"


def _search(rows: int) -> tuple[str, dict[str, list[Any]]]:
    """(model family, search space): a random forest for small samples, boosting for larger ones."""
    if rows < 20_000:
        return "random_forest", {"n_estimators": [100, 200], "max_depth": [None, 8], "min_samples_leaf": [1, 3]}
    return "hist_gradient_boosting", {
        "learning_rate": [0.05, 0.1],
        "max_leaf_nodes": [15, 31, 63],
        "max_iter": [100, 200],
    }


def _lifecycle(kind: str, features: dict[str, Any], rows: int, days: int, notes: list[str]) -> dict[str, Any]:
    """The training, model, gate, deployment and monitoring sections, scaled to the sample's rows and days."""
    per_day = max(1, rows // max(days, 1))
    window = max(3, min(14, days - 1))
    holdout = max(1, window // 5)
    folds = 3 if per_day * (window - holdout) >= 300 else 2
    min_rows = max(folds * 10, min(500, int(0.5 * per_day * window)))
    family, space = _search(rows)
    metric = {"binary": "roc_auc", "multiclass": "f1_macro", "regression": "r2"}[kind]
    minimum = {"binary": 0.6, "multiclass": 0.4, "regression": 0.2}[kind]
    slices = [f for f, d in features.items() if d["type"] == "category" and len(d.get("values", [])) <= 10][:2]
    if rows < 20_000:
        notes.append(f"a {rows}-row sample: the search tries {family} with 4 candidates, {folds}-fold CV")
    return {
        "validation": {"max_bad_fraction": 0.01, "time_tolerance_hours": 0},
        "training": {"window_days": window, "holdout_days": holdout, "min_rows": min_rows},
        "model": {
            "family": family,
            "search": {"n_iter": 4, "cv_folds": folds, "budget_seconds": 60, "space": space},
            "primary_metric": metric,
        },
        "gate": {
            "minimums": {metric: minimum},
            "max_regression": 0.02,
            "slices": slices,
            "slice_min_rows": max(10, per_day // 10),
        },
        "deployment": {"strategy": "direct", "load_test": {"requests": 60, "concurrency": 2}},
        "monitoring": {
            "window_days": 1,
            "sample_rows": max(1000, min(100_000, rows)),
            "policy": {"min_rows": max(30, per_day // 2), "min_labelled_rows": max(30, per_day // 4)},
        },
    }


def draft_spec(
    df: pd.DataFrame,
    *,
    name: str,
    source_format: str = "parquet",
    label: str | None = None,
    key: str | None = None,
    time: str | None = None,
    task: str | None = None,
) -> Draft:
    """A spec for `df`'s table; raises DraftError when the key, time or label cannot be told."""
    import pandas as pd

    if df.empty:
        raise DraftError("the sample has no rows")
    df = df.set_axis([str(c) for c in df.columns], axis=1)
    notes: list[str] = []
    time_col, key_col, label_col = _roles(df, label, key, time)
    y = df[label_col]
    task = _task(y, label_col, task)
    days = _days(df, time_col)
    rows = len(df)
    features, rename = _features(df, (key_col, time_col, label_col), notes)
    label_spec, kind = _label(y, label_col, task, rename, notes)
    entity_name = re.sub(r"_?(id|key|uuid)$", "", key_col, flags=re.IGNORECASE) or "entity"
    spec: dict[str, Any] = {
        "name": name,
        "description": f"Drafted by `mlops spec init` from a sample of {rows} rows over {days} days.",
        "task": task,
        "source": {"format": source_format, **({"rename": rename} if rename else {})},
        "entity": {
            "name": _slug(entity_name),
            "key": rename.get(key_col, key_col),
            "dtype": "int64" if pd.api.types.is_integer_dtype(df[key_col]) else "string",
        },
        "timestamp": rename.get(time_col, time_col),
        "label": label_spec,
        "features": features,
        **_lifecycle(kind, features, rows, days, notes),
    }
    return Draft(spec=spec, notes=notes, rows=rows, days=days)


def to_yaml(draft: Draft, source: str) -> str:
    """The draft as YAML in the shipped specs' shape: one line per feature, a block per section."""
    import yaml

    def dump(obj: Any, flow: bool | None = None) -> str:
        return yaml.safe_dump(obj, sort_keys=False, allow_unicode=True, default_flow_style=flow, width=110)

    head = (
        f"# Dataset spec drafted by `mlops spec init {source}` ({draft.rows} rows, {draft.days} days).\n"
        "# Review it, then `mlops spec check` it. Every field is described in the README, section\n"
        '# "Bring your own data".\n'
    )
    parts = []
    for key, value in draft.spec.items():
        if key == "features":
            width = max(len(n) for n in value) + 1
            lines = [f"  {n + ':':<{width}} {dump(d, True).strip()}" for n, d in value.items()]
            parts.append("features:\n" + "\n".join(lines) + "\n")
        elif key == "source" and "rename" in value:
            rename = value["rename"]
            body = dump({k: v for k, v in value.items() if k != "rename"}, False)
            ren = "\n".join(f"    {json.dumps(k)}: {v}" for k, v in rename.items())  # JSON strings are YAML
            parts.append(
                "source:\n" + "".join(f"  {line}\n" for line in body.splitlines()) + "  rename:\n" + ren + "\n"
            )
        else:
            parts.append(dump({key: value}, None if isinstance(value, dict) else False))
    return head + "".join(parts)
