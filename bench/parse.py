"""DAG parse cost: the slowest DAG file's parse time beyond the bare `airflow.sdk` import, and any
heavy library found in sys.modules after parsing every DAG file. Each file is timed in a fresh
interpreter (best of `--runs`, 3 by default), as the dag-processor would see it cold.

    python -m bench.parse [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from bench.common import ROOT, merge_results

HEAVY = [
    "pandas",
    "numpy",
    "sklearn",
    "mlflow",
    "feast",
    "great_expectations",
    "evidently",
    "boto3",
    "scipy",
    "pyarrow",
    "matplotlib",
    "fastapi",
]
PROBE = r"""
import importlib.util, json, sys, time
sys.path[:0] = [{root!r}, {root!r} + "/plugins"]
t0 = time.perf_counter(); import airflow.sdk; base = time.perf_counter() - t0
before = set(sys.modules)
t = time.perf_counter()
for name in {files!r}:
    spec = importlib.util.spec_from_file_location(name[:-3], {root!r} + "/dags/" + name)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
parse = time.perf_counter() - t
print(json.dumps({{"sdk_s": base, "parse_s": parse, "heavy": sorted(m for m in {heavy!r} if m in sys.modules and m not in before)}}))
"""


def measure(files: list[str], runs_wanted: int = 3) -> dict:
    code = PROBE.format(root=str(ROOT), files=files, heavy=HEAVY)
    runs = []
    for _ in range(runs_wanted):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return min(runs, key=lambda r: r["parse_s"])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="fresh interpreters per measurement; the best counts")
    args = ap.parse_args(argv)
    files = sorted(p.name for p in (ROOT / "dags").glob("*.py") if not p.name.startswith("_"))
    per_file = {f: measure([f], args.runs) for f in files}
    together = measure(files, args.runs)
    result = {
        "max_file_s": round(max(r["parse_s"] for r in per_file.values()), 3),
        "per_file_s": {f: round(r["parse_s"], 3) for f, r in per_file.items()},
        "sdk_import_s": round(min(r["sdk_s"] for r in per_file.values()), 3),
        "heavy_modules": together["heavy"],
        "runs": args.runs,
    }
    command = " ".join(["python -m bench.parse", *(sys.argv[1:] if argv is None else argv)])
    merge_results({"parse": result, "commands": {"parse": command}})
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
