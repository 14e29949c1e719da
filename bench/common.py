"""Shared helpers for the benchmarks: isolated homes, timers, peak memory, results files."""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# where figures go: bench/ for the full run (committed); `make bench` points BENCH_OUT at
# bench/small/ (ignored by git) for BENCH_SCALE=small, so a quick pass never overwrites them
OUT_DIR = Path(os.environ.get("BENCH_OUT") or ROOT / "bench")
RESULTS = OUT_DIR / "results.json"


def out_path(name: str) -> Path:
    """The results file of one benchmark: results_<name>.json in OUT_DIR."""
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    return OUT_DIR / f"results_{name}.json"


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextmanager
def timer(out: dict[str, float], key: str) -> Iterator[None]:
    t = time.perf_counter()
    yield
    out[key] = round(time.perf_counter() - t, 3)


def local_env(home: Path) -> dict[str, str]:
    from include.mlops.config import embedded_env

    return {**embedded_env(home), "AIRFLOW_HOME": str(home / "airflow"), "PYTHONPATH": str(ROOT)}


def run_json(args: list[str], env: dict[str, str], log: Path) -> dict[str, Any]:
    """Run a bench phase in a fresh process (own imports, own peak RSS); its last stdout line is JSON."""
    with log.open("ab") as fh:
        out = subprocess.run(
            [sys.executable, *args], env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=fh, cwd=ROOT, check=False
        )
    lines = out.stdout.decode().strip().splitlines()
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{args} failed ({out.returncode}); see {log}")
    return json.loads(lines[-1])


def machine() -> dict[str, Any]:
    from importlib.metadata import version

    pkgs = ["apache-airflow", "mlflow", "feast", "great-expectations", "evidently", "scikit-learn", "pandas", "pyarrow"]
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "platform": platform.platform(),
        "versions": {p: version(p) for p in pkgs},
    }


def merge_results(section: dict[str, Any], path: Path = RESULTS) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(path.read_text()) if path.exists() else {}

    def deep(a: dict, b: dict) -> dict:
        for k, v in b.items():
            a[k] = deep(a.get(k, {}), v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
        return a

    path.write_text(json.dumps(deep(data, section), indent=2, sort_keys=True))
