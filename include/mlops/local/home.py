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
from urllib.parse import unquote

from include.mlops.local.home_rewrite import Rewriter, StoreCount, rewrite_sqlite, rewrite_text_file

SQLITE_MAGIC = b"SQLite format 3\x00"
SKIP_DIRS = {"logs", "__pycache__", ".git"}
SQLITE_SIDECARS = ("-wal", "-shm", "-journal")


class HomeMoveError(Exception):
    """The home cannot be rebased now (in use, or the paths given do not make sense)."""


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
