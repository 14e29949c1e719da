"""The object store's hot paths on `file://` and on S3 (moto's server on loopback).

Per backend, in a fresh root: `--small` objects of 1 KiB put, got back, checked with `exists`
(present and absent keys), listed, copied and deleted; then `--large` parquet objects of
`--rows` rows each put, read back one by one and as one prefix (`read_parquet_prefix`).
Every figure is the median of `--rounds` rounds, in milliseconds per operation (`*_ms`) or per
call for the listing and the prefix reads. `--against FILE` times another storage module (an
older `storage.py`) in the same run, rounds interleaved, so both see the same load on a shared
machine; its figures are keyed by the file's name.

    PYTHONPATH=. .venv/bin/python -m bench.storage --small 300 --large 3 --rows 200000 \
        --against /tmp/storage_before.py
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

from bench.common import machine, merge_results, out_path

OUT = out_path("storage")


@contextmanager
def moto_server() -> Iterator[str]:
    """moto's S3 server in its own process on a free loopback port (as tests/conftest.py starts it)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("moto_server did not start within 30 s") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def load_module(path: str | None) -> ModuleType:
    """The project's storage module, or another copy of it from a file (`--against`)."""
    if path is None:
        from include.mlops import storage

        return storage
    spec = importlib.util.spec_from_file_location(f"storage_{Path(path).stem}", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def _per_op(out: dict[str, float], name: str, n: int, fn: Callable[[], Any]) -> Any:
    t = time.perf_counter()
    result = fn()
    out[name] = (time.perf_counter() - t) * 1000 / n
    return result


def one_round(store: Any, small: int, frames: list[Any]) -> dict[str, float]:
    """One pass over every timed operation in a fresh store; milliseconds per operation."""
    out: dict[str, float] = {}
    payload = os.urandom(1024)
    keys = [f"small/part={i % 10}/obj-{i:05d}.bin" for i in range(small)]
    _per_op(out, "put_small_ms", small, lambda: [store.put_bytes(k, payload) for k in keys])
    got = _per_op(out, "get_small_ms", small, lambda: [store.get_bytes(k) for k in keys])
    assert all(g == payload for g in got)
    hits = _per_op(out, "exists_hit_ms", small, lambda: [store.exists(k) for k in keys])
    misses = _per_op(out, "exists_miss_ms", small, lambda: [store.exists(k + ".missing") for k in keys])
    assert all(hits) and not any(misses)
    listed = _per_op(out, "list_small_ms", 5, lambda: [store.list("small/") for _ in range(5)])
    assert listed[0] == sorted(keys), "the listing must see every object just written"
    absent = [f"absent/dt=2026-10-{i % 28 + 1:02d}/" for i in range(20)]
    _per_op(out, "list_missing_ms", len(absent), lambda: [store.list(p) for p in absent])
    _per_op(out, "delete_prefix_missing_ms", len(absent), lambda: [store.delete_prefix(p) for p in absent])
    few = keys[: max(1, small // 10)]
    _per_op(out, "copy_small_ms", len(few), lambda: [store.copy(k, "copied/" + k) for k in few])
    _per_op(out, "delete_prefix_small_ms", 1, lambda: store.delete_prefix("small/"))
    assert store.list("small/") == [], "a listing after a delete must not see the deleted objects"
    big = [f"large/dt=2026-10-0{i + 1}/part.parquet" for i in range(len(frames))]
    _per_op(
        out,
        "put_parquet_large_ms",
        len(big),
        lambda: [store.put_parquet(k, f) for k, f in zip(big, frames, strict=True)],
    )
    _per_op(out, "get_parquet_large_ms", len(big), lambda: [store.get_parquet(k) for k in big])
    whole = _per_op(out, "read_parquet_prefix_large_ms", 1, lambda: store.read_parquet_prefix("large/"))
    assert len(whole) == sum(len(f) for f in frames)
    return out


def frames_of(n: int, rows: int) -> list[Any]:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(7)
    return [
        pd.DataFrame(
            {
                "customer_id": np.arange(rows) + i * rows,
                "amount": rng.normal(size=rows),
                "plan": rng.choice(["basic", "pro", "team"], size=rows),
                "ts": pd.Timestamp("2026-10-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 86400, rows), "s"),
            }
        )
        for i in range(n)
    ]


def roots(endpoint: str, tmp: Path) -> dict[str, Callable[[], str]]:
    """A fresh root per round and backend (nothing left from the previous round)."""
    return {
        "file": lambda: f"file://{tmp}/{uuid.uuid4().hex}",
        "s3": lambda: f"s3://bench-{uuid.uuid4().hex[:12]}/store",
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    for k, v in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        os.environ.setdefault(k, v)
    impls = {"current": load_module(None)}
    if args.against:
        impls[Path(args.against).stem] = load_module(args.against)
    frames = frames_of(args.large, args.rows)
    samples: dict[str, dict[str, list[dict[str, float]]]] = {}
    with moto_server() as endpoint, tempfile.TemporaryDirectory(prefix="bench-storage-") as tmp:
        for backend, root_of in roots(endpoint, Path(tmp)).items():
            if backend not in args.backends:
                continue
            for r in range(args.rounds):
                for name, mod in impls.items():
                    store = mod.ObjectStore(root_of(), endpoint_url=endpoint if backend == "s3" else None)
                    mod.ensure_bucket(store)
                    figures = one_round(store, args.small, frames)
                    samples.setdefault(backend, {}).setdefault(name, []).append(figures)
                    print(f"[{backend}] round {r + 1} {name}: {_fmt(figures)}", file=sys.stderr, flush=True)
    return {
        backend: {name: _median(rounds) for name, rounds in by_impl.items()} for backend, by_impl in samples.items()
    }


def _median(rounds: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(statistics.median(r[k] for r in rounds), 3) for k in rounds[0]}


def _fmt(figures: dict[str, float]) -> str:
    return " ".join(f"{k.removesuffix('_ms')}={v:.2f}" for k, v in figures.items())


def table(result: dict[str, Any]) -> str:
    """Rows: operation; columns: each backend and module, ms per operation; ratio to the first."""
    lines = []
    for backend, by_impl in result.items():
        names = list(by_impl)
        lines.append(f"{backend:<6} {'operation':<30}" + "".join(f"{n:>22}" for n in names) + "   first/second")
        for op in by_impl[names[0]]:
            vals = [by_impl[n][op] for n in names]
            ratio = f"{vals[0] / vals[1]:.2f}" if len(vals) > 1 and vals[1] else ""
            lines.append(f"{'':<6} {op:<30}" + "".join(f"{v:>22.3f}" for v in vals) + f"   {ratio}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=int, default=300, help="small objects per round")
    ap.add_argument("--large", type=int, default=3, help="large parquet objects per round")
    ap.add_argument("--rows", type=int, default=200_000, help="rows of each large parquet object")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--backends", nargs="+", default=["file", "s3"], choices=["file", "s3"])
    ap.add_argument("--against", help="another storage.py to time in the same run (e.g. the previous version)")
    args = ap.parse_args()
    result = run(args)
    print(table(result))
    command = "python -m bench.storage " + " ".join(sys.argv[1:])
    merge_results(
        {"commands": {"storage": command}, "machine": machine(), "storage": {**result, "command": command}}, OUT
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
