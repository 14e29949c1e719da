"""`make bench`: every benchmark in turn, merged into bench/results.json, then BENCHMARKS.md.

BENCH_SCALE=small is the quick pass (under 10 minutes): 100,000 rows where the full run uses
1,000,000 (20,000 entities for materialize, 10,000 rows for the pipeline, with the small search
budget `bench.pipeline` sets at that scale, 20,000-row drift windows against a 20,000-row
reference), one parse run per file, and neither detection nor the production stack (see `plan`). The keys name the size actually run (`validate.100000.s`) and the
report says the scale. Each benchmark runs in its own process and writes its own
bench/results_<name>.json (or merges into results.json itself); the command run for it is
recorded under `commands`. A run starts afresh: results.json and the results_<name>.json files
of the benchmarks it runs are removed first, so every figure comes from this run. The full run
writes bench/ and BENCHMARKS.md (both committed); the small one writes bench/small/ (results and
its own BENCHMARKS.md, ignored by git), or wherever BENCH_OUT points. A benchmark
that fails is recorded in `bench_status` and the others still run; the exit status is then 1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

if os.environ.get("BENCH_SCALE") == "small":  # before bench.common reads it: small figures apart
    os.environ.setdefault("BENCH_OUT", str(Path(__file__).with_name("small")))

from bench.common import OUT_DIR, RESULTS, ROOT, machine, merge_results  # noqa: E402


def plan(small: bool) -> dict[str, list[str] | None]:
    """The command of each benchmark, in order; None: not run at this scale."""
    rows = "100000" if small else "1000000"
    return {
        "parse": ["-m", "bench.parse", "--runs", "1" if small else "3"],
        "validate": ["-m", "bench.validate", "--rows", rows],
        "batch_scoring": ["-m", "bench.batch_scoring", "--rows", rows],
        "materialize": ["-m", "bench.materialize", "--rows", "20000" if small else "1000000"],
        "pipeline": ["-m", "bench.pipeline", *(["10000"] if small else ["10000", "100000", "1000000"])],
        "serving": ["bench/serving.py", "--seconds", "3" if small else "6", "--rounds", "1" if small else "3"],
        "drift": ["-m", "bench.drift", *(["--rows", "20000", "--reference", "20000"] if small else [])],
        "storage": ["-m", "bench.storage", *(["--small", "100", "--rounds", "2"] if small else [])],
        # the next two are the monitoring and production issues' figures, not this one's keys, and
        # take ~5 min each whatever the rows: the quick pass leaves them out
        "detection": None if small else ["-m", "bench.detection"],
        "production": None if small else ["-m", "bench.production"],
    }


def run(args: list[str]) -> tuple[float, str]:
    t = time.perf_counter()
    print(f"[bench] python {' '.join(args)}", flush=True)
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, check=False, env={**os.environ, "PYTHONPATH": str(ROOT)})
    took = round(time.perf_counter() - t, 1)
    state = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
    print(f"[bench] {state} in {took} s", flush=True)
    return took, state


def file_section(name: str) -> dict:
    """A results_<name>.json as a results.json section: keys other than the benchmark's own (a
    `setup`, or a file with no top-level key for itself) go under the benchmark's key, so two
    files' `setup`s never mix."""
    path = OUT_DIR / f"results_{name}.json"
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    own = dict(data.get(name, {}))
    own.update({k: v for k, v in data.items() if k not in (name, "commands", "machine")})
    return {name: own, "commands": data.get("commands", {})}


def main() -> int:
    from bench import report

    small = os.environ.get("BENCH_SCALE") == "small"
    parts = plan(small)
    RESULTS.unlink(missing_ok=True)
    for name, args in parts.items():
        if args is not None:
            (OUT_DIR / f"results_{name}.json").unlink(missing_ok=True)
    took, state = {}, {}
    for name, args in parts.items():
        if args is None:
            state[name] = "skipped at this scale"
            continue
        took[name], state[name] = run(args)
    for name, args in parts.items():
        section = file_section(name) if args is not None else {}
        if section:
            merge_results(section)
    merge_results(
        {
            "machine": machine(),
            "scale": "small" if small else "full",
            "bench_seconds": took,
            "bench_status": state,
            # what `make bench` ran: a benchmark's own record, where it has one, says the same
            "commands": {name: "python " + " ".join(args) for name, args in parts.items() if args is not None},
        }
    )
    report.main([])
    print(f"[bench] total {sum(took.values()):.0f} s; results in {RESULTS}")
    return 0 if all(s == "ok" or s.startswith("skipped") for s in state.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
