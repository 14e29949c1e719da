"""One object-store API over `file://` and `s3://`; every step reads and writes through it.

Both are fsspec filesystems: s3fs for `s3://` (an optional endpoint for MinIO or moto,
credentials from the usual AWS variables), and fsspec's local filesystem for `file://`, with
whole-file writes made atomic. So the production stack and the laptop default run the same
code. Writes are whole-object overwrites, which is what makes the tasks idempotent: re-running
an interval rewrites the same keys.
"""

from __future__ import annotations

import functools
import io
import os
import threading
from dataclasses import dataclass
from glob import has_magic
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

if TYPE_CHECKING:
    import pandas as pd
    from fsspec import AbstractFileSystem


class UnsafeKeyError(ValueError):
    """A key that would leave the store's root (`..`, a backslash, a NUL, or a link that points out)."""


class StoreError(OSError):
    """The store failed to do what was asked (a missing object is FileNotFoundError instead)."""


def checked_key(key: str, root: str) -> str:
    """`key` without its leading slashes, or UnsafeKeyError if it could escape `root`. Keys are
    built from spec names and days; a spec that smuggles `../` into one must not reach the disk."""
    k = key.lstrip("/")
    if "\\" in k or "\x00" in k or any(part == ".." for part in k.split("/")):
        raise UnsafeKeyError(f"object-store key {key!r} would leave the store root {root}: keys never hold '..'")
    return k


