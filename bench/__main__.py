"""`make bench`: every benchmark in turn, merged into bench/results.json.

BENCH_SCALE=small keeps each one small (10k/100k rows); the default runs the full sizes.
Each benchmark also writes its own results_<name>.json, with the command that produced it.
Not yet measured here (see the notes of issue 6): `materialize.*`, `validate.1000000.s`,
`batch_scoring.1000000.ratio`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from bench.common import RESULTS, ROOT, machine, merge_results


def run(args: list[str]) -> float:
    t = time.perf_counter()
    print(f"[bench] {' '.join(args)}", flush=True)
    subprocess.run([sys.executable, *args], cwd=ROOT, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return round(time.perf_counter() - t, 1)


def main() -> None:
    small = os.environ.get("BENCH_SCALE") == "small"
    plan = {
        "parse": ["-m", "bench.parse"],
        "pipeline": ["-m", "bench.pipeline", *(["10000", "100000"] if small else ["10000", "100000", "1000000"])],
        "serving": ["bench/serving.py", "--seconds", "3" if small else "6", "--rounds", "1" if small else "3"],
        "drift": ["-m", "bench.drift", "--rows", *(["100000"] if small else ["100000", "1000000"])],
        "detection": ["-m", "bench.detection"],
        "production": ["-m", "bench.production"],
    }
    took = {name: run(args) for name, args in plan.items()}
    for part in ("serving", "drift", "detection", "production"):
        path = ROOT / "bench" / f"results_{part}.json"
        if path.exists():
            merge_results(json.loads(path.read_text()))
    merge_results({"machine": machine(), "bench_seconds": took, "scale": "small" if small else "full"})
    print(RESULTS.read_text())


if __name__ == "__main__":
    main()
