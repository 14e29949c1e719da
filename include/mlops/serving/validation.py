"""Request parsing and field-level validation, against the model's signature and the spec.

Pure Python on purpose: it runs for every request on the event loop, so it must cost
microseconds, and it must turn every kind of bad input into a 422 (or 413) with the field at
fault, never into an exception further down. A record is either a full feature row or just the
entity key, in which case its features come from the online store.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from include.mlops.spec import DatasetSpec

MAX_ERRORS = 50
INVOCATION_FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
NUMERIC_SIGNATURE_TYPES = {"double", "float", "long", "integer"}
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class ValidationFailed(Exception):
    """The request is well-formed HTTP but its content is wrong; `errors` name each field."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors[:MAX_ERRORS]
        super().__init__(summary(self.errors))


class RequestTooLarge(Exception):
    """More bytes or records than the service accepts in one request (413)."""


class SchemaMismatch(Exception):
    """A model's signature cannot be served with this spec (checked when a model is loaded)."""


def error(loc: tuple[Any, ...], msg: str, kind: str) -> dict[str, Any]:
    return {"loc": list(loc), "msg": msg, "type": kind}


def summary(errors: list[dict[str, Any]]) -> str:
    parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:5]]
    more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more


@dataclass(frozen=True)
class Rule:
    name: str
    numeric: bool
    integer: bool
    required: bool
    low: float | None = None
    high: float | None = None
    values: frozenset[str] | None = None


