"""A vectorised writer for Feast's SQLite online store.

Feast's `write_to_online_store` builds one protobuf and runs one `execute` per value (18 million
of each for 1M entities x 18 features). This writer produces the same rows, byte for byte, into
the same table with the same upsert, but per column: entity keys are Feast's own
`serialize_entity_key` prefix plus the packed int64, doubles are the ValueProto tag plus the
packed float, strings and timestamps are converted once per distinct value. Rows go to SQLite in
multi-row upserts, one transaction per chunk of entities, in primary-key order. Types without a
fast encoding go through Feast's own converters. `tests/integration/test_online_store.py` compares
the raw rows and `get_online_features` with Feast's `write_to_online_store` and `materialize`.

Not reproduced: `write_to_online_store` silently skips a frame whose feature columns are all
null; this writer (like `materialize`) stores those rows as empty values.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import datetime, timedelta
from itertools import chain, islice, repeat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.mlops.feast_import import without_typeguard

without_typeguard()  # every function here imports Feast; this module is imported only to write

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

_EPOCH = datetime(1970, 1, 1)
_COLUMNS = ("entity_key", "feature_name", "value", "value_text", "event_ts", "created_ts")


def supports(config: Any) -> bool:
    """True when the online store is Feast's SQLite store writing the plain column set (no vector
    or OpenAI-compatible columns, which add per-value work this writer does not reproduce)."""
    store = config.online_store
    return (
        str(getattr(store, "type", "")) in ("sqlite", "feast.infra.online_stores.sqlite.SqliteOnlineStore")
        and not getattr(store, "vector_enabled", False)
        and not getattr(store, "enable_openai_compatible_store", False)
    )


def db_path(config: Any) -> Path:
    """Where Feast's SqliteOnlineStore keeps its file (relative paths are under the repo)."""
    path = Path(config.online_store.path)
    if config.repo_path and not path.is_absolute():
        path = Path(config.repo_path) / path
    return path


def table_name(config: Any, view: Any) -> str:
    from feast.infra.online_stores.helpers import compute_table_id

    return compute_table_id(config.project, view, config.registry.enable_online_feature_view_versioning)


def upsert_sql(table: str, rows: int = 1) -> str:
    """The statement Feast's `online_write_batch` runs per value (last write wins), for `rows`
    rows at once: one statement per row costs SQLite more than the B-tree work itself."""
    quoted = '"' + table.replace('"', '""') + '"'
    update = ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS[2:])
    values = ", ".join([f"({', '.join('?' * len(_COLUMNS))})"] * rows)
    return (
        f"INSERT INTO {quoted} ({', '.join(_COLUMNS)}) VALUES {values} "
        f"ON CONFLICT(entity_key, feature_name) DO UPDATE SET {update};"
    )


def tune(conn: sqlite3.Connection, cache_mb: int = 256) -> None:
    """Settings for a bulk upsert into a large table (measured: 200k entities into a store of
    1.1M, 55 s with SQLite's defaults, 39 s with these):
    - WAL journal: pages are appended to the log instead of copied to a rollback journal and
      then written in place; readers (the scoring service) keep reading while the writer writes.
      The mode stays with the file; Feast's readers need nothing for it.
    - synchronous=NORMAL, safe with WAL: a crash cannot corrupt the file; a power cut may lose
      the last transactions, which re-running the idempotent `prepare` writes again.
    - a page cache of `cache_mb` (SQLite's default is 2 MB), this connection only: the two
      B-tree indexes Feast keeps on the table are each touched once per row.
    """
    try:
        conn.execute("PRAGMA journal_mode=WAL")
    except sqlite3.OperationalError:  # another connection holds a lock: keep the current mode
        pass
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(f"PRAGMA cache_size=-{cache_mb * 1024}")


# -- per-column encoders: each returns (value bytes per row, value_text per row) ------------------
def _take(codes: np.ndarray, per_unique: list[Any], null: Any) -> list[Any]:
    """Expand per-distinct-value results to rows; code -1 (null) picks the appended `null`."""
    import numpy as np

    table = np.empty(len(per_unique) + 1, dtype=object)
    table[:-1] = per_unique
    table[-1] = null
    return table[codes].tolist()


