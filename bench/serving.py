"""Scoring-service benchmark: our service against `mlflow models serve` on the same model.

    PYTHONPATH=. .venv/bin/python bench/serving.py [--seconds 6] [--rounds 3] [--keep-home DIR]

Builds its own MLOPS_HOME (10 demo days through the real pipeline steps, a promoted
champion), then starts both servers on loopback:

- ours: `python -m include.mlops.serving` with the prediction log on, asked by feature row
  (`POST /predict`, one record) and by entity id (`{"entity_ids": [id]}`: an online-store
  lookup per request), and through its MLflow-compatible `/invocations`;
- mlflow: `mlflow models serve -m models:/<model>@champion --env-manager local -w 1`, asked
  through `/invocations` with a one-row `dataframe_split` holding all the signature's columns.

Both servers run with OMP_NUM_THREADS=1, side by side; the measurements are interleaved (at
each concurrency every target in turn, for `--rounds` rounds; per-key medians reported), so
load from neighbours on a shared machine falls on all of them alike. The client is a small asyncio HTTP/1.1 client in
this process: one persistent keep-alive connection per concurrent worker, each sending its next
single-record request as soon as the previous answer is read (closed loop). At each
concurrency (1, 8, 32) it warms up for a second, then measures for `--seconds`: requests per
second, p50/p99 latency (write of the request to the last byte of the answer) and errors
(non-200 answers or broken connections). The client shares the machine's cores with the
server under test, as any same-host client would. Figures go to stdout and to
bench/results_serving.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from bench.common import out_path  # noqa: E402
from include.mlops.delivery.service import free_port  # noqa: E402

PY = sys.executable
CONCURRENCY = (1, 8, 32)
START = date(2026, 10, 1)


# -- a home with a champion -----------------------------------------------------------------------
def home_env(home: Path) -> dict[str, str]:
    from include.mlops.config import embedded_env

    return {**embedded_env(home), "MLOPS_DATASET": "churn"}


def build_home(home: Path, days: int = 10, rows: int = 400) -> dict[str, Any]:
    """The test fixture's recipe (tests/conftest.py): demo data through the real steps."""
    import yaml

    raw = yaml.safe_load((ROOT / "include" / "specs" / "churn.yaml").read_text())
    raw["model"]["search"].update({"n_iter": 2, "cv_folds": 2, "budget_seconds": 30})
    raw["training"].update({"window_days": 6, "min_rows": 200})
    (home / "specs").mkdir(parents=True, exist_ok=True)
    (home / "specs" / "churn.yaml").write_text(yaml.safe_dump(raw))
    spec_path = "churn"  # steps take specs by name, from the home's spec directory
    os.environ.update(home_env(home))

    from dataclasses import replace

    from include.mlops import pipeline as P
    from include.mlops.context import context
    from include.mlops.data.generator import write_days
    from include.mlops.storage import ensure_bucket

    ctx = context(spec_path)  # the home's settings: its spec directory and file://<home>/store
    spec, store = ctx.spec, ctx.store
    ensure_bucket(store)
    write_days(store, spec, START, days, rows=rows)
    iv = None
    for i in range(days):
        day = START + timedelta(days=i)
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        iv = P.Interval(start, start + timedelta(days=1))
        P.extract(iv, spec_path)
        val = P.validate(iv, spec_path)
        P.prepare(iv, spec_path)
    lineage = {"dag_id": "bench", "run_id": "bench"}
    tr = P.train(iv, lineage, spec_path)
    ev = replace(P.evaluate(tr, spec_path), passed=True, reasons=[])
    rg = P.register(tr, ev, val, lineage, iv, spec_path)
    P.promote(rg, ev, "bench", "bench", spec_name=spec_path)
    return {"spec_path": spec_path, "version": rg.version, "model": rg.model}


def sample_requests(home: Path, n: int = 500) -> dict[str, list[bytes]]:
    """Request bodies for each way of asking, from the staged demo events."""
    import pandas as pd

    from include.mlops.features.build import build_features, model_features
    from include.mlops.spec import load_spec

    spec = load_spec("churn")
    files = sorted((home / "store" / "staging" / spec.name / "events").rglob("*.parquet"))
    raw = pd.concat([pd.read_parquet(f) for f in files[-2:]], ignore_index=True).head(n)
    feats = json.loads(raw[spec.feature_names].to_json(orient="records"))
    ids = [int(i) for i in raw[spec.entity_key]]
    X = build_features(raw, spec)[model_features(spec)]
    split = json.loads(X.to_json(orient="split", index=False))
    return {
        "features": [json.dumps({"records": [r]}).encode() for r in feats],
        "entity": [json.dumps({"entity_ids": [i]}).encode() for i in ids],
        "invocations": [
            json.dumps({"dataframe_split": {"columns": split["columns"], "data": [row]}}).encode()
            for row in split["data"]
        ],
    }


