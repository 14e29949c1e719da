"""Rewriting the old home's path to the new one inside a home's stores: every text value of a
SQLite file (and the Feast registry's protos in it), and text files; each counted per store."""

from __future__ import annotations

import os
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

MAX_TEXT_BYTES = 64 * 1024 * 1024


@dataclass
class StoreCount:
    """What one store held of the old home: values rewritten, rows or files touched, values left."""

    values: int = 0
    rows: int = 0
    left: int = 0


# -- replacing ----------------------------------------------------------------------------------
class Rewriter:
    """Replaces the old home by the new one in text, as a path and as a percent-encoded URI path."""

    def __init__(self, old: Path, new: Path) -> None:
        # each form keeps its own: a plain path stays plain (Feast's source, the store's file://
        # URIs), a percent-encoded one (a URI MLflow encoded) stays encoded
        pairs = {str(old): str(new)}
        if quote(str(old)) != str(old):
            pairs[quote(str(old))] = quote(str(new))
        # never followed by more of a name: /data/home must not match /data/home2 or /data/home.bak
        self._patterns = [(re.compile(re.escape(o) + r"(?![\w.\-~])"), n) for o, n in pairs.items()]
        self.needles = [o.encode() for o in pairs]

    def mentions(self, data: bytes | str) -> bool:
        raw = data.encode() if isinstance(data, str) else data
        return any(n in raw for n in self.needles)

    def text(self, value: str) -> tuple[str, int]:
        total = 0
        for pattern, new in self._patterns:
            value, n = pattern.subn(lambda _m, new=new: new, value)
            total += n
        return value, total


# -- rewriting ------------------------------------------------------------------------------------
def _feast_proto_classes() -> dict[str, Any]:
    from include.mlops.features.feast_import import without_typeguard

    without_typeguard()
    from feast.protos.feast.core import (
        DataSource_pb2,
        Entity_pb2,
        FeatureService_pb2,
        FeatureView_pb2,
        InfraObject_pb2,
        OnDemandFeatureView_pb2,
        Permission_pb2,
        Project_pb2,
        SavedDataset_pb2,
        StreamFeatureView_pb2,
        ValidationProfile_pb2,
    )

    return {
        "projects": Project_pb2.Project,
        "entities": Entity_pb2.Entity,
        "data_sources": DataSource_pb2.DataSource,
        "feature_views": FeatureView_pb2.FeatureView,
        "stream_feature_views": StreamFeatureView_pb2.StreamFeatureView,
        "on_demand_feature_views": OnDemandFeatureView_pb2.OnDemandFeatureView,
        "feature_services": FeatureService_pb2.FeatureService,
        "saved_datasets": SavedDataset_pb2.SavedDataset,
        "validation_references": ValidationProfile_pb2.ValidationReference,
        "managed_infra": InfraObject_pb2.Infra,
        "permissions": Permission_pb2.Permission,
        "feature_view_version_history:feature_view": FeatureView_pb2.FeatureView,
        "feature_view_version_history:stream_feature_view": StreamFeatureView_pb2.StreamFeatureView,
        "feature_view_version_history:on_demand_feature_view": OnDemandFeatureView_pb2.OnDemandFeatureView,
    }


def rewrite_message(msg: Any, rw: Rewriter) -> int:
    """Rewrite every string field of a protobuf message in place (nested messages, repeated
    fields and maps included); returns how many strings changed."""
    from google.protobuf.descriptor import FieldDescriptor as FD

    changed = 0
    for fd, value in msg.ListFields():
        is_map = fd.message_type is not None and fd.message_type.GetOptions().map_entry
        if is_map:
            value_fd = fd.message_type.fields_by_name["value"]
            for k in list(value):
                if value_fd.type == FD.TYPE_MESSAGE:
                    changed += rewrite_message(value[k], rw)
                elif value_fd.type == FD.TYPE_STRING:
                    new, n = rw.text(value[k])
                    if n:
                        value[k], changed = new, changed + 1
        elif fd.type == FD.TYPE_MESSAGE:
            for sub in value if fd.is_repeated else [value]:
                changed += rewrite_message(sub, rw)
        elif fd.type == FD.TYPE_STRING:
            if fd.is_repeated:
                for i, s in enumerate(value):
                    new, n = rw.text(s)
                    if n:
                        value[i], changed = new, changed + 1
            else:
                new, n = rw.text(value)
                if n:
                    setattr(msg, fd.name, new)
                    changed += 1
    return changed