@dataclass(frozen=True)
class Item:
    """One validated record: `row` holds the raw features in spec order, or None for a lookup;
    `event_ts` the record's own event time (epoch seconds, UTC) when the caller sent one."""

    index: int
    entity: int | str | None  # in the spec's key type (entity.dtype)
    row: list[Any] | None
    event_ts: float | None = None


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class RecordValidator:
    """Checks records against the spec's features (types, ranges, categories, required) and,
    when given, the model signature's input columns and types."""

    def __init__(self, spec: DatasetSpec, signature: list[tuple[str, str]] | None = None) -> None:
        from include.mlops.features.build import derived_features

        self.entity_key = spec.entity_key
        self.entity_is_string = spec.entity_is_string
        self.timestamp = spec.timestamp
        self.derived = set(derived_features(spec))
        self.feature_names = list(spec.feature_names)
        self._names = set(self.feature_names)
        sig = dict(signature or [])
        self.check_signature(spec, sig)
        rules = []
        for f in spec.features:
            numeric = f.is_numeric
            if f.name in sig:
                numeric = sig[f.name] in NUMERIC_SIGNATURE_TYPES
            rules.append(
                Rule(
                    name=f.name,
                    numeric=numeric,
                    integer=f.type == "int",
                    required=f.required,
                    low=f.range[0] if f.range else None,
                    high=f.range[1] if f.range else None,
                    values=frozenset(f.values) if f.values and not numeric else None,
                )
            )
        self.rules = tuple(rules)

    def check_signature(self, spec: DatasetSpec, sig: dict[str, str]) -> None:
        """A model whose inputs the spec cannot produce, or whose types contradict it, is refused."""
        known = self._names | self.derived
        unknown = [c for c in sig if c not in known]
        if unknown:
            raise SchemaMismatch(f"the model expects columns the spec does not define: {unknown}")
        for f in spec.features:
            t = sig.get(f.name)
            if t is None:
                continue
            if f.is_numeric != (t in NUMERIC_SIGNATURE_TYPES):
                raise SchemaMismatch(f"feature {f.name!r} is {f.type} in the spec but {t} in the model signature")

    # -- records ----------------------------------------------------------------------------
    def check(self, records: list[Any], loc: tuple[Any, ...]) -> list[Item]:
        """Validate every record; raises ValidationFailed listing all field errors at once."""
        errors: list[dict[str, Any]] = []
        items: list[Item] = []
        for i, rec in enumerate(records):
            item = self._check_one(rec, (*loc, i), i, errors)
            if item is not None:
                items.append(item)
            if len(errors) >= MAX_ERRORS:
                break
        if errors:
            raise ValidationFailed(errors)
        return items

    def _entity(self, rec: dict[str, Any], loc: tuple[Any, ...], errors: list[dict[str, Any]]) -> int | str | None:
        """The record's entity id in the spec's key type. A string key takes a JSON string only; an
        int64 key a JSON integer only (a numeric string such as "42" is refused, not guessed at)."""
        if self.entity_key not in rec or rec[self.entity_key] is None:
            return None
        v = rec[self.entity_key]
        if self.entity_is_string:
            if isinstance(v, str):
                return v
            errors.append(
                error(
                    (*loc, self.entity_key),
                    f"expected a string {self.entity_key} (entity.dtype is string), got {type(v).__name__} "
                    f"{v!r:.100}; send the id as a JSON string",
                    "type_error.str",
                )
            )
            return None
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if not isinstance(v, int) or isinstance(v, bool) or not INT64_MIN <= v <= INT64_MAX:
            errors.append(
                error(
                    (*loc, self.entity_key),
                    f"expected an integer {self.entity_key} (entity.dtype is int64), got {type(v).__name__} {v!r:.100}",
                    "type_error.integer",
                )
            )
            return None
        return v

    def _event_time(self, rec: dict[str, Any], loc: tuple[Any, ...], errors: list[dict[str, Any]]) -> float | None:
        """The optional event time: ISO 8601 (no zone means UTC) or epoch seconds. Monitoring joins
        the ground truth on (entity, event time) and files the prediction under the event's day."""
        v = rec.get(self.timestamp) if self.timestamp else None
        if v is None:
            return None
        if _is_number(v) and math.isfinite(v):
            return float(v)
        if isinstance(v, str):
            try:
                t = datetime.fromisoformat(v.strip().replace("Z", "+00:00"))
            except ValueError:
                pass
            else:
                return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()
        errors.append(
            error(
                (*loc, self.timestamp),
                f"expected an ISO 8601 time or epoch seconds, got {v!r}"[:200],
                "type_error.datetime",
            )
        )
        return None

    def _check_one(self, rec: Any, loc: tuple[Any, ...], index: int, errors: list[dict[str, Any]]) -> Item | None:
        if not isinstance(rec, dict):
            errors.append(
                error(loc, f"expected an object of feature values, got {type(rec).__name__}", "type_error.dict")
            )
            return None
        n_before = len(errors)
        entity = self._entity(rec, loc, errors)
        event_ts = self._event_time(rec, loc, errors)
        if not any(k in self._names for k in rec):  # an entity key only: its features are looked up
            if len(errors) > n_before:
                return None
            if entity is None:
                errors.append(
                    error(loc, f"a record needs either the features or {self.entity_key!r}", "value_error.missing")
                )
                return None
            return Item(index, entity, None, event_ts)
        row = self._row(rec, loc, errors)
        if len(errors) > n_before:
            return None
        return Item(index, entity, row, event_ts)

    def _row(self, rec: dict[str, Any], loc: tuple[Any, ...], errors: list[dict[str, Any]]) -> list[Any]:
        """The record's features in spec order; each bad field adds an error (one loop, no call per
        field: this runs for every record of every request)."""
        row: list[Any] = []
        for r in self.rules:
            v = rec.get(r.name)
            if v is None or (isinstance(v, float) and math.isnan(v)):
                if r.required:
                    errors.append(error((*loc, r.name), "field required", "value_error.missing"))
                row.append(math.nan if r.numeric else None)
                continue
            if r.numeric:
                if not _is_number(v):
                    errors.append(
                        error(
                            (*loc, r.name),
                            f"expected a number, got {type(v).__name__} {v!r}"[:200],
                            "type_error.number",
                        )
                    )
                    row.append(None)
                    continue
                fv = float(v)
                if math.isinf(fv):
                    errors.append(error((*loc, r.name), "expected a finite number", "value_error.number"))
                elif r.integer and not fv.is_integer():
                    errors.append(error((*loc, r.name), f"expected an integer, got {v!r}", "type_error.integer"))
                elif (r.low is not None and fv < r.low) or (r.high is not None and fv > r.high):
                    errors.append(
                        error(
                            (*loc, r.name),
                            f"{v!r} is outside the allowed range [{r.low}, {r.high}]",
                            "value_error.range",
                        )
                    )
                row.append(fv)
            else:
                if not isinstance(v, str):
                    errors.append(
                        error(
                            (*loc, r.name), f"expected a string, got {type(v).__name__} {v!r}"[:200], "type_error.str"
                        )
                    )
                elif r.values is not None and v not in r.values:
                    errors.append(
                        error((*loc, r.name), f"{v!r} is not one of {sorted(r.values)}"[:300], "value_error.category")
                    )
                row.append(v)
        return row


