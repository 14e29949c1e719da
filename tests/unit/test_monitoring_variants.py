"""Monitoring per variant and version, and registry faults that fail the task instead of skipping it.

A day of traffic goes through the real prediction-log writer: a shadow phase (champion v1
answers, v2 scores the same requests in the shadow) then a canary phase (v2 answers the routing's
share). v2 is trained on flipped labels, so its scores are far from the champion's reference:
a shadow row counted as an answer would show up as prediction drift and a worse ROC AUC. Real
MLflow (sqlite) and Evidently; the registry faults come from a loopback server answering 500 and
from a port nothing listens on.
"""

from __future__ import annotations

import logging
import socket
import threading
from datetime import date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import day_interval, use_home

DAY = date(2026, 10, 12)
ROWS = 600  # requests of the day: the first half in the shadow phase, the rest in the canary phase
CANARY_SHARE = 0.2


pytestmark = pytest.mark.usefixtures("keep_mlflow_uris")


def _train(spec, raw, labels, flip: bool):
    from include.mlops.features.build import build_features, model_features
    from include.mlops.training.fit import build_pipeline

    feats = build_features(raw, spec)
    y = labels[spec.label].to_numpy()
    # a logistic regression: quick to fit, and scores its own training rows about as it scores new
    # ones, so the champion's answers do not drift from its reference
    lr = spec.model_copy(update={"model": spec.model.model_copy(update={"family": "logistic_regression"})})
    model = build_pipeline(lr).fit(feats[model_features(spec)], 1 - y if flip else y)
    return model, feats