def _proto_value(blob: bytes, cls: Any, rw: Rewriter) -> tuple[bytes, int] | None:
    """A Feast proto with the home rewritten (and how many strings changed); None when the bytes
    are not that message (they must read back to exactly the same bytes, or they are left alone)."""
    if cls is None:
        return None
    msg = cls()
    try:
        msg.ParseFromString(blob)
    except Exception:
        return None
    if msg.SerializeToString() != blob:
        return None
    n = rewrite_message(msg, rw)
    return msg.SerializeToString(), n


def rewrite_sqlite(db: Path, rw: Rewriter, count: StoreCount, dry_run: bool) -> None:
    """Rewrite every text value naming the old home in every table of a SQLite file, and the
    Feast registry's protos, in one transaction."""
    protos: dict[str, Any] | None = None
    con = sqlite3.connect(db, timeout=0)
    try:
        con.execute("BEGIN IMMEDIATE")
        tables = con.execute(
            "SELECT name, sql FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
        ).fetchall()
        for table, sql in tables:
            info = list(con.execute(f'PRAGMA table_info("{table}")'))
            cols = [r[1] for r in info]
            # a WITHOUT ROWID table (our online store's) is addressed by its primary key
            keys = (
                [r[1] for r in sorted(info, key=lambda r: r[5]) if r[5]]
                if "WITHOUT ROWID" in (sql or "").upper()
                else ["rowid"]
            )
            where = " OR ".join(f'instr(CAST("{c}" AS BLOB), ?) > 0' for c in cols)
            select = ", ".join(f'"{c}"' for c in [*keys, *cols])
            for needle in rw.needles:
                rows = con.execute(f'SELECT {select} FROM "{table}" WHERE {where}', [needle] * len(cols)).fetchall()
                for found in rows:
                    key_values, values = found[: len(keys)], found[len(keys) :]
                    updates = {}
                    row = dict(zip(cols, values, strict=True))
                    for col, value in row.items():
                        if isinstance(value, str) and rw.mentions(value):
                            new, n = rw.text(value)
                        elif isinstance(value, bytes) and rw.mentions(value):
                            if protos is None:
                                protos = _feast_proto_classes()
                            key = table
                            if table == "feature_view_version_history":
                                key = f"{table}:{row.get('feature_view_type')}"
                            done = _proto_value(value, protos.get(key) if col.endswith("_proto") else None, rw)
                            if done is None:
                                count.left += 1
                                continue
                            new, n = done
                        else:
                            continue
                        if n:
                            updates[col] = new
                            count.values += n
                    if updates:
                        count.rows += 1
                        sets = ", ".join(f'"{c}" = ?' for c in updates)
                        match = " AND ".join(f'"{k}" IS ?' for k in keys)
                        con.execute(f'UPDATE "{table}" SET {sets} WHERE {match}', [*updates.values(), *key_values])
        if dry_run:
            con.rollback()
        else:
            con.commit()
    finally:
        con.close()


def rewrite_text_file(path: Path, rw: Rewriter, count: StoreCount, dry_run: bool) -> None:
    try:
        if path.stat().st_size > MAX_TEXT_BYTES:
            return
        data = path.read_bytes()
    except OSError:
        return
    if not rw.mentions(data):
        return
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        count.left += 1  # binary (a parquet's metadata, a pickle): not ours to edit
        return
    new, n = rw.text(text)
    if not n:
        return
    count.values += n
    count.rows += 1
    if not dry_run:
        tmp = path.with_name(f".{path.name}.rebase{os.getpid()}")
        tmp.write_text(new, encoding="utf-8")
        os.chmod(tmp, path.stat().st_mode & 0o7777)
        tmp.replace(path)
