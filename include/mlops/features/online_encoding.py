"""Encoding a frame into the rows of the online store's tables, vectorised per column.

The bytes are those the store's per-row interface writes (`online_store`'s
`online_write_batch`): each feature's serialised `ValueProto` (the empty proto for a null) and
Feast's serialised entity key, computed once per distinct value or in one Arrow pass instead of
once per row. Times are microseconds since the Unix epoch, UTC. `online_store.write_frame`
writes what `encode_rows` gives, in the order `key_order` gives.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from include.mlops.features.feast_import import without_typeguard

without_typeguard()  # this module is imported only to use Feast

from feast.infra.key_encoding_utils import serialize_entity_key  # noqa: E402
from feast.protos.feast.types.Value_pb2 import Value as ValueProto  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Iterable

    import numpy as np
    import pandas as pd
    import pyarrow as pa


def _take(codes: np.ndarray, per_unique: list[Any], null: Any) -> list[Any]:
    """Expand per-distinct-value results to rows; code -1 (null) picks the appended `null`."""
    import numpy as np

    table = np.empty(len(per_unique) + 1, dtype=object)
    table[:-1] = per_unique
    table[-1] = null
    return table[codes].tolist()


def _double_column(values: np.ndarray) -> list[bytes]:
    """Same bytes as `ValueProto(double_val=x).SerializeToString()`; NaN (Arrow null) is the empty
    ValueProto, as in Feast's `_convert_scalar_values_to_proto`. Distinct values are found on the
    bit patterns, so -0.0 and 0.0 stay apart as they do in Feast's bytes."""
    import numpy as np
    import pandas as pd

    tag = ValueProto(double_val=1.0).SerializeToString()[:-8]
    values = np.ascontiguousarray(values, dtype="float64")
    codes, uniques = pd.factorize(values.view("int64"))
    codes[np.isnan(values)] = -1
    uniques = np.asarray(uniques, dtype="int64").view("float64")
    packed = np.empty(len(uniques), dtype=[("tag", f"V{len(tag)}"), ("value", "<f8")])
    packed["tag"] = np.frombuffer(tag, dtype=f"V{len(tag)}")[0]
    packed["value"] = uniques
    return _take(codes, packed.view(f"V{packed.dtype.itemsize}").tolist(), b"")


def _string_column(column: pa.ChunkedArray) -> list[bytes]:
    """One ValueProto per distinct string (categoricals have a handful); null is the empty proto."""
    import numpy as np

    encoded = column.combine_chunks().dictionary_encode()
    codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    return _take(
        codes, [ValueProto(string_val=str(u)).SerializeToString() for u in encoded.dictionary.to_pylist()], b""
    )


def _generic_column(column: pa.ChunkedArray, value_type: Any) -> list[bytes]:
    """Feast's own per-value conversion, for types without a fast encoding."""
    from feast.type_map import python_values_to_proto_values

    return [
        p.SerializeToString() for p in python_values_to_proto_values(column.to_numpy(zero_copy_only=False), value_type)
    ]


def _feature_column(column: pa.ChunkedArray, value_type: Any) -> list[bytes]:
    import pyarrow as pa
    from feast.value_type import ValueType

    if value_type == ValueType.DOUBLE and column.type == pa.float64():
        return _double_column(column.to_numpy(zero_copy_only=False))
    if value_type == ValueType.STRING and column.type in (pa.string(), pa.large_string()):
        return _string_column(column)
    return _generic_column(column, value_type)


