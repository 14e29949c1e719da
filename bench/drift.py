"""Cost of drift monitoring at scale: our sampled monitoring analysis vs Evidently on the full window.

Not a test: prints figures and writes bench/results_drift.json as
`{"drift": {"<rows>": {"ours_s", "evidently_full_s", "same_decision", "scenarios": {...}}}}`.

For windows of 100,000 and 1,000,000 rows against a 100,000-row reference (the champion's
training data, scored by it), across the generator's scenarios (none, covariate_drift,
concept_drift, corrupted):

- ours: what the `monitor` task computes without labels (data quality, data drift per feature,
  prediction drift), with the window and the reference sampled to the spec's
  `monitoring.sample_rows` using `monitoring.sample_seed`;
- evidently_full: the same Evidently reports on every row;
- same_decision: the drift policy (`drift_policy.decide`, the spec's `monitoring.policy`) takes the
  same action on both, for every scenario (the drifted-feature sets are compared too).

Times are seconds per window (mean over the scenarios), computation only (no object-store I/O,
no HTML rendering).

    PYTHONPATH=. .venv/bin/python -m bench.drift [--rows 100000 1000000] [--reference 100000]
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

from bench.common import out_path

SCENARIOS = ("none", "covariate_drift", "concept_drift", "corrupted")
WINDOW_DAY = date(2026, 10, 20)


def scored_days(spec, model, first: date, days: int, rows_per_day: int, scenario: str):
    import pandas as pd

    from include.mlops.data.generator import Scenario
    from include.mlops.data.predictions import simulate_predictions

    frames = []
    for i in range(days):
        d = first + timedelta(days=i)
        log, labels = simulate_predictions(spec, model, d, Scenario(scenario, first), rows=rows_per_day, seed=3)
        log[spec.label] = labels[spec.label].to_numpy()
        frames.append(log)
    return pd.concat(frames, ignore_index=True)


def analysis(ref, cur, spec, cfg):
    """The label-free part of `monitoring.window.analyse`: data quality, data drift, prediction drift."""
    from include.mlops.monitoring import reports as R
    from include.mlops.monitoring.reading import sample

    cur_s = sample(cur, cfg.sample_rows, cfg.sample_seed)
    ref_s = sample(ref, cfg.sample_rows, cfg.sample_seed)
    dq = R.quality_numbers(R.data_quality_report(cur_s, spec, cfg).dict())
    drift = R.drift_numbers(R.data_drift_report(ref_s, cur_s, spec, cfg).dict(), cfg)
    pred = R.drift_numbers(R.prediction_drift_report(ref_s, cur_s, spec, cfg).dict(), cfg)["columns"]["score"]
    return {
        "rows_used": len(cur_s),
        "drift_share": drift["share"],
        "drifted": sorted(c for c, v in drift["columns"].items() if v["drifted"]),
        "prediction_drift": pred["drifted"],
        "dq_passed": dq["passed"],
        "dq_failures": [f["check"] for f in dq["failures"]],
    }


def decision(spec, a) -> str:
    from include.mlops.retraining import drift_policy as P

    obs = P.Observation(
        day=WINDOW_DAY,
        rows=a["rows"],
        drift_share=a["drift_share"],
        drifted_features=tuple(a["drifted"]),
        data_quality_passed=a["dq_passed"],
        data_quality_failures=tuple(a["dq_failures"]),
    )
    return P.decide(obs, P.DriftPolicy.from_spec(spec)).action


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--reference", type=int, default=100_000)
    ap.add_argument("--scenarios", nargs="+", default=list(SCENARIOS))
    ap.add_argument("--out", default=str(out_path("drift")))
    args = ap.parse_args()

    from bench.detection import champion
    from include.mlops.config import quiet_telemetry
    from include.mlops.monitoring.step import MonitoringConfig
    from include.mlops.spec import load_spec

    quiet_telemetry()
    spec = load_spec("churn")
    cfg = MonitoringConfig.from_spec(spec)
    full_cfg = replace(cfg, sample_rows=10**12)
    t0 = time.perf_counter()
    model, _, _ = champion(spec, 2000)
    ref = scored_days(spec, model, date(2026, 9, 1), 10, args.reference // 10, "none")
    print(
        f"reference {len(ref)} rows; sample_rows={cfg.sample_rows} seed={cfg.sample_seed} ({time.perf_counter() - t0:.0f} s)",
        flush=True,
    )
    analysis(ref.head(2000), ref.head(2000), spec, cfg)  # warm-up: imports and first-call costs stay out of the timings
    out_file = Path(args.out)
    results = json.loads(out_file.read_text()) if out_file.exists() else {}
    results.setdefault("drift", {})
    results["setup"] = {
        "reference_rows": len(ref),
        "sample_rows": cfg.sample_rows,
        "sample_seed": cfg.sample_seed,
        "methods": {"num": [cfg.num_method, cfg.num_threshold], "cat": [cfg.cat_method, cfg.cat_threshold]},
        "policy_drift_share": cfg.drift_share,
    }
    for n in args.rows:
        per = {}
        for sc in args.scenarios:
            cur = scored_days(spec, model, WINDOW_DAY, 1, n, sc)
            gc.collect()
            t = time.perf_counter()
            ours = analysis(ref, cur, spec, cfg)
            ours_s = time.perf_counter() - t
            gc.collect()
            t = time.perf_counter()
            full = analysis(ref, cur, spec, full_cfg)
            full_s = time.perf_counter() - t
            ours["rows"] = full["rows"] = len(cur)
            d_ours, d_full = decision(spec, ours), decision(spec, full)
            per[sc] = {
                "ours_s": round(ours_s, 2),
                "evidently_full_s": round(full_s, 2),
                "ours_decision": d_ours,
                "full_decision": d_full,
                "same_decision": d_ours == d_full,
                "same_drifted_features": ours["drifted"] == full["drifted"],
                "ours_drift_share": round(ours["drift_share"], 4),
                "full_drift_share": round(full["drift_share"], 4),
                "ours_drifted": ours["drifted"],
                "full_drifted": full["drifted"],
                "rows_used": ours["rows_used"],
            }
            print(
                f"{n:>9} {sc:<16} ours {ours_s:7.1f} s ({ours['rows_used']} rows) -> {d_ours:<10} "
                f"full {full_s:7.1f} s -> {d_full:<10} share {ours['drift_share']:.3f}/{full['drift_share']:.3f}",
                flush=True,
            )
            del cur
        results["drift"][str(n)] = {
            "ours_s": round(sum(p["ours_s"] for p in per.values()) / len(per), 2),
            "evidently_full_s": round(sum(p["evidently_full_s"] for p in per.values()) / len(per), 2),
            "same_decision": all(p["same_decision"] for p in per.values()),
            "scenarios": per,
        }
        out_file.write_text(json.dumps(results, indent=1))
        r = results["drift"][str(n)]
        print(
            f"drift.{n}: ours_s={r['ours_s']} evidently_full_s={r['evidently_full_s']} same_decision={r['same_decision']}",
            flush=True,
        )
    print(f"wrote {out_file} ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