@dataclass(frozen=True)
class ObjectStore:
    """A bucket-like root (`file:///abs/dir` or `s3://bucket/prefix`) and keys below it."""

    root: str
    endpoint_url: str | None = None

    # -- addressing -------------------------------------------------------------------------
    @functools.cached_property
    def scheme(self) -> str:
        return urlparse(self.root).scheme or "file"

    def uri(self, key: str) -> str:
        return f"{self.root.rstrip('/')}/{key.lstrip('/')}"

    def key_of(self, uri: str) -> str:
        """The key of a URI under this store's root."""
        root = self.root.rstrip("/") + "/"
        if not uri.startswith(root):
            raise ValueError(f"{uri} is not under {self.root}")
        return uri[len(root) :]

    @functools.cached_property
    def _base(self) -> str:
        """The root as its filesystem names it: `/abs/dir` or `bucket/prefix`."""
        u = urlparse(self.root)
        return str(Path(u.path)) if self.scheme == "file" else f"{u.netloc}/{u.path.strip('/')}".rstrip("/")

    @functools.cached_property
    def _root_dir(self) -> Path:
        return Path(self._base)

    @property
    def _fs(self) -> AbstractFileSystem:
        return _filesystem(self.scheme, self.endpoint_url)

    def _path(self, key: str) -> str:
        """The filesystem path of `key`; on disk, only once its real path (links resolved) is
        known to be under the root."""
        k = checked_key(key, self.root)
        if self.scheme != "file":
            return f"{self._base}/{k}" if k else self._base
        path = self._root_dir / k
        _inside(path, self._root_dir, key, self.root)
        return str(path)

    def _key(self, path: str) -> str:
        """The key of a filesystem path, which must lie under the root."""
        base = self._base.rstrip("/") + "/"
        if not path.startswith(base):
            raise UnsafeKeyError(f"object {path!r} is not under the store root {self.root}")
        return path[len(base) :]

    def _bucket_key(self, key: str) -> tuple[str, str]:
        """(bucket, object key) of `key` in an s3:// store."""
        bucket, _, full = self._path(key).partition("/")
        return bucket, full

    def _s3_key_of(self, full: str) -> str:
        """The key (relative to the root) of an S3 object key, which must lie under the root's prefix."""
        return self._key(f"{urlparse(self.root).netloc}/{full}")

    def _naming(self, action: str, key: str) -> _Naming:
        return _Naming(self.root, action, key)

    # -- bytes ------------------------------------------------------------------------------
    def put_bytes(self, key: str, data: bytes) -> str:
        path = self._path(key)
        with self._naming("write", key):
            self._fs.pipe_file(path, data)
        return self.uri(key)

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        with self._naming("read", key):
            return self._fs.cat_file(path)

    def put_text(self, key: str, text: str) -> str:
        return self.put_bytes(key, text.encode())

    def get_text(self, key: str) -> str:
        return self.get_bytes(key).decode()

    def put_json(self, key: str, obj: Any) -> str:
        import json

        return self.put_text(key, json.dumps(obj, indent=2, sort_keys=True, default=str))

    def get_json(self, key: str) -> Any:
        import json

        return json.loads(self.get_text(key))

    def exists(self, key: str) -> bool:
        """Whether `key` is an object (a prefix with objects below it is not)."""
        path = self._path(key)
        with self._naming("look up", key):
            try:
                return self._fs.info(path)["type"] == "file"
            except (FileNotFoundError, NotADirectoryError):
                return False

    def list(self, prefix: str) -> list[str]:
        """Keys (relative to the root) under a prefix, sorted; hidden (dot) files excluded. The
        prefix names a directory or one object, never part of a name."""
        return sorted(self._key(p) for p in self._objects(prefix))

    def delete_prefix(self, prefix: str) -> int:
        """Delete the objects `list(prefix)` names (every object under a prefix, or the one it
        names); how many there were."""
        if not checked_key(prefix, self.root).strip("/"):
            raise ValueError(f"delete_prefix needs a prefix below the store root {self.root}, not the whole store")
        paths = self._objects(prefix)
        with self._naming("delete", prefix):
            literal = [p for p in paths if not has_magic(p)]  # fsspec reads *, ?, [ as a glob
            if literal:
                self._fs.rm(literal)  # on S3 one DeleteObjects per 1,000
            for p in paths:
                if has_magic(p):
                    self._fs.rm_file(p)
        return len(paths)

    def _objects(self, prefix: str) -> list[str]:
        """Filesystem paths of the objects at or below `prefix`, hidden files left out; a link
        out of a local store is refused, not listed."""
        base = self._path(prefix).rstrip("/")
        parent, _, name = base.rpartition("/")
        with self._naming("list", prefix):
            if self.scheme == "s3" and parent:
                # one LIST, the name as a key prefix, kept to the name itself or below it:
                # find(base) adds a HEAD and a second LIST when nothing is there (~30% slower)
                found = [p for p in self._fs.find(parent, prefix=name) if p == base or p.startswith(base + "/")]
            else:
                found = self._fs.find(base)
        paths = [p for p in found if not p.rsplit("/", 1)[-1].startswith(".")]
        for p in paths:
            self._path(self._key(p))
        return paths

    def copy(self, src_key: str, dst_key: str) -> str:
        src, dst = self._path(src_key), self._path(dst_key)
        with self._naming(f"copy to {dst_key!r}", src_key):
            self._fs.cp_file(src, dst)
        return self.uri(dst_key)

    # -- tables -----------------------------------------------------------------------------
    def put_parquet(self, key: str, df: pd.DataFrame) -> str:
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        return self.put_bytes(key, buf.getvalue())

    def get_parquet(self, key: str, **options: Any) -> pd.DataFrame:
        """A parquet object as a DataFrame; `options` go to `pandas.read_parquet` (and pyarrow)."""
        import pandas as pd

        return pd.read_parquet(io.BytesIO(self.get_bytes(key)), **options)

    def read_parquet_prefix(self, prefix: str) -> pd.DataFrame:
        """All parquet objects under a prefix, concatenated (empty frame if none)."""
        import pandas as pd

        keys = [k for k in self.list(prefix) if k.endswith(".parquet")]
        if not keys:
            return pd.DataFrame()
        return pd.concat([self.get_parquet(k) for k in keys], ignore_index=True)

    def local_path(self, key: str) -> str:
        """A filesystem path for tools that only read files (file:// stores only)."""
        if self.scheme != "file":
            raise ValueError(f"{self.root} is not a local store")
        return self._path(key)


def _inside(path: Path, root: Path, key: str, store_root: str) -> None:
    """UnsafeKeyError unless `path`, with every link on the way resolved, is `root` or below it."""
    real, real_root = path.resolve(), root.resolve()
    if real != real_root and not real.is_relative_to(real_root):
        raise UnsafeKeyError(
            f"object-store key {key!r} resolves to {real}, outside the store root {store_root}: a link inside "
            "the store points out of it; remove the link (the platform never writes one)"
        )