# -- servers --------------------------------------------------------------------------------------
def wait_http(url: str, proc: subprocess.Popen, timeout: float = 180.0) -> float:
    import httpx

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return time.monotonic() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"{url} not ready after {timeout}s")


def stop(proc: subprocess.Popen) -> None:
    """Stop a server and its children (mlflow serve leaves a uvicorn child): its process group."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def start_ours(env: dict[str, str], port: int, log: Path) -> subprocess.Popen:
    e = {
        **env,
        "MLOPS_SERVE_PORT": str(port),
        "MLOPS_SERVE_HOST": "127.0.0.1",
        "OMP_NUM_THREADS": "1",
        "MLOPS_SERVE_PREDICTION_LOG": "true",
        "PYTHONPATH": str(ROOT),
    }
    return subprocess.Popen(
        [PY, "-m", "include.mlops.serving"],
        cwd=ROOT,
        env=e,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def start_mlflow(env: dict[str, str], port: int, model: str, log: Path) -> subprocess.Popen:
    bindir = str(Path(PY).parent)  # mlflow serve execs `uvicorn` from PATH
    e = {**env, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "PATH": f"{bindir}:{env.get('PATH', '')}"}
    mlflow = str(Path(PY).with_name("mlflow"))
    cmd = [
        mlflow,
        "models",
        "serve",
        "-m",
        f"models:/{model}@champion",
        "--env-manager",
        "local",
        "-w",
        "1",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    return subprocess.Popen(
        cmd, cwd=ROOT, env=e, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )


# -- the client -----------------------------------------------------------------------------------
async def _worker(
    host: str,
    port: int,
    path: str,
    bodies: list[bytes],
    offset: int,
    t_start: float,
    t_end: float,
    lat: list[float],
    counts: dict[str, int],
) -> None:
    loop = asyncio.get_running_loop()
    head = f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
    reqs = [(head + f"Content-Length: {len(b)}\r\n\r\n").encode() + b for b in bodies]
    i = offset
    reader = writer = None
    while loop.time() < t_end:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            req = reqs[i % len(reqs)]
            i += 1
            t0 = time.perf_counter()
            writer.write(req)
            status = await reader.readline()
            length, close = 0, False
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                k, _, v = line.decode("latin-1").partition(":")
                k = k.strip().lower()
                if k == "content-length":
                    length = int(v)
                elif k == "connection" and v.strip().lower() == "close":
                    close = True
            if length:
                await reader.readexactly(length)
            t1 = time.perf_counter()
            ok = status.split(b" ", 2)[1:2] == [b"200"]
            if loop.time() >= t_start:
                lat.append(t1 - t0)
                counts["ok" if ok else "errors"] += 1
            if close:
                writer.close()
                writer = None
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            if loop.time() >= t_start:
                counts["errors"] += 1
            if writer is not None:
                writer.close()
            writer = None
            await asyncio.sleep(0.01)
    if writer is not None:
        writer.close()


async def _load(
    host: str, port: int, path: str, bodies: list[bytes], concurrency: int, seconds: float, warmup: float
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    t_start = loop.time() + warmup
    t_end = t_start + seconds
    lat: list[float] = []
    counts = {"ok": 0, "errors": 0}
    step = max(1, len(bodies) // concurrency)
    await asyncio.gather(
        *(_worker(host, port, path, bodies, k * step, t_start, t_end, lat, counts) for k in range(concurrency))
    )
    lat.sort()

    def pct(p: float) -> float:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 2) if lat else float("nan")

    return {
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "max_ms": pct(1.0),
        "rps": round(counts["ok"] / seconds, 1),
        "errors": counts["errors"],
        "requests": counts["ok"] + counts["errors"],
    }


def load(
    port: int, path: str, bodies: list[bytes], concurrency: int, seconds: float, warmup: float = 1.0
) -> dict[str, Any]:
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    return runner(_load("127.0.0.1", port, path, bodies, concurrency, seconds, warmup))


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-key median over rounds (errors: the total)."""
    import statistics

    out = {k: round(statistics.median(r[k] for r in runs), 2) for k in runs[0] if k not in ("errors", "requests")}
    out["errors"] = sum(r["errors"] for r in runs)
    out["requests"] = sum(r["requests"] for r in runs)
    return out