def _string_keys(column: pa.ChunkedArray, prefix: bytes) -> list[bytes]:
    """`prefix` + little-endian uint32 byte length + UTF-8 bytes per value: Feast's serialisation
    of one STRING join key after its constant head, joined by Arrow in one pass."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    values = column.combine_chunks().cast(pa.binary())
    lengths = pc.binary_length(values).to_numpy(zero_copy_only=False).astype("<u4")
    packed = pa.Array.from_buffers(pa.binary(4), len(values), [None, pa.py_buffer(np.ascontiguousarray(lengths))])
    empty = pa.scalar(b"", pa.binary())
    return pc.binary_join_element_wise(
        pa.scalar(prefix, pa.binary()), packed.cast(pa.binary()), values, empty
    ).to_pylist()


def _entity_keys(table: pa.Table, join_keys: dict[str, Any], version: int) -> list[bytes]:
    """`serialize_entity_key` per row. One INT64 join key is Feast's serialisation of the key
    name followed by the little-endian int64; one STRING join key is the key name, then the
    value's byte length and UTF-8 bytes (both checked against Feast on the first and last rows)."""
    import numpy as np
    import pyarrow as pa
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.type_map import python_values_to_proto_values
    from feast.value_type import ValueType

    names = list(join_keys)
    columns = {k: table.column(k) for k in names}
    if any(c.null_count for c in columns.values()):
        raise ValueError(f"null entity keys in {names}: every row needs its entity")

    def feast_keys(rows: slice) -> list[bytes]:
        per_key = [
            python_values_to_proto_values(columns[k].to_numpy(zero_copy_only=False)[rows], join_keys[k]) for k in names
        ]
        return [
            serialize_entity_key(EntityKey(join_keys=names, entity_values=list(vals)), version)
            for vals in zip(*per_key, strict=True)
        ]

    def checked(keys: list[bytes]) -> list[bytes]:
        if keys[-1:] != feast_keys(slice(len(keys) - 1, None)) or keys[:1] != feast_keys(slice(0, 1)):
            raise AssertionError("entity key encoding differs from feast.serialize_entity_key")
        return keys

    if len(names) != 1:
        return feast_keys(slice(None))  # several join keys: Feast's own path, row by row
    name, column = names[0], columns[names[0]]
    if join_keys[name] == ValueType.STRING:
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            raise ValueError(
                f"entity key {name!r} is a string key (entity.dtype: string) but the frame holds {column.type} "
                "values: convert the ids to text first (features.entity_column)"
            )
        if not len(column):
            return []
        first = feast_keys(slice(0, 1))[0]
        return checked(_string_keys(column, first[: -4 - len(column[0].as_py().encode())]))
    if join_keys[name] != ValueType.INT64 or column.type != pa.int64():
        return feast_keys(slice(None))  # not an int64 key: Feast's own path, row by row
    values = column.to_numpy(zero_copy_only=False).astype("<i8", copy=False)
    prefix = feast_keys(slice(0, 1))[0][:-8]
    packed = np.empty(len(values), dtype=[("prefix", f"V{len(prefix)}"), ("value", "<i8")])
    packed["prefix"] = np.frombuffer(prefix, dtype=f"V{len(prefix)}")[0]
    packed["value"] = values
    return checked(packed.view(f"V{packed.dtype.itemsize}").tolist())


def _micros_column(column: pa.ChunkedArray) -> list[int]:
    """A timestamp column as microseconds since the epoch (naive times are UTC)."""
    import pandas as pd

    if column.null_count:
        raise ValueError(f"null timestamps in a {column.type} column: every row needs its time")
    stamps = pd.to_datetime(column.to_numpy(zero_copy_only=False))
    if stamps.tz is not None:
        stamps = stamps.tz_convert(None)
    return (stamps.as_unit("ns").asi8 // 1000).tolist()


def encode_rows(table: pa.Table, view: Any, version: int) -> tuple[list[str], Iterable[tuple[Any, ...]]]:
    """The feature names (sorted, as `online_write_batch` orders them) and the rows it would
    write for `table`: entity key, event and created time, then one value per feature."""
    keys = _entity_keys(table, {e.name: e.dtype.to_value_type() for e in view.entity_columns}, version)
    source = view.batch_source
    event = _micros_column(table.column(source.timestamp_field))
    created = (
        _micros_column(table.column(source.created_timestamp_column))
        if source.created_timestamp_column
        else [None] * table.num_rows
    )
    features = sorted(view.features, key=lambda f: f.name)
    missing = [f.name for f in features if f.name not in table.column_names]
    if missing:
        raise ValueError(f"columns {missing} of feature view {view.name} are not in the frame")
    values = [_feature_column(table.column(f.name), f.dtype.to_value_type()) for f in features]
    return [f.name for f in features], zip(keys, event, created, *values, strict=True)


def key_order(df: pd.DataFrame, view: Any, positions: np.ndarray) -> np.ndarray:
    """`positions` reordered by serialised entity key, so inserts walk the primary key in order
    instead of at random. For one int64 join key that is the order of its little-endian bytes;
    for one string key, of its little-endian length bytes, then of its UTF-8 bytes."""
    import numpy as np
    from feast.value_type import ValueType

    cols = view.entity_columns
    if len(cols) != 1:
        return positions
    kind, column = cols[0].dtype.to_value_type(), df[cols[0].name]
    if kind == ValueType.INT64 and column.dtype == "int64":
        values = column.to_numpy()[positions].astype("<i8")
        return positions[np.argsort(values.byteswap().view("<u8"), kind="stable")]
    if kind == ValueType.STRING:
        import pyarrow as pa
        import pyarrow.compute as pc

        try:
            values = pa.array(column.to_numpy()[positions], type=pa.string()).cast(pa.binary())
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return positions  # not all text: the writer says what is wrong
        lengths = pc.binary_length(values).to_numpy(zero_copy_only=False).astype("<u4")
        keys = pa.table({"length": lengths.byteswap(), "value": values})
        order = pc.sort_indices(keys, sort_keys=[("length", "ascending"), ("value", "ascending")])
        return positions[order.to_numpy()]
    return positions
