"""The gate fails closed and keeps its history, with a real MLflow registry and real models.

Models of controlled quality: logistic regressions trained on the same rows with a growing
share of labels replaced by a wrong rule (low monthly charges = churn), so each one is a little
worse than the one before on the same holdout. They are logged, registered and promoted through
the pipeline's own steps, and `pipeline.evaluate` judges each.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from include.mlops.results import TrainResult
from tests.conftest import DEMO_START, day_interval, use_home

pytestmark = pytest.mark.integration
DECAY = "gatedecay"
FRACTIONS = [0.0, 0.03, 0.06, 0.09, 0.12, 0.15, 0.18]  # share of wrong labels: v1 (best) .. v7
LINEAGE = {"dag_id": "test_evaluate_faults", "run_id": "test"}
IV = day_interval(DEMO_START + timedelta(days=9))


def _install_spec(home: Path, name: str, drop: tuple[str, ...] = (), **gate) -> None:
    """The churn spec as `name` (found by name in home/specs): logistic regression, no slices."""
    import yaml

    from include.mlops.spec import SPEC_DIR

    raw = yaml.safe_load((SPEC_DIR / "churn.yaml").read_text())
    raw["name"] = name
    raw["features"] = {k: v for k, v in raw["features"].items() if k not in drop}
    raw["model"] = {**raw["model"], "family": "logistic_regression", "params": {}}
    raw["gate"] = {"minimums": {"roc_auc": 0.6}, "max_regression": 0.02, "slices": [], **gate}
    (home / "specs").mkdir(exist_ok=True)
    (home / "specs" / f"{name}.yaml").write_text(yaml.safe_dump(raw))


def _frame(spec, first_day: int, days: int, rows: int) -> pd.DataFrame:
    from include.mlops.data.generator import generate_day
    from include.mlops.features.build import build_features
    from include.mlops.spec import load_spec

    churn = load_spec("churn")  # the demo generator is the churn one; the features are `spec`'s
    out = []
    for i in range(days):
        ev, lab = generate_day(churn, DEMO_START + timedelta(days=first_day + i), rows=rows)
        f = build_features(ev, spec)
        f[spec.label] = lab[spec.label].to_numpy()
        out.append(f)
    return pd.concat(out, ignore_index=True)


def _fit(spec, train: pd.DataFrame, wrong_share: float):
    from include.mlops.features.build import model_features
    from include.mlops.training import fit as T

    y = train[spec.label].to_numpy().copy()
    wrong = (train["monthly_charges"] < train["monthly_charges"].median()).astype(y.dtype).to_numpy()
    swap = np.random.default_rng(0).random(len(y)) < wrong_share
    y[swap] = wrong[swap]
    return T.build_pipeline(spec).fit(train[model_features(spec)], y)


def _log(spec, model, train: pd.DataFrame, holdout_uri: str, tag: str) -> TrainResult:
    """What `pipeline.train` hands on, for a model fitted here: a run with the logged model."""
    import mlflow

    from include.mlops.config import get_settings
    from include.mlops.features.build import model_features
    from include.mlops.registry import ensure_experiment, setup_mlflow
    from include.mlops.training import tracking as P

    settings = get_settings()
    exp = ensure_experiment(setup_mlflow(settings), spec.name, settings)
    with mlflow.start_run(experiment_id=exp, run_name=tag) as run:
        info = P.log_model(model, spec, train[model_features(spec)].head(5))
    return TrainResult(
        run_id=run.info.run_id, experiment_id=exp, model_uri=info.model_uri, train_uri="", holdout_uri=holdout_uri,
        data_hash=tag, rows={"train": len(train)}, reused=False,
    )  # fmt: skip


def _client():
    from include.mlops.config import get_settings
    from include.mlops.registry import setup_mlflow

    return setup_mlflow(get_settings())


def _gate_files(run_id: str) -> list[str]:
    return sorted(a.path for a in _client().list_artifacts(run_id, "evaluation"))


def _read_gate(run_id: str, path: str = "evaluation/gate.json") -> dict:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return json.loads(Path(_client().download_artifacts(run_id, path, tmp)).read_text())


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    from include.mlops.storage import ObjectStore, ensure_bucket

    path = tmp_path_factory.mktemp("gate_home")
    with pytest.MonkeyPatch.context() as mp:
        use_home(mp, path)
        ensure_bucket(ObjectStore(f"file://{path / 'store'}"))
        yield path


@pytest.fixture(scope="module")
def decay(home):
    """Seven models, each a little worse than the last, evaluated in turn; each one the gate
    passes is registered and promoted (as the DAG's register and deploy steps do)."""
    from include.mlops import pipeline as P
    from include.mlops.constants import CHAMPION
    from include.mlops.registry import alias_version
    from include.mlops.spec import load_spec
    from include.mlops.storage import get_store

    _install_spec(home, DECAY, cumulative_max_regression=0.04, reference_champions=5)
    spec = load_spec(DECAY)
    train, holdout = _frame(spec, 0, 4, 500), _frame(spec, 9, 2, 1000)
    holdout_uri = get_store().put_parquet(f"training/{DECAY}/holdout.parquet", holdout)
    steps = []
    for k, share in enumerate(FRACTIONS):
        tr = _log(spec, _fit(spec, train, share), train, holdout_uri, f"decay-{k + 1}")
        ev = P.evaluate(tr, DECAY)
        rg = P.register(tr, ev, None, LINEAGE, IV, DECAY)
        if ev.passed:
            P.promote(rg, ev, f"decay-{k + 1}", "test_evaluate_faults", spec_name=DECAY)
        steps.append(
            {
                "train": tr,
                "evaluate": ev,
                "version": rg.version,
                "champion": alias_version(_client(), spec.model_name, CHAMPION),
                "record": _read_gate(tr.run_id),
                "files": _gate_files(tr.run_id),
            }
        )
    return {"spec": spec, "steps": steps}


def test_slow_decay_is_refused_against_the_reference(decay):
    steps = decay["steps"]
    auc = [s["evaluate"].metrics["roc_auc"] for s in steps]
    drops = [a - b for a, b in zip(auc, auc[1:], strict=False)]
    assert all(0 < d < 0.02 for d in drops), drops  # each retrain a little worse, within max_regression
    # five retrains promoted one after the other
    assert [s["champion"] for s in steps[:6]] == ["1", "2", "3", "4", "5", "6"]
    assert all(s["evaluate"].passed for s in steps[:6])
    assert auc[0] - auc[5] > 0.02, "the slide already exceeds max_regression when v6 is promoted"

    # the sixth retrain is refused, by the reference (v1) and not by the champion check
    last = steps[6]
    assert not last["evaluate"].passed and last["champion"] == "6" and last["version"] == "7"
    assert [r.split(":")[0] for r in last["evaluate"].reasons] == ["regression of roc_auc vs reference v1"]
    checks = {c["check"]: c for c in last["record"]["checks"]}
    assert checks["regression of roc_auc vs champion"]["passed"]
    ref = last["record"]["reference"]
    assert ref["version"] == "1" and ref["considered"] == ["6", "5", "4", "3", "2", "1"]
    assert ref["ci"]["low"] > 0.04 and ref["ci"]["resamples"] == 300
    assert last["record"]["champion_ci"]["low"] <= 0.02
    # the reference row was there for v6 too, and passed
    v6 = {c["check"]: c for c in steps[5]["record"]["checks"]}
    assert v6["regression of roc_auc vs reference v1"]["passed"]


def test_rerun_after_promotion_reuses_the_decision_and_history_grows(decay):
    from include.mlops import pipeline as P

    steps = decay["steps"]
    champion_run = steps[5]["train"]  # v6, the champion
    before = _gate_files(champion_run.run_id)
    again = P.evaluate(champion_run, DECAY)
    assert again.reused is True and again.passed is True
    assert again.champion_version == "5", "the decision taken against v5, not against itself"
    assert _gate_files(champion_run.run_id) == before

    refused_run = steps[6]["train"]  # v7, not promoted: a re-run decides again and keeps both
    first = _read_gate(refused_run.run_id)
    history = [p for p in _gate_files(refused_run.run_id) if p.startswith("evaluation/gate-")]
    out = P.evaluate(refused_run, DECAY)
    assert not out.passed and not out.reused
    after = [p for p in _gate_files(refused_run.run_id) if p.startswith("evaluation/gate-")]
    assert len(after) == len(history) + 2 and set(history) < set(after)  # one .json and one .txt more
    assert _read_gate(refused_run.run_id) == first  # the first decision is never overwritten


def test_rerun_without_a_record_compares_with_the_champion_before(decay, home):
    """A promoted run whose gate record is gone (an old run) is compared with the champion that
    was in force before it, never with itself."""
    import shutil

    from include.mlops import pipeline as P

    run = decay["steps"][2]["train"]  # v3: champion once, replaced since
    local = Path(_client().get_run(run.run_id).info.artifact_uri.removeprefix("file://")) / "evaluation"
    shutil.rmtree(local)
    out = P.evaluate(run, DECAY)
    assert not out.reused and out.champion_version == "2"
    rec = _read_gate(run.run_id)
    assert rec["champion_version"] == "2" and "3" not in rec["reference"]["considered"]


def _model_file(version: str) -> Path:
    from include.mlops.spec import load_spec

    mv = _client().get_model_version(load_spec(DECAY).model_name, version)
    source = mv.source
    if source.startswith("models:/"):
        source = _client().get_logged_model(source.removeprefix("models:/").split("/")[0]).artifact_location
    files = list(Path(source.removeprefix("file://")).rglob("model.skops"))
    assert len(files) == 1, files
    return files[0]


def test_champion_that_cannot_be_loaded_fails_the_task(decay):
    from include.mlops import pipeline as P
    from include.mlops.evaluation.gate import GateError

    run = decay["steps"][6]["train"]
    before = _gate_files(run.run_id)
    path = _model_file("6")  # the champion's artifact, damaged
    saved = path.read_bytes()
    try:
        path.write_bytes(b"not a model")
        with pytest.raises(GateError, match=r"cannot load the champion gatedecay_model v6 .*models:/gatedecay_model/6"):
            P.evaluate(run, DECAY)
    finally:
        path.write_bytes(saved)
    assert _gate_files(run.run_id) == before, "no decision may be recorded without the champion"


def test_champion_on_features_the_spec_dropped_follows_the_rule(home):
    """The spec drops a feature: the champion cannot score the new holdout. The explicit rule
    (gate.feature_change) decides, said in the gate table; anything else would fail the task."""
    from include.mlops import pipeline as P
    from include.mlops.constants import CHAMPION
    from include.mlops.registry import alias_version
    from include.mlops.spec import load_spec
    from include.mlops.storage import get_store

    name = "gatefeat"
    _install_spec(home, name)
    spec = load_spec(name)
    train, holdout = _frame(spec, 0, 3, 300), _frame(spec, 9, 1, 400)
    tr = _log(
        spec, _fit(spec, train, 0.0), train, get_store().put_parquet(f"training/{name}/h1.parquet", holdout), "v1"
    )
    ev = P.evaluate(tr, name)
    P.promote(P.register(tr, ev, None, LINEAGE, IV, name), ev, "feat-1", "test", spec_name=name)
    assert alias_version(_client(), spec.model_name, CHAMPION) == "1"

    for rule, passes in (("minimums", True), ("refuse", False)):
        _install_spec(home, name, drop=("plan",), feature_change=rule)
        narrow = load_spec(name)
        train, holdout = _frame(narrow, 0, 3, 300), _frame(narrow, 9, 1, 400)
        assert "plan" not in holdout.columns
        uri = get_store().put_parquet(f"training/{name}/h-{rule}.parquet", holdout)
        tr2 = _log(narrow, _fit(narrow, train, 0.0), train, uri, rule)
        out = P.evaluate(tr2, name)
        assert out.passed is passes, out.reasons
        note = {c["check"]: c for c in _read_gate(tr2.run_id)["checks"]}["vs champion"]["note"]
        assert "champion v1 cannot score this holdout" in note and "(plan)" in note
        assert f"gate.feature_change: {rule}" in note
        assert "vs champion" in _read_text(tr2.run_id)


def _read_text(run_id: str) -> str:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return Path(_client().download_artifacts(run_id, "evaluation/gate.txt", tmp)).read_text()


# -- train: one run per interval and data hash, even after a kill ---------------------------------
ORPHAN = """
import sys, time, mlflow
mlflow.set_tracking_uri(sys.argv[1])
run = mlflow.start_run(experiment_id=sys.argv[2], tags={"mlops.interval": sys.argv[3], "mlops.data_hash": sys.argv[4]})
print(run.info.run_id, flush=True)
time.sleep(600)
"""


def test_train_closes_the_run_a_killed_attempt_left_running(lifecycle_env):
    from mlflow.entities import ViewType

    from include.mlops import pipeline as P
    from include.mlops.config import get_settings

    lc = lifecycle_env
    name, tr, iv = Path(lc["spec_path"]).stem, lc["train"], lc["interval"]
    client = _client()
    exp = client.get_run(tr.run_id).info.experiment_id
    args = [get_settings().tracking_uri, exp, iv.key, tr.data_hash]
    proc = subprocess.Popen([sys.executable, "-c", ORPHAN, *args], stdout=subprocess.PIPE, text=True, env=os.environ)
    try:  # the attempt is killed once its run exists
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + 300
        while not sel.select(timeout=1) and proc.poll() is None and time.monotonic() < deadline:
            pass
        orphan = proc.stdout.readline().strip()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert orphan and client.get_run(orphan).info.status == "RUNNING"

    out = P.train(iv, {**LINEAGE, "run_id": "retry"}, name)
    same = client.search_runs(
        [exp],
        f"tags.`mlops.interval` = '{iv.key}' and tags.`mlops.data_hash` = '{tr.data_hash}'",
        run_view_type=ViewType.ALL,
    )
    status = {r.info.run_id: r.info.status for r in same}
    assert [r for r, s in status.items() if s == "FINISHED"] == [out.run_id]
    assert status[orphan] == "FAILED" and "RUNNING" not in status.values()
    assert "killed training attempt" in client.get_run(orphan).data.tags["mlops.closed_reason"]