# -- request bodies -----------------------------------------------------------------------------
def predict_records(payload: Any, entity_key: str) -> list[Any]:
    """/predict accepts {"records": [...]}, {"entity_ids": [...]}, a bare list, or one record."""
    if isinstance(payload, list):
        records = payload
    elif isinstance(payload, dict):
        if "records" in payload:
            records = payload["records"]
            if not isinstance(records, list):
                raise ValidationFailed([error(("body", "records"), "expected a list of records", "type_error.list")])
        elif "entity_ids" in payload:
            ids = payload["entity_ids"]
            if not isinstance(ids, list):
                raise ValidationFailed([error(("body", "entity_ids"), "expected a list of ids", "type_error.list")])
            records = [{entity_key: i} for i in ids]
        else:
            records = [payload]
    else:
        raise ValidationFailed([error(("body",), "expected a JSON object or list", "type_error.dict")])
    if not records:
        raise ValidationFailed([error(("body",), "no records to score", "value_error.empty")])
    return records


def invocation_records(payload: Any) -> tuple[list[Any], str]:
    """MLflow's scoring protocol: exactly one of dataframe_split, dataframe_records, instances,
    inputs (a `params` key is accepted and ignored). Returns the records and the format key."""
    if not isinstance(payload, dict):
        raise ValidationFailed(
            [error(("body",), f"expected a JSON object with one of {list(INVOCATION_FORMATS)}", "type_error.dict")]
        )
    keys = [k for k in INVOCATION_FORMATS if k in payload]
    if len(keys) != 1:
        raise ValidationFailed(
            [
                error(
                    ("body",),
                    f"expected exactly one of {list(INVOCATION_FORMATS)}, got {sorted(payload)}"[:300],
                    "value_error.format",
                )
            ]
        )
    key = keys[0]
    data = payload[key]
    loc = ("body", key)
    if key == "dataframe_split":
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("columns"), list)
            or not isinstance(data.get("data"), list)
        ):
            raise ValidationFailed(
                [error(loc, "expected {'columns': [...], 'data': [[...], ...]}", "type_error.split")]
            )
        cols = data["columns"]
        if not all(isinstance(c, str) for c in cols):
            raise ValidationFailed([error((*loc, "columns"), "column names must be strings", "type_error.str")])
        records = []
        for i, row in enumerate(data["data"]):
            if not isinstance(row, list) or len(row) != len(cols):
                raise ValidationFailed(
                    [error((*loc, "data", i), f"expected a list of {len(cols)} values", "value_error.row")]
                )
            records.append(dict(zip(cols, row, strict=True)))
    elif isinstance(data, list):
        records = data
    elif isinstance(data, dict) and key in ("inputs", "instances"):
        cols = list(data)
        lengths = {len(v) if isinstance(v, list) else -1 for v in data.values()}
        if len(lengths) != 1 or -1 in lengths:
            raise ValidationFailed(
                [error(loc, "columnar input needs a list of equal length per column", "value_error.columns")]
            )
        n = lengths.pop()
        records = [{c: data[c][i] for c in cols} for i in range(n)]
    else:
        raise ValidationFailed([error(loc, "expected a list of records", "type_error.list")])
    if not records:
        raise ValidationFailed([error(loc, "no records to score", "value_error.empty")])
    return records, key


def signature_columns(signature: Any) -> list[tuple[str, str]] | None:
    """(name, type) of an MLflow signature's column inputs, or None without a usable one."""
    if signature is None or signature.inputs is None:
        return None
    try:
        return [(c["name"], str(c["type"])) for c in signature.inputs.to_dict() if "name" in c]
    except Exception:
        return None
