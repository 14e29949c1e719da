"""One object-store API over `file://` and `s3://`; every step reads and writes through it.

The S3 side uses boto3 with an optional endpoint (MinIO, moto), so the production stack and the
laptop default run the same code path. Writes are whole-object overwrites, which is what makes
the tasks idempotent: re-running an interval rewrites the same keys.
"""

from __future__ import annotations

import io
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

if TYPE_CHECKING:
    import pandas as pd


class UnsafeKeyError(ValueError):
    """A key that would leave the store's root (`..`, a backslash, a NUL, or a link that points out)."""


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
    @property
    def scheme(self) -> str:
        return urlparse(self.root).scheme or "file"

    def uri(self, key: str) -> str:
        return f"{self.root.rstrip('/')}/{key.lstrip('/')}"

    def _local(self, key: str) -> Path:
        """The file of `key`, once its real path (links resolved) is known to be under the root."""
        root = Path(urlparse(self.root).path)
        path = root / checked_key(key, self.root)
        _inside(path, root, key, self.root)
        return path

    def _bucket_key(self, key: str) -> tuple[str, str]:
        u = urlparse(self.root)
        prefix = u.path.strip("/")
        k = checked_key(key, self.root)
        full = f"{prefix}/{k}" if prefix else k
        return u.netloc, full

    def _s3_key_of(self, full: str) -> str:
        """The key (relative to the root) of an S3 object key, which must lie under the root's prefix."""
        _, root_prefix = self._bucket_key("")
        if not full.startswith(root_prefix):
            raise UnsafeKeyError(f"S3 object {full!r} is not under the store root {self.root}")
        return full[len(root_prefix) :]

    def key_of(self, uri: str) -> str:
        """The key of a URI under this store's root."""
        root = self.root.rstrip("/") + "/"
        if not uri.startswith(root):
            raise ValueError(f"{uri} is not under {self.root}")
        return uri[len(root) :]

    def _s3(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url)

    # -- bytes ------------------------------------------------------------------------------
    def put_bytes(self, key: str, data: bytes) -> str:
        if self.scheme == "s3":
            bucket, k = self._bucket_key(key)
            self._s3().put_object(Bucket=bucket, Key=k, Body=data)
        else:
            p = self._local(key)
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
            tmp.write_bytes(data)
            tmp.replace(p)  # atomic on one filesystem: readers never see half a file
        return self.uri(key)

    def get_bytes(self, key: str) -> bytes:
        if self.scheme == "s3":
            bucket, k = self._bucket_key(key)
            try:
                return self._s3().get_object(Bucket=bucket, Key=k)["Body"].read()
            except Exception as exc:  # botocore's NoSuchKey is generated per client
                if "NoSuchKey" in type(exc).__name__ or "NoSuchKey" in str(exc):
                    raise FileNotFoundError(self.uri(key)) from exc
                raise
        return self._local(key).read_bytes()

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
        if self.scheme == "s3":
            bucket, k = self._bucket_key(key)
            resp = self._s3().list_objects_v2(Bucket=bucket, Prefix=k, MaxKeys=1)
            return any(o["Key"] == k for o in resp.get("Contents", []))
        return self._local(key).is_file()

    def list(self, prefix: str) -> list[str]:
        """Keys (relative to the root) under a prefix, sorted; hidden temp files excluded."""
        if self.scheme == "s3":
            bucket, k = self._bucket_key(prefix)
            keys: list[str] = []
            for page in self._s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=k):
                keys.extend(self._s3_key_of(o["Key"]) for o in page.get("Contents", []))
            return sorted(keys)
        base = self._local(prefix)
        if base.is_file():
            return [prefix]
        if not base.exists():
            return []
        root = self._local("")
        keys = [str(p.relative_to(root)) for p in base.rglob("*") if p.is_file() and not p.name.startswith(".")]
        for k in keys:  # a file that is a link out of the store is refused, not listed
            self._local(k)
        return sorted(keys)

    def delete_prefix(self, prefix: str) -> int:
        keys = self.list(prefix)
        if self.scheme == "s3":
            bucket, _ = self._bucket_key("")
            client = self._s3()
            for i in range(0, len(keys), 1000):
                objs = [{"Key": self._bucket_key(k)[1]} for k in keys[i : i + 1000]]
                client.delete_objects(Bucket=bucket, Delete={"Objects": objs})
        else:
            base = self._local(prefix)
            if base.is_dir():
                shutil.rmtree(base)
            elif base.exists():
                base.unlink()
        return len(keys)

    def copy(self, src_key: str, dst_key: str) -> str:
        if self.scheme == "s3":
            bucket, s = self._bucket_key(src_key)
            _, d = self._bucket_key(dst_key)
            self._s3().copy_object(Bucket=bucket, Key=d, CopySource={"Bucket": bucket, "Key": s})
            return self.uri(dst_key)
        return self.put_bytes(dst_key, self.get_bytes(src_key))

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
        return str(self._local(key))


def _inside(path: Path, root: Path, key: str, store_root: str) -> None:
    """UnsafeKeyError unless `path`, with every link on the way resolved, is `root` or below it."""
    real, real_root = path.resolve(), root.resolve()
    if real != real_root and not real.is_relative_to(real_root):
        raise UnsafeKeyError(
            f"object-store key {key!r} resolves to {real}, outside the store root {store_root}: a link inside "
            "the store points out of it; remove the link (the platform never writes one)"
        )


def get_store() -> ObjectStore:
    """The platform's store, from the environment (see config.Settings)."""
    from include.mlops.config import get_settings

    s = get_settings()
    return ObjectStore(root=s.store_uri, endpoint_url=s.s3_endpoint_url)


def ensure_bucket(store: ObjectStore) -> None:
    """Create the bucket of an s3:// store if it does not exist (MinIO/moto start empty)."""
    if store.scheme != "s3":
        Path(urlparse(store.root).path).mkdir(parents=True, exist_ok=True)
        return
    bucket, _ = store._bucket_key("")
    client = store._s3()
    try:
        client.head_bucket(Bucket=bucket)
    except Exception:
        client.create_bucket(Bucket=bucket)