def _double_column(values: np.ndarray) -> tuple[list[bytes], list[str | None]]:
    """Same bytes as `ValueProto(double_val=x).SerializeToString()`; NaN (Arrow null) is the empty
    ValueProto with no text, as in Feast's `_convert_scalar_values_to_proto`. Distinct values are
    found on the bit patterns, so -0.0 and 0.0 stay apart as they do in Feast's bytes."""
    import numpy as np
    import pandas as pd
    from feast.protos.feast.types.Value_pb2 import Value

    tag = Value(double_val=1.0).SerializeToString()[:-8]
    values = np.ascontiguousarray(values, dtype="float64")
    codes, uniques = pd.factorize(values.view("int64"))
    codes[np.isnan(values)] = -1
    uniques = np.asarray(uniques, dtype="int64").view("float64")
    packed = np.empty(len(uniques), dtype=[("tag", f"V{len(tag)}"), ("value", "<f8")])
    packed["tag"] = np.frombuffer(tag, dtype=f"V{len(tag)}")[0]
    packed["value"] = uniques
    blobs = packed.view(f"V{packed.dtype.itemsize}").tolist()
    texts = list(map(float.__repr__, uniques.tolist()))
    return _take(codes, blobs, b""), _take(codes, texts, None)


def _string_column(column: pa.ChunkedArray) -> tuple[list[bytes], list[str | None]]:
    """One ValueProto per distinct string (categoricals have a handful); null is the empty proto."""
    import numpy as np
    from feast.protos.feast.types.Value_pb2 import Value

    encoded = column.combine_chunks().dictionary_encode()
    uniques = encoded.dictionary.to_pylist()
    codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    blobs = [Value(string_val=str(u)).SerializeToString() for u in uniques]
    return _take(codes, blobs, b""), _take(codes, [str(u) for u in uniques], None)


def _generic_column(column: pa.ChunkedArray, value_type: Any) -> tuple[list[bytes], list[str | None]]:
    """Feast's own per-value conversion, for types without a fast encoding."""
    from feast.infra.online_stores.helpers import extract_text_and_num
    from feast.type_map import python_values_to_proto_values

    protos = python_values_to_proto_values(column.to_numpy(zero_copy_only=False), value_type)
    return [p.SerializeToString() for p in protos], [extract_text_and_num(p, False)[0] for p in protos]


def _feature_column(column: pa.ChunkedArray, value_type: Any) -> tuple[list[bytes], list[str | None]]:
    import pyarrow as pa
    from feast.value_type import ValueType

    if value_type == ValueType.DOUBLE and column.type == pa.float64():
        return _double_column(column.to_numpy(zero_copy_only=False))
    if value_type == ValueType.STRING and column.type in (pa.string(), pa.large_string()):
        return _string_column(column)
    return _generic_column(column, value_type)


def _entity_keys(table: pa.Table, join_keys: dict[str, Any], version: int) -> list[bytes]:
    """`serialize_entity_key` per row. One INT64 join key is Feast's serialisation of the key
    name followed by the little-endian int64 (checked against Feast on the first and last rows)."""
    import numpy as np
    import pyarrow as pa
    from feast.infra.key_encoding_utils import serialize_entity_key
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

    if len(names) != 1 or join_keys[names[0]] != ValueType.INT64 or columns[names[0]].type != pa.int64():
        return feast_keys(slice(None))  # not one int64 key: Feast's own path, row by row
    values = columns[names[0]].to_numpy(zero_copy_only=False).astype("<i8", copy=False)
    prefix = feast_keys(slice(0, 1))[0][:-8]
    packed = np.empty(len(values), dtype=[("prefix", f"V{len(prefix)}"), ("value", "<i8")])
    packed["prefix"] = np.frombuffer(prefix, dtype=f"V{len(prefix)}")[0]
    packed["value"] = values
    keys = packed.view(f"V{packed.dtype.itemsize}").tolist()
    if keys[-1:] != feast_keys(slice(len(values) - 1, None)) or keys[:1] != feast_keys(slice(0, 1)):
        raise AssertionError("entity key encoding differs from feast.serialize_entity_key")
    return keys


