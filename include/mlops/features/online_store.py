"""The embedded default's Feast online store: SQLite, one row per entity.

Feast's own SQLite store keeps one row per (entity, feature), indexed twice: on the primary key
and on `entity_key`. A day of 200k new customers x 18 features is 3.6M rows spread over both
B-trees of a table that already holds 20M, and writing it took 17.7 s of `ml_training`'s
`prepare` at 1M rows a day (BENCHMARKS.md). Here each feature view is one `WITHOUT ROWID` table
keyed by Feast's serialised entity key, with one column per feature holding the feature's
serialised `ValueProto`:

    entity_key BLOB PRIMARY KEY | event_ts | created_ts | "tenure_months" BLOB | "plan" BLOB | ...

18 times fewer rows and one B-tree. It is a Feast `OnlineStore` (selected in `repo_config` by its
class path), so `get_online_features`, `write_to_online_store`, `materialize` and the scoring
service's lookups go through it unchanged. `write_frame` is the same writer, vectorised per
column for a whole frame (`build.materialize_frame`, the encoding in `online_encoding`); `online_write_batch` is Feast's per-row
interface to it, and both write the same bytes (`tests/integration/test_online_store.py`).

Values are the bytes Feast's SQLite store writes (an empty `ValueProto` for a null); a NULL
column is a feature never written for that entity, left out of the answer as Feast's store
leaves out a missing row. Times are microseconds since the Unix epoch, UTC. Upserts keep Feast's
semantics: the last write of a feature wins, features not written keep their values.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from include.mlops.features.feast_import import without_typeguard

without_typeguard()  # this module is imported only to use Feast

from feast.infra.key_encoding_utils import serialize_entity_key  # noqa: E402
from feast.infra.online_stores.helpers import compute_table_id  # noqa: E402
from feast.infra.online_stores.online_store import OnlineStore  # noqa: E402
from feast.protos.feast.types.Value_pb2 import Value as ValueProto  # noqa: E402
from feast.repo_config import FeastConfigBaseModel  # noqa: E402
from pydantic import StrictStr  # noqa: E402

from include.mlops.features.online_encoding import encode_rows, key_order  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import numpy as np
    import pandas as pd

TYPE = "include.mlops.features.online_store.EntityRowSqliteOnlineStore"
_META = ("entity_key", "event_ts", "created_ts")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_READ_CHUNK = 10_000  # entity keys per SELECT, well under SQLite's limit on bound parameters


class EntityRowSqliteOnlineStoreConfig(FeastConfigBaseModel):
    """`online_store: {type: include.mlops.features.online_store.EntityRowSqliteOnlineStore, path: ...}`"""

    type: Literal["include.mlops.features.online_store.EntityRowSqliteOnlineStore"] = TYPE
    path: StrictStr = "data/online.db"


def supports(config: Any) -> bool:
    """True when the repo's online store is this one (the others get Feast's writers)."""
    return getattr(config.online_store, "type", None) == TYPE


def db_path(config: Any) -> Path:
    """The SQLite file (a relative path is under the Feast repo, as for Feast's SQLite store)."""
    path = Path(config.online_store.path)
    if config.repo_path and not path.is_absolute():
        path = Path(config.repo_path) / path
    return path


def table_name(config: Any, view: Any) -> str:
    return compute_table_id(config.project, view, config.registry.enable_online_feature_view_versioning)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def upsert_sql(table: str, features: Sequence[str]) -> str:
    """Insert an entity's row, or overwrite the given columns of the row it already has."""
    columns = [*_META, *features]
    update = ", ".join(f"{_quote(c)} = excluded.{_quote(c)}" for c in columns[1:])
    return (
        f"INSERT INTO {_quote(table)} ({', '.join(map(_quote, columns))}) VALUES ({', '.join('?' * len(columns))}) "
        f"ON CONFLICT(entity_key) DO UPDATE SET {update}"
    )


def tune(conn: sqlite3.Connection, cache_mb: int = 256) -> None:
    """Settings for a writer:
    - WAL journal: pages are appended to the log instead of copied to a rollback journal and
      written in place, and readers (the scoring service) keep reading while the writer writes.
      The mode stays with the file.
    - synchronous=NORMAL, safe with WAL: a crash cannot corrupt the file; a power cut may lose
      the last transactions, which re-running the idempotent `prepare` writes again.
    - a page cache of `cache_mb` for this connection (SQLite's default is 2 MB).
    """
    try:
        conn.execute("PRAGMA journal_mode=WAL")
    except sqlite3.OperationalError:  # another connection holds a lock: keep the current mode
        pass
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(f"PRAGMA cache_size=-{cache_mb * 1024}")


def _micros(ts: datetime | None) -> int | None:
    """Microseconds since the epoch; a naive time is UTC (Feast's convention)."""
    if ts is None:
        return None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return (ts - _EPOCH) // timedelta(microseconds=1)


class EntityRowSqliteOnlineStore(OnlineStore):
    """Feast's online-store interface over one `WITHOUT ROWID` row per entity (module docstring)."""

    _conn: sqlite3.Connection | None = None

    def _connection(self, config: Any) -> sqlite3.Connection:
        if self._conn is None:
            path = db_path(config)
            path.parent.mkdir(parents=True, exist_ok=True)
            # like Feast's SQLite store: one connection per store object, usable from any thread
            self._conn = sqlite3.connect(path, timeout=60, check_same_thread=False)
        return self._conn

    def online_write_batch(
        self,
        config: Any,
        table: Any,
        data: list[tuple[Any, dict[str, Any], datetime, datetime | None]],
        progress: Callable[[int], Any] | None,
    ) -> None:
        conn = self._connection(config)
        name = table_name(config, table)
        version = config.entity_key_serialization_version
        by_features: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}  # one statement per feature set
        for entity_key, values, event_ts, created_ts in data:
            features = tuple(sorted(values))
            row = (serialize_entity_key(entity_key, version), _micros(event_ts), _micros(created_ts))
            by_features.setdefault(features, []).append(row + tuple(values[f].SerializeToString() for f in features))
        with conn:
            for features, rows in by_features.items():
                conn.executemany(upsert_sql(name, features), rows)
        if progress:
            progress(len(data))

    def online_read(
        self,
        config: Any,
        table: Any,
        entity_keys: list[Any],
        requested_features: list[str] | None = None,
    ) -> list[tuple[datetime | None, dict[str, Any] | None]]:
        conn = self._connection(config)
        features = list(requested_features or [f.name for f in table.features])
        version = config.entity_key_serialization_version
        keys = [serialize_entity_key(k, version) for k in entity_keys]
        select = (
            f"SELECT entity_key, event_ts, {', '.join(map(_quote, features))} FROM {_quote(table_name(config, table))}"
        )
        found: dict[bytes, tuple[Any, ...]] = {}
        for i in range(0, len(keys), _READ_CHUNK):
            chunk = keys[i : i + _READ_CHUNK]
            found.update(
                (r[0], r) for r in conn.execute(f"{select} WHERE entity_key IN ({','.join('?' * len(chunk))})", chunk)
            )
        result: list[tuple[datetime | None, dict[str, Any] | None]] = []
        for key in keys:
            row = found.get(key)
            if row is None:
                result.append((None, None))
                continue
            values = {f: ValueProto.FromString(v) for f, v in zip(features, row[2:], strict=True) if v is not None}
            if not values:
                result.append((None, None))
            else:
                result.append((None if row[1] is None else _EPOCH + timedelta(microseconds=row[1]), values))
        return result

    def update(
        self,
        config: Any,
        tables_to_delete: Sequence[Any],
        tables_to_keep: Sequence[Any],
        entities_to_delete: Sequence[Any],
        entities_to_keep: Sequence[Any],
        partial: bool,
    ) -> None:
        """Create each kept view's table, add a column for each feature it gained, drop deleted views."""
        conn = self._connection(config)
        with conn:
            for view in tables_to_keep:
                _ensure_table(conn, table_name(config, view), [f.name for f in view.features], db_path(config))
            for view in tables_to_delete:
                conn.execute(f"DROP TABLE IF EXISTS {_quote(table_name(config, view))}")

    def teardown(self, config: Any, tables: Sequence[Any], entities: Sequence[Any]) -> None:
        """As Feast's SQLite store does: close, then delete the file."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        db_path(config).unlink(missing_ok=True)


def _ensure_table(conn: sqlite3.Connection, table: str, features: list[str], path: Path) -> None:
    folded = Counter(f.lower() for f in features)
    clash = sorted(f for f in features if f.lower() in _META)
    same = sorted(f for f in features if folded[f.lower()] > 1)
    if clash or same:
        raise ValueError(
            f"feature names {clash or same} cannot be columns of {table}: SQLite column names ignore case "
            f"and {', '.join(_META)} are the store's own"
        )
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {_quote(table)} "
        "(entity_key BLOB PRIMARY KEY NOT NULL, event_ts INTEGER, created_ts INTEGER) WITHOUT ROWID"
    )
    have = {r[1].lower() for r in conn.execute(f"PRAGMA table_info({_quote(table)})")}
    if "feature_name" in have:
        raise RuntimeError(
            f"{path} holds {table} in Feast's own SQLite layout (one row per feature), from an earlier "
            "version of this platform. The online store is rebuilt from the offline features: delete the "
            "file and re-run `ml_training` (its prepare task writes the online store)."
        )
    for f in features:
        if f.lower() not in have:
            conn.execute(f"ALTER TABLE {_quote(table)} ADD COLUMN {_quote(f)} BLOB")


def write_frame(
    fs: Any, view_name: str, df: pd.DataFrame, positions: np.ndarray | None = None, chunk_rows: int = 50_000
) -> int:
    """Upsert rows of a frame (one per entity; `positions` picks them, default all), encoded per
    column (`online_encoding`), in key order, one transaction per chunk of entities (readers get in between), so
    memory stays at one chunk's worth whatever the frame's size. Returns the entities written."""
    import numpy as np
    import pyarrow as pa

    config = fs.config
    if not supports(config):
        raise ValueError(f"online store {config.online_store.type!r} is not {TYPE}")
    view = fs.get_feature_view(view_name)
    table_id = table_name(config, view)
    rows = key_order(df, view, np.arange(len(df)) if positions is None else np.asarray(positions))
    with closing(sqlite3.connect(db_path(config), timeout=60)) as conn:
        tune(conn)
        for i in range(0, len(rows), chunk_rows):
            table = pa.Table.from_pandas(df.iloc[rows[i : i + chunk_rows]], preserve_index=False)
            features, encoded = encode_rows(table, view, config.entity_key_serialization_version)
            with conn:
                conn.executemany(upsert_sql(table_id, features), encoded)
    return len(rows)