class _Naming:
    """Re-raises what the filesystem raised naming the key and the store: FileNotFoundError and
    PermissionError keep their class, any other store failure becomes a StoreError. (A class, not
    a generator context manager: it wraps every call, and costs a tenth as much.)"""

    __slots__ = ("action", "key", "root")

    def __init__(self, root: str, action: str, key: str) -> None:
        self.root, self.action, self.key = root, action, key

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc is None or isinstance(exc, UnsafeKeyError):
            return
        what = f"could not {self.action} {self.key!r} in the store {self.root}"
        if isinstance(exc, FileNotFoundError | PermissionError):
            raise type(exc)(f"{what}: {exc}") from exc
        if isinstance(exc, _backend_errors()):
            raise StoreError(f"{what}: {type(exc).__name__}: {exc}") from exc


def _backend_errors() -> tuple[type[BaseException], ...]:
    """What a store failure raises: OSError (s3fs translates most S3 errors to it) or botocore's
    own errors. Evaluated only when something was raised, so botocore is imported only then."""
    from botocore.exceptions import BotoCoreError, ClientError

    return (OSError, BotoCoreError, ClientError)


def _filesystem(scheme: str, endpoint_url: str | None) -> AbstractFileSystem:
    if scheme == "file":
        return _local_filesystem()
    if scheme == "s3":
        aws_env = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_")))
        return _s3_filesystem(endpoint_url, os.getpid(), aws_env)
    raise ValueError(f"object-store scheme {scheme!r} is not supported: set MLOPS_STORE_URI to file:///… or s3://…")


@functools.lru_cache(maxsize=8)
def _s3_filesystem(endpoint_url: str | None, pid: int, aws_env: tuple[tuple[str, str], ...]) -> AbstractFileSystem:
    """One s3fs filesystem per process and AWS environment. Per process: its event loop and
    connections do not survive a fork (Celery and Airflow fork workers). Per environment: the
    credentials, region and retry settings are read when its client is made."""
    import s3fs

    fs = s3fs.S3FileSystem(
        endpoint_url=endpoint_url,
        skip_instance_cache=True,  # cached here, by process and environment, instead
        use_listings_cache=False,  # a listing must see what another process has just written
        max_concurrency=1,  # a read is one GET (no HEAD first to split it into ranges)
        config_kwargs={"connect_timeout": 60, "read_timeout": 60},  # botocore's defaults, not s3fs's 5/15 s
    )
    fs.retries = 1  # only botocore retries (AWS_MAX_ATTEMPTS, AWS_RETRY_MODE), as with boto3
    return fs


@functools.cache
def _local_filesystem() -> AbstractFileSystem:
    from fsspec.implementations.local import LocalFileSystem

    class AtomicLocalFileSystem(LocalFileSystem):
        """fsspec's local filesystem writing like an object store: a whole file, atomically."""

        def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
            p = Path(path)
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_name(f".{p.name}.tmp{os.getpid()}-{threading.get_ident()}")
            tmp.write_bytes(value)
            tmp.replace(p)  # atomic on one filesystem: readers never see half a file

        def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any) -> bytes:
            if start is None and end is None:
                return Path(path).read_bytes()  # half the time of fsspec's file object
            return super().cat_file(path, start, end, **kwargs)

        def find(self, path: str, maxdepth: int | None = None, withdirs: bool = False, **kwargs: Any) -> Any:
            if not os.path.lexists(self._strip_protocol(path)):  # a third of the time for a missing prefix
                return {} if kwargs.get("detail") else []
            return super().find(path, maxdepth=maxdepth, withdirs=withdirs, **kwargs)

        def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
            self.pipe_file(path2, self.cat_file(path1))

    return AtomicLocalFileSystem(skip_instance_cache=True)


def get_store() -> ObjectStore:
    """The platform's store, from the environment (see config.Settings)."""
    from include.mlops.config import get_settings

    s = get_settings()
    return ObjectStore(root=s.store_uri, endpoint_url=s.s3_endpoint_url)


def ensure_bucket(store: ObjectStore) -> None:
    """Create the store's root, with the bucket of an s3:// store, if missing (MinIO/moto start empty)."""
    with store._naming("create", ""):
        store._fs.makedirs(store._path(""), exist_ok=True)
