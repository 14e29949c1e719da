"""Batch scoring at scale: `serving.batch.score_batch` against the bare work on the same rows and model.

A champion is made the platform's way, quickly: the spec's model (one candidate of its
search space, two folds) fitted by `training.fit` on a few generated days, logged by
`tracking.log_model`, registered by `registry.register` and promoted by `moves.move_champion`.
One generated churn day of N rows is staged as `extract` leaves it. In one process, after a
warm-up on a small day (imports and first-call costs, reported as `first_call_s`), each round
times side by side:
  ours - `score_batch` on the day, what the `ml_batch_scoring` task runs: resolve the champion,
         load it from MLflow, read the staged parquet, `build_features`, `predict_proba`, write
         predictions/batch/.../predictions.parquet. Inside it: `load_s`, `read_s`,
         `features_s`, `predict_s`, `write_s` (the rest is resolution and the output frame).
  bare - the same work with the model already in memory: `pd.read_parquet` of the same file,
         the model's columns (the derived ones by the spec's own expressions), `predict_proba`,
         the same output columns written with `to_parquet`.
`ratio` = ours_s / bare_s (the goal: at most 1.5), from the medians over the rounds; `ratio_min`
from the fastest round of each, the least disturbed by neighbours on a shared machine (the
model's predict uses OpenMP threads, which suffer most from contention). The bare scores are
checked equal to ours.

    PYTHONPATH=. .venv/bin/python -m bench.batch_scoring --rows 1000000 [--rounds 3]
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

from bench.common import ROOT, machine, merge_results, out_path, peak_rss_mb
from bench.validate import Probe

DAY, WARM_DAY, TRAIN_START = date(2026, 10, 20), date(2026, 10, 19), date(2026, 10, 1)
TRAIN_DAYS, TRAIN_ROWS_PER_DAY = 5, 4000
OUT = out_path("batch_scoring")


def bench_spec(home: Path) -> str:
    """The shipped spec with a one-candidate search, installed in the home's spec directory;
    returns its name (steps take specs by name)."""
    import yaml

    raw = yaml.safe_load((ROOT / "include" / "specs" / "churn.yaml").read_text())
    raw["model"]["search"].update({"n_iter": 1, "cv_folds": 2, "budget_seconds": 20})
    (home / "specs").mkdir(parents=True, exist_ok=True)
    (home / "specs" / "churn.yaml").write_text(yaml.safe_dump(raw))
    return "churn"


def champion(spec, store) -> dict:
    """Fit, log, register and promote a model with the platform's own functions."""
    import mlflow
    import pandas as pd

    from include.mlops.config import get_settings
    from include.mlops.data.generator import generate_day
    from include.mlops.features.build import build_features, model_features
    from include.mlops.moves import move_champion
    from include.mlops.registry import ensure_experiment, register, setup_mlflow
    from include.mlops.training import fit as T
    from include.mlops.training.tracking import log_model

    frames = []
    for i in range(TRAIN_DAYS):
        raw, labels = generate_day(spec, TRAIN_START + timedelta(days=i), rows=TRAIN_ROWS_PER_DAY)
        feats = build_features(raw, spec)
        feats[spec.label] = labels[spec.label].to_numpy()
        frames.append(feats)
    train = pd.concat(frames, ignore_index=True)
    t = time.perf_counter()
    model, search = T.fit(spec, train)
    fit_s = time.perf_counter() - t
    settings = get_settings()
    client = setup_mlflow(settings)
    exp_id = ensure_experiment(client, spec.name, settings)
    with mlflow.start_run(experiment_id=exp_id, run_name="bench-batch-scoring") as run:
        info = log_model(model, spec, train[model_features(spec)])
    version, _ = register(client, spec.model_name, info.model_uri, run.info.run_id, {"bench": "batch_scoring"})
    move_champion(client, store, spec.model_name, version, action="promote", reason="bench", run_id=run.info.run_id)
    est = model.steps[-1][1]
    return {
        "version": version,
        "family": type(est).__name__,
        "params": search.best_params,
        "iterations": int(getattr(est, "n_iter_", 0) or 0),
        "train_rows": len(train),
        "fit_s": round(fit_s, 1),
    }


def interval(day: date):
    from include.mlops.pipeline import Interval

    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return Interval(start, start + timedelta(days=1))