# -- main -----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=6.0, help="measured seconds per concurrency level")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds; figures are per-key medians")
    ap.add_argument("--keep-home", help="build (or reuse) the home in this directory instead of a temp one")
    ap.add_argument("--out", default=str(out_path("serving")))
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    tmp = None
    if args.keep_home:
        home = Path(args.keep_home).resolve()
        home.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="bench-serving-")
        home = Path(tmp.name)
    t0 = time.monotonic()
    if (home / "mlflow.db").exists() and (home / "specs" / "churn.yaml").exists():
        os.environ.update(home_env(home))
        info = {"model": "churn_model"}
        print(f"reusing {home}", file=sys.stderr)
    else:
        info = build_home(home)
        print(f"built {home} in {time.monotonic() - t0:.0f}s", file=sys.stderr)
    env = {**os.environ, **home_env(home)}
    bodies = sample_requests(home)
    results: dict[str, Any] = {}
    startup: dict[str, float] = {}

    targets = [  # name, server, request kind, path
        ("ours", "ours", "features", "/predict"),
        ("ours_entity", "ours", "entity", "/predict"),
        ("ours_invocations", "ours", "invocations", "/invocations"),
        ("mlflow", "mlflow", "invocations", "/invocations"),
    ]
    ports = {"ours": free_port(), "mlflow": free_port()}
    launched = time.monotonic()
    procs = {
        "ours": start_ours(env, ports["ours"], home / "serve_ours.log"),
        "mlflow": start_mlflow(env, ports["mlflow"], info["model"], home / "serve_mlflow.log"),
    }
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        name: {f"c{c}": [] for c in CONCURRENCY} for name, *_ in targets
    }
    try:
        # both start at once (so each start-up is slowed by the other); seconds from launch to ready
        for name, path in (("ours", "/ready"), ("mlflow", "/ping")):
            wait_http(f"http://127.0.0.1:{ports[name]}{path}", procs[name])
            startup[name] = round(time.monotonic() - launched, 1)
        # Interleaved: at each level every target runs back to back, round after round (in a
        # rotated order), so a neighbour's load on this shared machine hits all of them alike.
        for rnd in range(args.rounds):
            order = targets[rnd % len(targets) :] + targets[: rnd % len(targets)]  # nobody always goes first
            for c in CONCURRENCY:
                for name, server, kind, path in order:
                    r = load(ports[server], path, bodies[kind], c, args.seconds)
                    runs[name][f"c{c}"].append(r)
                    print(f"round {rnd + 1} {name:17s} c={c:<3d} {r}", file=sys.stderr)
    finally:
        for proc in procs.values():
            stop(proc)
    results = {name: {level: median_run(rs) for level, rs in levels.items()} for name, levels in runs.items()}

    ours32, ml32 = results["ours"]["c32"]["rps"], results["mlflow"]["c32"]["rps"]
    out = {
        "serving": {
            **results,
            "throughput_ratio_c32": round(ours32 / ml32, 2) if ml32 else None,
            "throughput_ratio_c32_entity": round(results["ours_entity"]["c32"]["rps"] / ml32, 2) if ml32 else None,
            "p99_c1_ours_vs_mlflow_ms": [results["ours"]["c1"]["p99_ms"], results["mlflow"]["c1"]["p99_ms"]],
        },
        "setup": {
            "client": "asyncio HTTP/1.1, one keep-alive connection per concurrent worker, closed loop, "
            "single-record requests, same host",
            "seconds_per_level": args.seconds,
            "rounds": args.rounds,
            "warmup_seconds": 1.0,
            "omp_num_threads": 1,
            "ours": "python -m include.mlops.serving (1 uvicorn worker, micro-batching, prediction log on)",
            "mlflow": "mlflow models serve -m models:/churn_model@champion --env-manager local -w 1",
            "startup_seconds": startup,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_at_end": os.getloadavg(),
        },
    }
    text = json.dumps(out, indent=2)
    print(text)
    Path(args.out).write_text(text + "\n")
    if tmp is not None:
        tmp.cleanup()
    return out


if __name__ == "__main__":
    main()
