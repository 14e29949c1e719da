"""The `validate` step at scale: what the task does on one day of N rows, and GX's share of it.

One generated churn day of N rows (clean) is staged as `extract` leaves it, with a corrupted day
of the same size beside it. In one process, after a warm-up on a small day (imports and first-call
costs, reported as `first_call_s`), each round times side by side:
  task      - `pipeline.validate` on the clean day, what the `validate` task runs: read the staged
              parquet, the pandas checks and the spec's GX suite (`validation.checks.validate_frame`), write the JSON and HTML
              reports, clear any stale quarantine. `s` (the goal: under 3 s at 1M rows) is its median;
              `cpu_s` its CPU time (this process, mostly one thread), which neighbours on a shared
              machine disturb less than the wall time.
              Inside it: `read_s` (the parquet), `frame_s` (`validate_frame`), `gx_s` (the GX
              `ValidationDefinition.run` calls alone), `report_s` (the rest: reports, quarantine).
  corrupted - the same task on the corrupted day: the suite fails, the batch is copied to
              quarantine/ and removed from staging, and DataValidationError is raised.
  one_batch - the pure GX part run the way GX is usually called, the whole suite on the whole
              frame in one batch (the same expectations, built at once), for comparison:
              `one_batch_ratio` is its time over `gx_s`.
Times are medians over the rounds; `import_gx_s` is `import great_expectations` in this process.

    PYTHONPATH=. .venv/bin/python -m bench.validate --rows 1000000 [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from bench.common import machine, merge_results, out_path, peak_rss_mb

DAY, BAD_DAY, WARM_DAY = date(2026, 10, 3), date(2026, 10, 4), date(2026, 10, 2)
OUT = out_path("validate")


def interval(day: date):
    from include.mlops.pipeline import Interval

    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return Interval(start, start + timedelta(days=1))


def stage(store, spec, day: date, rows: int, scenario: str = "none") -> None:
    """A generated day in the landing zone and in staging/, as `extract` leaves it."""
    from include.mlops.data.generator import Scenario, events_key, generate_day
    from include.mlops.layout import staging_key

    events, _ = generate_day(spec, day, Scenario(scenario, day), rows=rows)
    store.put_parquet(events_key(spec, day), events)
    store.put_parquet(staging_key(spec, day), events)


class Probe:
    """Accumulates the time spent in a few functions while the task runs (wraps them in place)."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = defaultdict(float)

    def wrap(self, owner, name: str, key: str) -> None:
        fn = getattr(owner, name)
        spent = self.spent

        def timed(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[key] += time.perf_counter() - t

        setattr(owner, name, timed)

    def take(self) -> dict[str, float]:
        out = dict(self.spent)
        self.spent.clear()
        return out


def one_batch(df, spec) -> float:
    """The whole suite on the whole frame in one GX batch: GX's usual call, for comparison."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    from include.mlops.validation.suite import build_expectations

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = ctx.data_sources.add_pandas("p").add_dataframe_asset("a").add_batch_definition_whole_dataframe("whole")
    suite = ctx.suites.add(gx.ExpectationSuite(name="one", expectations=build_expectations(spec)))
    vd = ctx.validation_definitions.add(gx.ValidationDefinition(name="one", data=batch, suite=suite))
    t = time.perf_counter()
    vd.run(batch_parameters={"dataframe": df}, result_format="SUMMARY")
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    n = args.rows

    from include.mlops.config import embedded_env

    home = Path(tempfile.mkdtemp(prefix=f"bench-validate-{n}-"))
    os.environ.update(embedded_env(home))

    from include.mlops import pipeline as P
    from include.mlops.context import context
    from include.mlops.layout import staging_key
    from include.mlops.storage import ObjectStore, ensure_bucket

    ctx = context("churn")
    spec, store = ctx.spec, ctx.store
    ensure_bucket(store)
    t0 = time.perf_counter()
    stage(store, spec, WARM_DAY, 1000)
    stage(store, spec, DAY, n)
    print(f"staged a day of {n} rows ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)

    t = time.perf_counter()
    import great_expectations as gx

    import_gx_s = time.perf_counter() - t

    from include.mlops.validation import checks as V
    from include.mlops.validation.suite import build_expectations

    probe = Probe()
    probe.wrap(ObjectStore, "get_parquet", "read_s")
    probe.wrap(V, "validate_frame", "frame_s")
    probe.wrap(gx.ValidationDefinition, "run", "gx_s")
    t = time.perf_counter()
    P.validate(interval(WARM_DAY), "churn")
    first_call_s = time.perf_counter() - t
    probe.take()

    rounds: dict[str, list[float]] = defaultdict(list)
    for r in range(args.rounds):
        t, cpu = time.perf_counter(), time.process_time()
        out = P.validate(interval(DAY), "churn")
        task_s = time.perf_counter() - t
        rounds["cpu_s"].append(time.process_time() - cpu)
        parts = probe.take()
        assert out.rows == n, out
        rounds["s"].append(task_s)
        for k in ("read_s", "frame_s", "gx_s"):
            rounds[k].append(parts.get(k, 0.0))
        rounds["report_s"].append(task_s - parts.get("read_s", 0.0) - parts.get("frame_s", 0.0))

        stage(store, spec, BAD_DAY, n, "corrupted")  # the failed run removed it from staging
        t = time.perf_counter()
        try:
            P.validate(interval(BAD_DAY), "churn")
            raise AssertionError("the corrupted batch passed validation")
        except V.DataValidationError:
            rounds["corrupted_s"].append(time.perf_counter() - t)
        probe.take()
        assert store.exists(f"quarantine/{spec.name}/dt={BAD_DAY.isoformat()}/events.parquet")

        df = store.get_parquet(staging_key(spec, DAY))
        probe.take()
        rounds["one_batch_s"].append(one_batch(df, spec))
        probe.take()
        del df
        print(f"round {r + 1}: " + " ".join(f"{k}={v[-1]:.2f}" for k, v in rounds.items()), file=sys.stderr, flush=True)

    med = {k: round(statistics.median(v), 3) for k, v in rounds.items()}
    result = {
        **med,
        "one_batch_ratio": round(med["one_batch_s"] / med["gx_s"], 2) if med["gx_s"] else None,
        "first_call_s": round(first_call_s, 3),
        "import_gx_s": round(import_gx_s, 3),
        "rounds": args.rounds,
        "rows": n,
        "expectations": len(build_expectations(spec)),
        "columns": len(spec.raw_columns),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "load_avg_at_end": [round(x, 2) for x in os.getloadavg()],
    }
    command = " ".join(["python -m bench.validate", *(sys.argv[1:] if argv is None else argv)])
    result["command"] = command
    section = {"validate": {str(n): result}, "commands": {"validate": command}}
    data = json.loads(OUT.read_text()) if OUT.exists() else {}
    data.setdefault("validate", {})[str(n)] = result
    data["commands"] = {"validate": command}
    data["machine"] = machine()
    OUT.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    merge_results(section)
    print(json.dumps({f"validate.{n}": result}, indent=2))
    return result


if __name__ == "__main__":
    main()