def bare(model, spec, src: str, dst: str, version: str, label: str):
    """Read, the model's columns, predict_proba, write: what a person would do by hand."""
    import numpy as np
    import pandas as pd

    raw = pd.read_parquet(src)
    derived = dict(spec.derived_features)
    X = raw[spec.feature_names].assign(**{name: raw.eval(expr) for name, expr in derived.items()})
    proba, classes = model.predict_proba(X), list(model.classes_)
    score = proba[:, classes.index(1)]
    columns = {
        spec.entity_key: raw[spec.entity_key],
        spec.timestamp: raw[spec.timestamp],
        "prediction": (score >= 0.5).astype("int64"),
        "score": score,
        **{f"probability_{c}": proba[:, j] for j, c in enumerate(classes)},  # what /predict answers too
        "model_name": spec.model_name,
        "model_version": version,
        "variant": "champion",
        "interval": label,
    }
    out = pd.DataFrame(columns)
    out.to_parquet(dst, index=False)
    return np.asarray(score)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    n = args.rows

    from include.mlops.config import embedded_env

    home = Path(tempfile.mkdtemp(prefix=f"bench-batch-scoring-{n}-"))
    os.environ.update(embedded_env(home))
    spec_path = bench_spec(home)

    import mlflow.sklearn
    import numpy as np
    import pandas as pd
    from sklearn.pipeline import Pipeline

    from include.mlops import model_io
    from include.mlops.context import context
    from include.mlops.data.generator import generate_day
    from include.mlops.features import build as F
    from include.mlops.layout import staging_key
    from include.mlops.serving import batch as B
    from include.mlops.storage import ObjectStore, ensure_bucket

    ctx = context(spec_path)
    spec, store = ctx.spec, ctx.store
    ensure_bucket(store)
    t0 = time.perf_counter()
    model_info = champion(spec, store)
    print(f"champion v{model_info['version']} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    for day, rows in ((WARM_DAY, 1000), (DAY, n)):
        store.put_parquet(staging_key(spec, day), generate_day(spec, day, rows=rows)[0])
    src = store.local_path(staging_key(spec, DAY))
    dst = str(home / "bare-predictions.parquet")

    probe = Probe()
    probe.wrap(model_io, "load", "load_s")
    probe.wrap(ObjectStore, "get_parquet", "read_s")
    probe.wrap(F, "build_features", "features_s")
    probe.wrap(Pipeline, "predict_proba", "predict_s")
    probe.wrap(ObjectStore, "put_parquet", "write_s")
    t = time.perf_counter()
    B.score_batch(interval(WARM_DAY), spec_path)
    first_call_s = time.perf_counter() - t
    probe.take()
    model = mlflow.sklearn.load_model(f"models:/{spec.model_name}/{model_info['version']}")
    label = interval(DAY).label

    rounds: dict[str, list[float]] = defaultdict(list)
    for r in range(args.rounds):
        probe.take()
        t = time.perf_counter()
        out = B.score_batch(interval(DAY), spec_path)
        rounds["ours_s"].append(time.perf_counter() - t)
        for k, v in probe.take().items():
            rounds[k].append(v)
        assert out["rows"] == n, out
        t = time.perf_counter()
        score = bare(model, spec, src, dst, str(model_info["version"]), label)
        rounds["bare_s"].append(time.perf_counter() - t)
        rounds["bare_predict_s"].append(probe.take().get("predict_s", 0.0))
        if r == 0:
            ours = pd.read_parquet(store.local_path(store.key_of(out["uri"])))
            assert np.allclose(ours["score"].to_numpy(), score), "bare and ours disagree"
            assert list(ours.columns) == list(pd.read_parquet(dst).columns)
        print(f"round {r + 1}: " + " ".join(f"{k}={v[-1]:.2f}" for k, v in rounds.items()), file=sys.stderr, flush=True)

    med = {k: round(statistics.median(v), 3) for k, v in rounds.items()}
    command = " ".join(["python -m bench.batch_scoring", *(sys.argv[1:] if argv is None else argv)])
    result = {
        **med,
        "ratio": round(med["ours_s"] / med["bare_s"], 2),
        "ratio_min": round(min(rounds["ours_s"]) / min(rounds["bare_s"]), 2),
        "first_call_s": round(first_call_s, 3),
        "rows": n,
        "rounds": args.rounds,
        "model": model_info,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "load_avg_at_end": [round(x, 2) for x in os.getloadavg()],
        "command": command,
    }
    data = json.loads(OUT.read_text()) if OUT.exists() else {}
    data.setdefault("batch_scoring", {})[str(n)] = result
    data["commands"] = {"batch_scoring": command}
    data["machine"] = machine()
    OUT.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    merge_results({"batch_scoring": {str(n): result}, "commands": {"batch_scoring": command}})
    print(json.dumps({f"batch_scoring.{n}": result}, indent=2))
    return result


if __name__ == "__main__":
    main()