def _epoch_seconds(column: pa.ChunkedArray, cache: dict[int, int]) -> list[int]:
    """What SQLite receives from Feast for a timestamp: the column as naive UTC datetimes
    (`pd.to_datetime(...).to_pydatetime()`), stored by Feast's registered adapter as
    `int(dt.timestamp())`. Computed once per distinct timestamp, with Python's own arithmetic."""
    import pandas as pd

    if column.null_count:
        raise ValueError(f"null timestamps in {column.type} column: Feast cannot store them either")
    stamps = pd.to_datetime(column.to_numpy(zero_copy_only=False))
    if stamps.tz is not None:
        stamps = stamps.tz_convert(None)
    codes, uniques = pd.factorize(stamps.as_unit("ns").asi8)
    out = []
    for u in uniques.tolist():
        if u not in cache:
            cache[u] = int((_EPOCH + timedelta(microseconds=u // 1000)).timestamp())
        out.append(cache[u])
    return _take(codes, out, None)


def encode_rows(table: pa.Table, view: Any, version: int, ts_cache: dict[int, int] | None = None) -> Any:
    """The rows `online_write_batch` would write for `table`, as a lazy iterator of 6-tuples in
    `_COLUMNS` order: entity by entity in the table's order, and within an entity by feature name
    (the primary key's order; Feast writes the view's order, which only changes rowids)."""
    cache = {} if ts_cache is None else ts_cache
    join_keys = {e.name: e.dtype.to_value_type() for e in view.entity_columns}
    keys = _entity_keys(table, join_keys, version)
    source = view.batch_source
    event = _epoch_seconds(table.column(source.timestamp_field), cache)
    created = (
        _epoch_seconds(table.column(source.created_timestamp_column), cache)
        if source.created_timestamp_column
        else [None] * table.num_rows
    )
    per_feature = []
    for f in sorted(view.features, key=lambda f: f.name):
        if f.name not in table.column_names:
            raise ValueError(f"Column {f.name} not found in table")
        blobs, texts = _feature_column(table.column(f.name), f.dtype.to_value_type())
        per_feature.append(zip(keys, repeat(f.name, table.num_rows), blobs, texts, event, created, strict=True))
    return chain.from_iterable(zip(*per_feature, strict=True))


def key_order(df: pd.DataFrame, view: Any, positions: np.ndarray) -> np.ndarray:
    """`positions` reordered by serialised entity key (for one int64 join key: the order of its
    little-endian bytes), so inserts walk the primary-key index in order instead of at random."""
    import numpy as np
    from feast.value_type import ValueType

    cols = view.entity_columns
    if len(cols) != 1 or cols[0].dtype.to_value_type() != ValueType.INT64 or df[cols[0].name].dtype != "int64":
        return positions
    values = df[cols[0].name].to_numpy()[positions].astype("<i8")
    return positions[np.argsort(values.byteswap().view("<u8"), kind="stable")]


def write_frame(
    fs: Any,
    view_name: str,
    df: pd.DataFrame,
    positions: np.ndarray | None = None,
    chunk_rows: int = 50_000,
    rows_per_statement: int = 64,
) -> int:
    """Upsert rows of a frame (one per entity; `positions` picks them, default all) into the SQLite
    online store, as `write_to_online_store` would: one transaction per chunk of entities (readers
    get in between, as with Feast's writer), so memory stays at one chunk's worth whatever the
    frame's size. Returns the entities written."""
    import numpy as np
    import pyarrow as pa

    config = fs.config
    if not supports(config):
        raise ValueError(f"online store {config.online_store.type!r} is not the plain SQLite store")
    view = fs.get_feature_view(view_name)
    table_id = table_name(config, view)
    many, one = upsert_sql(table_id, rows_per_statement), upsert_sql(table_id)
    rows = key_order(df, view, np.arange(len(df)) if positions is None else np.asarray(positions))
    width = len(_COLUMNS) * rows_per_statement
    cache: dict[int, int] = {}
    with closing(sqlite3.connect(db_path(config))) as conn:
        tune(conn)
        for i in range(0, len(rows), chunk_rows):
            table = pa.Table.from_pandas(df.iloc[rows[i : i + chunk_rows]], preserve_index=False)
            n = table.num_rows * len(view.features)
            flat = chain.from_iterable(encode_rows(table, view, config.entity_key_serialization_version, cache))
            with conn:
                # whole statements' worth of parameters straight from the iterator, then the rest row by row
                conn.executemany(many, islice(zip(*[flat] * width, strict=True), n // rows_per_statement))
                conn.executemany(one, zip(*[flat] * len(_COLUMNS), strict=True))
    return len(rows)
