"""Moving a home: rewrite the absolute paths a `MLOPS_HOME` holds after it was copied or moved.

MLflow, Feast and Airflow keep absolute locations in their state and none of them resolves a
relative one against the home (MLflow resolves `./mlartifacts` against the process's working
directory, Feast a relative `FileSource` path against the feature repo, which is not in the home).
So a copied home still points at the original: its runs' artifacts, its model versions' sources,
its Feast source and its training tags name files under the old directory, and a copy whose
original was deleted cannot load its champion. `rebase` rewrites them in place:

| store | what holds the old home |
|---|---|
| `mlflow.db` | experiments.artifact_location, runs.artifact_uri, logged_models.artifact_location, model_versions.source and storage_location, datasets.dataset_source, run tags (mlops.train_uri, holdout_uri), model version tags (validation report) |
| `feast_registry.db` | the FileSource path inside the data source, feature view and feature service protos (and the feature view history) |
| `airflow/airflow.db` (when Airflow's home is in the home) | any text that names the home: XCom step outputs with store URIs, ... |
| text files (`MLmodel`, JSON, YAML, cfg, ...) | `artifact_path` in each model's `MLmodel`, and any other text naming the home |

Every occurrence of the old home, as a path or inside a `file://` URI (also percent-encoded), is
replaced by the new one when it is the whole home (followed by `/`, the end, or punctuation, never
by more of a file name: `/data/home2` is not under `/data/home`). A second run finds nothing to do.
Logs (`logs/` folders) are left as they are: they record what ran where. Binary values that are
not Feast protos are counted and left, so the command says what it could not rewrite.

It refuses to run while anything uses the home: a process with a file of the home open or the
home on its command line (an MLflow server, Airflow, the scoring service, Evidently's UI), a live
pid file, or a locked SQLite database.
"""

from __future__ import annotations

import os
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

SQLITE_MAGIC = b"SQLite format 3\x00"
MAX_TEXT_BYTES = 64 * 1024 * 1024
SKIP_DIRS = {"logs", "__pycache__", ".git"}
SQLITE_SIDECARS = ("-wal", "-shm", "-journal")


class HomeMoveError(Exception):
    """The home cannot be rebased now (in use, or the paths given do not make sense)."""


@dataclass
class StoreCount:
    """What one store held of the old home: values rewritten, rows or files touched, values left."""

    values: int = 0
    rows: int = 0
    left: int = 0


@dataclass
class RebaseReport:
    old: str
    new: str
    dry_run: bool
    stores: dict[str, StoreCount] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> int:
        return sum(c.values for c in self.stores.values())

    def count(self, store: str) -> StoreCount:
        return self.stores.setdefault(store, StoreCount())

    def lines(self) -> list[str]:
        verb = "would rewrite" if self.dry_run else "rewrote"
        out = [f"{self.old} -> {self.new}"]
        for name, c in sorted(self.stores.items()):
            left = f", {c.left} binary value(s) left" if c.left else ""
            out.append(f"  {name}: {verb} {c.values} value(s) in {c.rows} row(s)/file(s){left}")
        if not self.changed:
            out.append("  nothing names the old home: nothing to do")
        out.extend(f"  note: {n}" for n in self.notes)
        return out


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


# -- in use? ------------------------------------------------------------------------------------
def _ancestors() -> set[int]:
    """This process and its parents (a shell sitting in the home is not using it)."""
    pids, pid = set(), os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            pid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def _under(path: str, home: str) -> bool:
    return path == home or path.startswith(home + "/")


def users(home: Path) -> list[str]:
    """Who uses the home now: processes with one of its files open or it on their command line,
    and live pid files under it. Other users' processes are invisible without privileges."""
    home_s, mine, found = str(home), _ancestors(), []
    word = re.compile(re.escape(home_s) + r"(?![\w.\-~])")
    proc = Path("/proc")
    for entry in proc.iterdir() if proc.is_dir() else []:
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        why = "has the home on its command line" if word.search(cmd) else None
        if why is None:
            try:
                for fd in (entry / "fd").iterdir():
                    target = os.readlink(fd)
                    if _under(target, home_s):
                        why = f"has {target} open"
                        break
            except OSError:
                pass
        if why:
            found.append(f"pid {entry.name} ({cmd[:120]}) {why}")
    for pid_file in _walk(home, suffixes=(".pid",)):
        try:
            pid = int(pid_file.read_text().split()[0])
            os.kill(pid, 0)
        except (OSError, ValueError, IndexError):
            continue  # stale or unreadable
        if pid not in mine and not any(f"pid {pid} " in f for f in found):
            found.append(f"pid {pid} is alive (pid file {pid_file})")
    return found


