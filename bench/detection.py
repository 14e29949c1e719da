"""Detection delay and false alarms of the monitoring + drift policy on the churn generator.

Not a test: prints figures and writes bench/results_detection.json.

A champion is trained the way `pipeline.train` does (the spec's search, time split, holdout
metric), without Airflow, MLflow or Feast: this measures the detection logic, which is the same
code the `monitor` and `decide` tasks run (`monitoring.window.analyse`, `drift_policy.decide`), on the
shipped spec's `monitoring` section. Daily windows of `demo.rows_per_day` requests are scored by
the champion; labels arrive `label.delay_days` late, exactly as in the platform.

For each scenario the drift starts on a chosen day; the delay is counted in windows from that day
(0 = caught in the first drifted window). The no-drift control runs 30 windows and counts every
`retrain` decision as a false alarm.

    PYTHONPATH=. .venv/bin/python -m bench.detection [--rows 2000] [--control-windows 30] [--after 10]
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import date, timedelta
from pathlib import Path

from bench.common import out_path

TRAIN_START = date(2026, 9, 1)
TRAIN_DAYS = 12
WATCH_START = date(2026, 9, 20)  # first monitored window
DRIFT_OFFSET = 5  # drift starts on the 6th monitored window, so 5 clean windows come first


def champion(spec, rows: int):
    """Train on TRAIN_DAYS days of clean data; holdout metric as the gate would log it."""
    import pandas as pd

    from include.mlops.data.generator import generate_day
    from include.mlops.evaluation import metrics as E
    from include.mlops.features.build import build_features, model_features
    from include.mlops.training import fit as T

    frames = []
    for i in range(TRAIN_DAYS):
        raw, labels = generate_day(spec, TRAIN_START + timedelta(days=i), rows=rows)
        feats = build_features(raw, spec)
        feats[spec.label] = labels[spec.label].to_numpy()
        frames.append(feats)
    data = pd.concat(frames, ignore_index=True)
    train, holdout = T.time_split(data, spec, spec.training.holdout_days)
    model, _ = T.fit(spec, train)
    primary = spec.primary_metric
    holdout_metric = E.metrics(holdout[spec.label], E.predict_scores(model, holdout[model_features(spec)], spec), spec)[
        primary
    ]
    ref = train.copy()
    ref["score"] = E.predict_scores(model, ref[model_features(spec)], spec)
    ref["prediction"] = (ref["score"] >= 0.5).astype(int)
    return model, ref, float(holdout_metric)


def run_scenario(
    spec, model, ref, holdout_metric: float, scenario: str, drift_start: date | None, windows: int, rows: int
) -> dict:
    """Monitor `windows` daily windows from WATCH_START; the policy decides each with its history."""
    import pandas as pd

    from include.mlops.data.generator import Scenario
    from include.mlops.data.predictions import simulate_predictions
    from include.mlops.monitoring.reading import join_labels
    from include.mlops.monitoring.step import MonitoringConfig
    from include.mlops.monitoring.window import analyse
    from include.mlops.retraining import drift_policy as P

    cfg = MonitoringConfig.from_spec(spec)
    policy = P.DriftPolicy.from_spec(spec)
    sc = Scenario(scenario, drift_start)
    logs, labels = {}, {}

    def day_data(d: date):
        if d not in logs:
            logs[d], labels[d] = simulate_predictions(spec, model, d, sc, rows=rows, seed=None)
        return logs[d], labels[d]

    history, out = [], []
    for i in range(windows):
        d = WATCH_START + timedelta(days=i)
        cur, _ = day_data(d)
        # labelled part: events of the lookback whose labels have arrived by the window's end
        lab_days = [d - timedelta(days=k) for k in range(cfg.label_lookback_days, -1, -1)]
        arrived = [day_data(e)[1] for e in lab_days if e + timedelta(days=spec.label_delay_days) <= d]
        preds = pd.concat([day_data(e)[0] for e in lab_days], ignore_index=True)
        lab = (
            pd.concat(arrived, ignore_index=True)
            if arrived
            else pd.DataFrame(columns=[spec.entity_key, spec.timestamp, spec.label])
        )
        if not lab.empty:
            lab[spec.timestamp] = pd.to_datetime(lab[spec.timestamp], utc=True)
        labelled = join_labels(preds, lab, spec)
        t = time.perf_counter()
        a = analyse(ref, cur, labelled, spec, cfg, day=d.isoformat())
        seconds = time.perf_counter() - t
        perf = a.performance.get(policy.primary_metric)
        obs = P.Observation(
            day=d,
            rows=a.rows,
            drift_share=a.drift["share"],
            drifted_features=tuple(a.drifted_features),
            data_quality_passed=a.data_quality["passed"],
            data_quality_failures=tuple(f["check"] for f in a.data_quality["failures"]),
            labelled_rows=a.labelled_rows,
            window_metric=perf,
            champion_metric=holdout_metric,
        )
        dec = P.decide(obs, policy, history)
        history.append(dec.to_dict())
        drifted = bool(drift_start and d >= drift_start)
        out.append(
            {
                "window": d.isoformat(),
                "drifted": drifted,
                "action": dec.action,
                "reason": dec.reason,
                "signal": dec.signal,
                "drift_share": round(a.drift["share"], 3),
                "perf": None if perf is None else round(perf, 4),
                "max_feature_score": max(
                    ((round(v["score"] / v["threshold"], 3), c) for c, v in a.drift["columns"].items()), default=None
                ),
                "perf_drop": None if dec.performance_drop is None else round(dec.performance_drop, 4),
                "prediction_drift": a.prediction_drift.get("drifted"),
                "target_drift": (a.target_drift or {}).get("drifted"),
                "seconds": round(seconds, 2),
            }
        )
        print(
            f"  {scenario:<16} {d} drifted={int(drifted)} share={a.drift['share']:.3f} "
            f"{policy.primary_metric}={'-' if perf is None else f'{perf:.3f}'} -> {dec.action}",
            flush=True,
        )
    return summarise(out, drift_start)


def summarise(windows: list[dict], drift_start: date | None) -> dict:
    pre = [w for w in windows if not w["drifted"]]
    post = [w for w in windows if w["drifted"]]
    first_retrain = next((i for i, w in enumerate(post) if w["action"] == "retrain"), None)
    first_signal = next((i for i, w in enumerate(post) if w["signal"]), None)
    by = post[first_retrain]["reason"] if first_retrain is not None else None
    return {
        "drift_start": drift_start.isoformat() if drift_start else None,
        "windows": len(windows),
        "false_alarms": sum(w["action"] == "retrain" for w in pre),
        "false_signals": sum(w["signal"] for w in pre),
        "clean_windows": len(pre),
        "detection_delay_windows": first_retrain,
        "first_signal_delay_windows": first_signal,
        "detected_by": by,
        "max_feature_score_over_threshold_clean": max((w["max_feature_score"] for w in pre), default=None),
        "mean_window_seconds": round(sum(w["seconds"] for w in windows) / max(1, len(windows)), 2),
        "detail": windows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=None, help="requests per day (default: the spec's demo.rows_per_day)")
    ap.add_argument("--control-windows", type=int, default=30)
    ap.add_argument("--after", type=int, default=10, help="windows to watch after the drift starts")
    ap.add_argument("--out", default=str(out_path("detection")))
    args = ap.parse_args()

    from include.mlops.config import quiet_telemetry
    from include.mlops.spec import load_spec

    quiet_telemetry()
    spec = load_spec("churn")
    rows = args.rows or (spec.demo.rows_per_day if spec.demo else 2000)
    t0 = time.perf_counter()
    model, ref, holdout_metric = champion(spec, rows)
    print(
        f"champion trained on {len(ref)} rows; holdout {spec.primary_metric} "
        f"{holdout_metric:.4f} ({time.perf_counter() - t0:.0f} s)",
        flush=True,
    )
    start = WATCH_START + timedelta(days=DRIFT_OFFSET)
    results = {
        "rows_per_window": rows,
        "reference_rows": len(ref),
        "holdout_metric": holdout_metric,
        "policy": spec.monitoring.model_dump(),
        "scenarios": {},
    }
    for name, drift_start, n in (
        ("none", None, args.control_windows),
        ("covariate_drift", start, DRIFT_OFFSET + args.after),
        ("concept_drift", start, DRIFT_OFFSET + args.after),
    ):
        results["scenarios"][name] = run_scenario(spec, model, ref, holdout_metric, name, drift_start, n, rows)
    print("\nscenario          windows  clean  false alarms  detection delay (windows)  first signal")
    for name, r in results["scenarios"].items():
        delay = (
            "-"
            if r["drift_start"] is None
            else ("not detected" if r["detection_delay_windows"] is None else r["detection_delay_windows"])
        )
        sig = "-" if r["drift_start"] is None else r["first_signal_delay_windows"]
        print(
            f"{name:<17} {r['windows']:>7} {r['clean_windows']:>6} {r['false_alarms']:>13}  {delay!s:>25}  {sig!s:>12}"
        )
    Path(args.out).write_text(json.dumps(results, indent=1, default=str))
    print(f"wrote {args.out} ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