def _register(client, spec, model, X, tags: dict[str, str]) -> str:
    import mlflow

    from include.mlops.training.tracking import log_model

    with mlflow.start_run(tags=tags) as run:
        info = log_model(model, spec, X)
    try:
        client.create_registered_model(spec.model_name)
    except Exception:  # noqa: BLE001 - already there
        pass
    mv = client.create_model_version(spec.model_name, info.model_uri, run_id=run.info.run_id, model_id=info.model_id)
    return str(mv.version)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A home with champion v1 (honest) and v2 (flipped labels), and a day of logged traffic."""
    import mlflow
    import pandas as pd

    from include.mlops.config import get_settings
    from include.mlops.constants import CHAMPION
    from include.mlops.data.generator import Scenario, generate_day
    from include.mlops.features.build import build_features, model_features
    from include.mlops.registry import setup_mlflow
    from include.mlops.scores import score_model
    from include.mlops.serving.frames import FrameBuilder
    from include.mlops.serving.predlog import LogBatch, PredictionLog
    from include.mlops.serving.routing import CHALLENGER, SHADOW, choose
    from include.mlops.spec import load_spec
    from include.mlops.storage import ObjectStore

    home = tmp_path_factory.mktemp("variants_home")
    mp = pytest.MonkeyPatch()
    use_home(mp, home)
    spec = load_spec("churn")
    store = ObjectStore(f"file://{home / 'store'}")
    client = setup_mlflow(get_settings())
    mlflow.set_experiment("variants-test")

    raw_tr, lab_tr = generate_day(spec, DAY - timedelta(days=20), Scenario(), rows=1500, seed=3)
    honest, feats = _train(spec, raw_tr, lab_tr, flip=False)
    flipped, _ = _train(spec, raw_tr, lab_tr, flip=True)
    train = feats[[*model_features(spec)]].copy()
    train[spec.label] = lab_tr[spec.label].to_numpy()
    train_uri = store.put_parquet(f"training/{spec.name}/train.parquet", train)
    X = feats[model_features(spec)]
    v1 = _register(client, spec, honest, X, {"mlops.train_uri": train_uri})
    v2 = _register(client, spec, flipped, X, {"mlops.train_uri": train_uri})
    client.set_registered_model_alias(spec.model_name, CHAMPION, v1)

    # the day's traffic, through the real writer
    raw, labels = generate_day(spec, DAY, Scenario(), rows=ROWS, seed=9)
    Xd = build_features(raw, spec)[model_features(spec)]
    by_model = {v1: score_model(honest, Xd, spec), v2: score_model(flipped, Xd, spec)}
    epoch = pd.Timestamp("1970-01-01", tz="UTC")
    event = (pd.to_datetime(raw[spec.timestamp], utc=True) - epoch).dt.total_seconds().to_numpy()
    rows = raw[spec.feature_names].astype(object).where(raw[spec.feature_names].notna(), None).values.tolist()
    entities = [int(e) for e in raw[spec.entity_key]]
    plog = PredictionLog(store, spec, spec.model_name, flush_seconds=3600, builder=FrameBuilder(spec))
    plog.start()
    expected = {("champion", v1): 0, ("challenger", v2): 0, ("shadow", v2): 0}

    def submit(idx: list[int], version: str, variant: str, rid_suffix: str = "") -> None:
        if not idx:
            return
        s = by_model[version]
        plog.submit(
            LogBatch(
                rows=[rows[i] for i in idx],
                request_id=[f"req-{i}{rid_suffix}" for i in idx],
                ts=[float(event[i]) + 5 for i in idx],
                entity=[entities[i] for i in idx],
                prediction=[s.prediction[i] for i in idx],
                score=[float(s.score[i]) for i in idx],
                model_version=[version] * len(idx),
                variant=[variant] * len(idx),
                event_ts=[float(event[i]) for i in idx],
            )
        )
        expected[(variant, version)] += len(idx)

    for start in range(0, ROWS, 50):  # micro-batches of 50 requests
        idx = list(range(start, min(start + 50, ROWS)))
        if start < ROWS // 2:  # shadow phase: v1 answers everything, v2 scores the same requests
            submit(idx, v1, "champion")
            submit(idx, v2, SHADOW)  # the shadow row keeps the request id of the answer
        else:  # canary phase: the real routing decides who answers
            side = {i: choose("canary", CANARY_SHARE, True, entities[i], f"req-{i}") for i in idx}
            submit([i for i in idx if side[i] != CHALLENGER], v1, "champion")
            submit([i for i in idx if side[i] == CHALLENGER], v2, "challenger")
    plog.close()
    assert plog.written and all(f"dt={DAY}" in u for u in plog.written)
    # ground truth arrived (by the window's end) under the label feed
    store.put_parquet(f"{spec.label_spec.feed_prefix}/dt={DAY.isoformat()}/part-0.parquet", labels)
    yield {"home": home, "spec": spec, "store": store, "v1": v1, "v2": v2, "expected": expected, "client": client}
    mp.undo()


@pytest.fixture(scope="module")
def monitored(world):
    from include.mlops.monitoring.step import monitor

    handler = _Capture()
    logger = logging.getLogger("include.mlops.monitoring")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        summary = monitor(day_interval(DAY), "churn")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    return summary, handler.messages


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_the_log_separates_answers_from_shadow_rows(world):
    from include.mlops.monitoring.reading import read_predictions

    store, spec, exp = world["store"], world["spec"], world["expected"]
    answered, keys = read_predictions(store, spec, [DAY])
    shadow, _ = read_predictions(store, spec, [DAY], rows="shadow")
    both, _ = read_predictions(store, spec, [DAY], rows="all")
    assert len(answered) == ROWS and answered["request_id"].is_unique  # each request answered once
    assert len(shadow) == exp[("shadow", world["v2"])] == ROWS // 2
    assert len(both) == len(answered) + len(shadow) and keys
    assert set(shadow["request_id"]) <= set(answered["request_id"])  # a second opinion on answered requests
    counts = answered.groupby(["variant", "model_version"]).size().to_dict()
    assert counts == {k: v for k, v in exp.items() if k[0] != "shadow"}
    assert 0 < exp[("challenger", world["v2"])] < ROWS // 2  # the canary got a share, not everything
    with pytest.raises(ValueError, match="rows="):
        read_predictions(store, spec, [DAY], rows="champion")


def test_monitoring_counts_per_variant_and_version_and_judges_answers_only(world, monitored):
    summary, messages = monitored
    exp, v1, v2 = world["expected"], world["v1"], world["v2"]
    champ_rows = exp[("champion", v1)]
    # the headline (reports, drift policy) is the champion's answers; shadow rows are not answers
    assert summary["rows"] == champ_rows and summary["answered_rows"] == ROWS
    assert summary["shadow_rows"] == ROWS // 2
    assert summary["labelled_rows"] == champ_rows
    table = {(r["variant"], r["version"]): r for r in summary["variants"]}
    assert list(table) == [("champion", v1), ("challenger", v2), ("shadow", v2)]
    for key, r in table.items():
        assert r["rows"] == exp[key] and r["labelled_rows"] == exp[key], key
    assert table[("shadow", v2)]["answered"] is False and table[("champion", v1)]["answered"] is True
    assert sum(r["share"] for r in summary["variants"] if r["answered"]) == pytest.approx(1.0)
    # performance per version: the flipped v2 is worse than chance, as canary and as shadow
    assert table[("champion", v1)]["performance"]["roc_auc"] > 0.6
    assert table[("challenger", v2)]["performance"]["roc_auc"] < 0.4
    assert table[("shadow", v2)]["performance"]["roc_auc"] < 0.4
    assert summary["performance"]["roc_auc"] == pytest.approx(table[("champion", v1)]["performance"]["roc_auc"])
    # drift judged on the answers: the shadow's scores moved, the champion's did not
    assert not summary["prediction_drift"]["drifted"]
    assert table[("shadow", v2)]["prediction_drifted"] and table[("challenger", v2)]["prediction_drifted"]
    assert summary["prediction_drift"]["mean"] == pytest.approx(table[("champion", v1)]["score_mean"])
    assert summary["prediction_drift"]["score"] == table[("champion", v1)]["prediction_drift"]
    assert table[("shadow", v2)]["drift_share"] is None  # its inputs are the champion's requests
    assert table[("challenger", v2)]["drift_share"] is not None
    # the table: in the task log, beside the reports, in the MLflow run
    [logged] = [m for m in messages if "per variant and version" in m]
    assert f"| shadow | {v2} | no (shadow) | {ROWS // 2} |" in logged and f"| challenger | {v2} | yes |" in logged
    store = world["store"]
    assert store.get_text(store.key_of(summary["summary_uri"]).replace("summary.json", "variants.md")).startswith(
        "| variant | version |"
    )
    run = world["client"].get_run(summary["run_id"])
    assert run.data.metrics[f"shadow_v{v2}_rows"] == ROWS // 2
    assert run.data.metrics[f"champion_v{v1}_rows"] == champ_rows
    assert run.data.metrics["answered_rows"] == ROWS and run.data.metrics["shadow_rows"] == ROWS // 2


def test_the_drift_policy_decides_on_the_champions_answers(world, monitored):
    from include.mlops.retraining.drift_window import decide_window

    summary, _ = monitored
    out = decide_window(summary, "churn")
    assert out["rows"] == world["expected"][("champion", world["v1"])]
    assert (out["answered_rows"], out["shadow_rows"]) == (ROWS, ROWS // 2)
    assert out["action"] == "no_drift", out["table"]


def test_old_logs_read_as_champion_answers_of_an_unknown_version(tmp_path):
    import pandas as pd

    from include.mlops import layout
    from include.mlops.monitoring.reading import read_predictions
    from include.mlops.serving.predlog import with_variant_columns
    from include.mlops.spec import load_spec
    from include.mlops.storage import ObjectStore

    spec = load_spec("churn")
    store = ObjectStore(f"file://{tmp_path}")
    t = pd.Timestamp(f"{DAY} 08:00", tz="UTC")
    old = pd.DataFrame({"request_id": ["a", "b"], "ts": [t, t], "score": [0.1, 0.2]})
    new = pd.DataFrame(
        {
            "request_id": ["c", "c", "d"],
            "ts": [t, t, t],
            "score": [0.3, 0.9, 0.4],
            "model_version": ["4", "5", None],
            "variant": ["champion", "shadow", None],
        }
    )
    store.put_parquet(layout.online_predictions_key(spec, DAY, "old"), old)
    store.put_parquet(layout.online_predictions_key(spec, DAY, "new"), new)
    answered, _ = read_predictions(store, spec, [DAY])
    got = dict(
        zip(answered["request_id"], zip(answered["variant"], answered["model_version"], strict=True), strict=True)
    )
    assert got == {
        "a": ("champion", "unknown"),
        "b": ("champion", "unknown"),
        "c": ("champion", "4"),
        "d": ("champion", "unknown"),
    }
    shadow, _ = read_predictions(store, spec, [DAY], rows="shadow")
    assert list(shadow["request_id"]) == ["c"] and list(shadow["model_version"]) == ["5"]
    # an integer column that met a gap (3.0) still reads as version "3"
    assert list(with_variant_columns(pd.DataFrame({"model_version": [3.0, None]}))["model_version"]) == ["3", "unknown"]


# -- registry faults: fail the task, never skip it as "no champion" -------------------------------------
class _Failing:
    """An MLflow tracking server that answers every request with HTTP 500, on loopback."""

    def __init__(self) -> None:
        outer = self
        self.requests = 0

        class Handler(BaseHTTPRequestHandler):
            def _fail(self) -> None:
                outer.requests += 1
                body = b'{"error_code": "INTERNAL_ERROR", "message": "injected fault"}'
                self.send_response(500)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PATCH = do_DELETE = _fail  # noqa: N815

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.uri = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def failing_registry():
    server = _Failing()
    yield server
    server.close()


def _refused_uri() -> str:
    with socket.socket() as s:  # a port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def _point_at(monkeypatch, home: Path, tracking_uri: str) -> None:
    use_home(monkeypatch, home, MLFLOW_TRACKING_URI=tracking_uri)
    monkeypatch.delenv("MLOPS_MLFLOW_ARTIFACTS", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail at once: the task's retry is Airflow's
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")


@pytest.mark.parametrize("fault", ["http_500", "connection_refused"])
def test_a_registry_fault_fails_monitoring_batch_and_planning(fault, failing_registry, tmp_path, monkeypatch):
    from include.mlops.config import get_settings
    from include.mlops.monitoring.step import monitor
    from include.mlops.registry import NoChampion, RegistryUnavailable
    from include.mlops.retraining.plan import champion_interval_end
    from include.mlops.serving.batch import score_batch
    from include.mlops.spec import load_spec
    from include.mlops.storage import ObjectStore

    uri = failing_registry.uri if fault == "http_500" else _refused_uri()
    _point_at(monkeypatch, tmp_path, uri)
    iv = day_interval(DAY)
    with pytest.raises(RegistryUnavailable) as err:
        monitor(iv, "churn")
    assert not isinstance(err.value, NoChampion)
    msg = str(err.value)
    assert "champion alias of churn_model" in msg and uri in msg and "retried" in msg
    assert ("500" in msg) if fault == "http_500" else ("refused" in msg.lower() or "Max retries" in msg)
    store = ObjectStore(f"file://{tmp_path / 'store'}")
    assert store.list("reports/monitoring/") == [] and store.list("monitoring/") == []  # nothing decided
    with pytest.raises(RegistryUnavailable, match="champion alias of churn_model"):
        score_batch(iv, "churn")
    assert store.list("predictions/") == []
    with pytest.raises(RegistryUnavailable, match="training interval"):
        champion_interval_end(get_settings(), load_spec("churn"))
    if fault == "http_500":
        assert failing_registry.requests >= 3  # each read reached the server and got its 500


def test_the_monitor_task_fails_on_a_registry_fault_and_skips_only_without_a_champion(
    failing_registry, tmp_path, monkeypatch
):
    from airflow.sdk.exceptions import AirflowSkipException
    from mlops_airflow.monitoring_operators import MonitoringOperator

    from include.mlops.registry import RegistryUnavailable

    start = datetime(DAY.year, DAY.month, DAY.day).isoformat() + "+00:00"
    end = (datetime(DAY.year, DAY.month, DAY.day) + timedelta(days=1)).isoformat() + "+00:00"
    op = MonitoringOperator(task_id="monitor", dataset="churn", data_interval_start=start, data_interval_end=end)
    _point_at(monkeypatch, tmp_path / "faulty", failing_registry.uri)
    with pytest.raises(RegistryUnavailable):  # a failure (retried), not a skip
        op.execute({})
    # a registry that answers "no such model": the documented skip
    use_home(monkeypatch, tmp_path / "empty")
    with pytest.raises(AirflowSkipException, match="no champion yet"):
        op.execute({})


def test_no_champion_is_read_from_the_registry_as_not_found(tmp_path, monkeypatch):
    from include.mlops.config import get_settings
    from include.mlops.monitoring.step import monitor
    from include.mlops.registry import NoChampion, setup_mlflow
    from include.mlops.retraining.plan import champion_interval_end
    from include.mlops.serving import batch
    from include.mlops.spec import load_spec

    use_home(monkeypatch, tmp_path)
    with pytest.raises(NoChampion, match="no champion yet"):
        monitor(day_interval(DAY), "churn")
    with pytest.raises(NoChampion):
        batch.score_batch(day_interval(DAY), "churn")
    setup_mlflow(get_settings()).create_registered_model("churn_model")  # a model, but no alias yet
    with pytest.raises(NoChampion):
        monitor(day_interval(DAY), "churn")
    assert champion_interval_end(get_settings(), load_spec("churn")) is None