def _locked(db: Path) -> str | None:
    try:
        con = sqlite3.connect(db, timeout=0)
        try:
            con.execute("BEGIN IMMEDIATE")
            con.rollback()
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        return f"{db}: {exc}"
    return None


# -- finding the stores ---------------------------------------------------------------------------
def _walk(home: Path, suffixes: tuple[str, ...] | None = None) -> list[Path]:
    out = []
    for root, dirs, files in os.walk(home):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        for name in sorted(files):
            if suffixes is None or name.endswith(suffixes):
                out.append(Path(root) / name)
    return out


def _is_sqlite(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return fh.read(16) == SQLITE_MAGIC
    except OSError:
        return False


def sqlite_files(home: Path) -> list[Path]:
    return [p for p in _walk(home) if not p.name.endswith(SQLITE_SIDECARS) and _is_sqlite(p)]


def detect_old_home(home: Path) -> Path | None:
    """The home this one was copied from, as MLflow's artifact locations name it (the embedded
    default keeps artifacts in `<home>/mlartifacts`); None when they already name this home or
    when there is no local MLflow database."""
    db = home / "mlflow.db"
    if not _is_sqlite(db):
        return None
    pattern = re.compile(r"^(?:file://)?(/.*?)/mlartifacts(?:/|$)")
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        values = [r[0] for r in con.execute("SELECT artifact_location FROM experiments")]
        values += [r[0] for r in con.execute("SELECT artifact_uri FROM runs")]
    except sqlite3.DatabaseError:
        return None
    finally:
        con.close()
    homes = {m.group(1) for v in values if v and (m := pattern.match(v))}
    homes = {unquote(h) for h in homes} - {str(home)}
    if len(homes) > 1:
        raise HomeMoveError(f"{db} names several earlier homes ({', '.join(sorted(homes))}): say which with --from")
    return Path(homes.pop()) if homes else None


# -- rewriting ------------------------------------------------------------------------------------
def _feast_proto_classes() -> dict[str, Any]:
    from include.mlops.feast_import import without_typeguard

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


def rebase(home: Path, old: Path | None = None, dry_run: bool = False) -> RebaseReport:
    """Point every store under `home` at `home` instead of `old` (found in MLflow when not given).

    Run it on the copy (or the moved home) while nothing uses it; safe to run again."""
    home = Path(home).absolute()
    if not home.is_dir():
        raise HomeMoveError(f"{home} is not a directory: give the copied home (MLOPS_HOME or --home)")
    home = home.resolve()
    if old is None:
        old = detect_old_home(home)
        if old is None:
            report = RebaseReport(str(home), str(home), dry_run)
            report.notes.append("MLflow's artifact locations already name this home; pass --from to force a prefix")
            return report
    old = Path(os.path.abspath(old))
    if old == home:
        return RebaseReport(str(old), str(home), dry_run)
    if _under(str(home), str(old)) or _under(str(old), str(home)):
        raise HomeMoveError(
            f"{home} and {old} are inside one another: a rewrite could not be told apart from the "
            f"original on a second run; copy the home beside the original, not into it"
        )
    busy = users(home)
    dbs = sqlite_files(home)
    busy += [why for db in dbs if (why := _locked(db))]
    if busy:
        raise HomeMoveError(
            f"{home} is in use; stop these first (e.g. `make down` / the stack's Ctrl-C), then run again:\n  "
            + "\n  ".join(busy)
        )
    rw = Rewriter(old, home)
    report = RebaseReport(str(old), str(home), dry_run)
    for db in dbs:
        rewrite_sqlite(db, rw, report.count(str(db.relative_to(home))), dry_run)
    skip = set(dbs)
    text = report.count("text files")
    for path in _walk(home):
        if path in skip or path.name.endswith(SQLITE_SIDECARS) or path.suffix == ".parquet":
            continue
        rewrite_text_file(path, rw, text, dry_run)
    if old.exists():
        report.notes.append(f"{old} still exists; this home no longer refers to it")
    return report
