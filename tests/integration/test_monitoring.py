"""`ml_monitoring` and `ml_retraining` with `dag.test()`: real Evidently, MLflow, Feast, on prediction logs
scored by the fixture's champion.

The session's `lifecycle` home is cloned (files copied, the absolute paths in MLflow's database
rewritten), so retraining here cannot change the champion other tests see.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from datetime import UTC, date, timedelta
from pathlib import Path

import pytest

from include.mlops.delivery.service import free_port
from tests.conftest import DEMO_START, ROOT, run_dag_day, ti_state, use_home, write_spec

pytestmark = pytest.mark.integration
ROWS = 800  # per day; the spec below samples windows down to 500 rows
NO_DRIFT_DAY = date(2026, 10, 12)
DRIFT_DAY = date(2026, 10, 13)
BROKEN_DAY = date(2026, 10, 15)
SCENARIO = {NO_DRIFT_DAY: "none", DRIFT_DAY: "covariate_drift", BROKEN_DAY: "corrupted"}


def clone_home(src: Path, dst: Path) -> None:
    """Copy a lifecycle home and point MLflow's records (artifact locations, tags) at the copy."""
    shutil.copytree(src, dst, dirs_exist_ok=True)
    con = sqlite3.connect(dst / "mlflow.db")
    old, new = str(src), str(dst)
    for (table,) in con.execute("select name from sqlite_master where type='table'").fetchall():
        for col in con.execute(f"pragma table_info('{table}')").fetchall():
            if "CHAR" in col[2].upper() or "TEXT" in col[2].upper():
                con.execute(
                    f'update "{table}" set "{col[1]}" = replace("{col[1]}", ?, ?) where "{col[1]}" like ?',
                    (old, new, f"%{old}%"),
                )
    con.commit()
    con.close()


class Receiver:
    """A webhook endpoint on 127.0.0.1 recording every JSON body."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, HTTPServer

        self.bodies: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                outer.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class MailSink:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        from email import message_from_bytes

        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"


@pytest.fixture(scope="module")
def channels():
    from aiosmtpd.controller import Controller

    hook = Receiver()
    sink = MailSink()
    smtp = Controller(sink, hostname="127.0.0.1", port=free_port())
    smtp.start()
    yield hook, sink, smtp.port
    smtp.stop()
    hook.close()


@pytest.fixture(scope="module")
def mon(lifecycle, airflow_db, channels, tmp_path_factory):
    """A clone of the lifecycle home, a monitoring spec, and prediction logs scored by the champion."""
    import mlflow
    import yaml

    from include.mlops.config import get_settings
    from include.mlops.data.generator import Scenario
    from include.mlops.data.predictions import simulate_predictions, write_prediction_log
    from include.mlops.registry import setup_mlflow
    from include.mlops.spec import load_spec
    from include.mlops.storage import get_store

    home = tmp_path_factory.mktemp("monitoring_home")
    clone_home(lifecycle["home"], home)
    hook, sink, smtp_port = channels
    mp = pytest.MonkeyPatch()
    use_home(mp, home)
    mp.setenv(
        "AIRFLOW_CONN_MLOPS_ALERTS_WEBHOOK",
        json.dumps({"conn_type": "http", "host": f"http://127.0.0.1:{hook.port}/hooks/mlops"}),
    )
    mp.setenv(
        "AIRFLOW_CONN_MLOPS_ALERTS_SMTP",
        json.dumps(
            {
                "conn_type": "smtp",
                "host": "127.0.0.1",
                "port": smtp_port,
                "extra": {
                    "to": "oncall@example.org",
                    "from_email": "mlops@example.org",
                    "disable_ssl": True,  # the loopback sink speaks plain SMTP
                    "disable_tls": True,
                },
            }
        ),
    )
    raw = yaml.safe_load(Path(lifecycle["spec_path"]).read_text())
    raw["monitoring"].update({"sample_rows": 500, "sample_seed": 11})
    raw["monitoring"]["policy"].update({"min_rows": 300, "min_labelled_rows": 100})
    spec_path = write_spec(home, raw)  # the clone's installed spec: steps find it by name
    spec = load_spec(raw["name"])
    store = get_store()
    setup_mlflow(get_settings())
    model = mlflow.sklearn.load_model(f"models:/{spec.model_name}@champion")
    feed = spec.label_spec.feed_prefix
    for i in range(7):  # 2026-10-09 .. 10-15: windows and their label lookback
        day = date(2026, 10, 9) + timedelta(days=i)
        name = SCENARIO.get(day, "none")
        log_df, labels = simulate_predictions(spec, model, day, Scenario(name, day), rows=ROWS, seed=5)
        if day == NO_DRIFT_DAY:  # half online, half batch: monitoring must read both
            write_prediction_log(store, spec, day, log_df.iloc[: ROWS // 2])
            write_prediction_log(store, spec, day, log_df.iloc[ROWS // 2 :].reset_index(drop=True), source="batch")
        else:
            write_prediction_log(store, spec, day, log_df)
        store.put_parquet(
            f"{feed}/dt={(day + timedelta(days=spec.label_delay_days)).isoformat()}/part-0.parquet", labels
        )
    yield {"home": home, "spec_path": str(spec_path), "spec_name": spec.name, "spec": spec, "hook": hook, "mail": sink}
    mp.undo()


@pytest.fixture(scope="module")
def dags(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert not bag.import_errors, bag.import_errors
    return bag.get_dag("ml_monitoring"), bag.get_dag("ml_retraining")


def asset_events(run) -> list:
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    with create_session() as s:
        rows = (
            s.query(AssetEvent)
            .filter(AssetEvent.source_dag_id == run.dag_id, AssetEvent.source_run_id == run.run_id)
            .all()
        )
        return [(e.asset.uri, dict(e.extra or {})) for e in rows]


def monitor_day(dags, mon, day):
    run, tis = run_dag_day(dags[0], day, dataset=mon["spec_name"])
    assert {t: ti_state(ti) for t, ti in tis.items()} == {"monitor": "success", "decide": "success"}
    return run, tis["monitor"].xcom_pull(task_ids="monitor"), tis["decide"].xcom_pull(task_ids="decide")


@pytest.fixture(scope="module")
def windows(dags, mon):
    """The three windows monitored once, in day order, each with what it sent and emitted.

    Built here rather than left by one test for the next: every test below passes alone and in
    any order (`make test` runs them in random order)."""
    out = {}
    for day in (NO_DRIFT_DAY, DRIFT_DAY, BROKEN_DAY):
        hooks, mails = len(mon["hook"].bodies), len(mon["mail"].messages)
        run, summary, decision = monitor_day(dags, mon, day)
        out[day] = {
            "run": run,
            "summary": summary,
            "decision": decision,
            "events": asset_events(run),
            "hook": list(mon["hook"].bodies[hooks:]),
            "mail": list(mon["mail"].messages[mails:]),
        }
    return out


def test_no_drift_emits_nothing_and_writes_reports_and_history(windows):
    from include.mlops.storage import get_store

    w = windows[NO_DRIFT_DAY]
    summary, decision = w["summary"], w["decision"]
    assert decision["action"] == "no_drift" and not decision["fire"]
    assert w["events"] == []
    assert w["hook"] == [] and w["mail"] == [], "a quiet window sends no alert"
    # both sources read, sampled with the recorded seed
    assert summary["rows"] == ROWS and summary["rows_used"] == 500 and summary["sample"] == {"rows": 500, "seed": 11}
    assert summary["prediction_objects"] == 2
    # one version answered everything (batch rows are the champion's answers too); no shadow rows
    assert [(v["variant"], v["version"], v["rows"]) for v in summary["variants"]] == [("champion", "1", ROWS)]
    assert (summary["answered_rows"], summary["shadow_rows"]) == (ROWS, 0)
    assert summary["variants"][0]["drift_share"] == summary["drift_share"]
    # labels joined on (entity, event time): the window's lookback includes 10-09, whose labels arrived on 10-12
    assert summary["labelled_rows"] == ROWS and summary["performance"]["roc_auc"] > 0.6
    store = get_store()
    prefix = f"reports/monitoring/churn/dt={NO_DRIFT_DAY}"
    for kind in ("data_drift", "prediction_drift", "performance", "data_quality"):
        assert store.exists(f"{prefix}/{kind}.html") and store.exists(f"{prefix}/{kind}.json"), kind
    assert summary["report_html"] == store.uri(f"{prefix}/data_drift.html")
    assert store.get_json(f"monitoring/churn/decisions/dt={NO_DRIFT_DAY}.json")["action"] == "no_drift"


def test_covariate_drift_emits_the_asset_event_and_alerts(windows, mon):
    from include.mlops.storage import get_store

    w = windows[DRIFT_DAY]
    summary, decision = w["summary"], w["decision"]
    assert decision["action"] == "retrain", decision["table"]
    [(uri, extra)] = w["events"]
    assert uri == "x-mlops://drift/churn"
    assert extra["drift_share"] >= 0.25 and extra["drift_share"] == summary["drift_share"]
    assert {"monthly_charges", "support_calls_30d", "plan"} <= set(extra["drifted_features"])
    assert extra["window_day"] == DRIFT_DAY.isoformat() and extra["window_end"].startswith("2026-10-14")
    assert extra["report_uri"].endswith(f"dt={DRIFT_DAY}/data_drift.html")
    assert get_store().exists(get_store().key_of(extra["report_uri"]))
    assert extra["spec"] == mon["spec_name"] and extra["champion_version"] == "1"
    assert not any(s in json.dumps(extra).lower() for s in ("password", "secret", "token"))
    [body] = [b for b in w["hook"] if "RETRAIN" in b["text"]]
    text = json.dumps(body)
    assert "churn_model" in text and "monthly_charges" in text and extra["report_uri"] in text
    assert "/dags/ml_monitoring/runs/" in text and "/#/experiments/" in text
    assert any("drift decision RETRAIN" in m["Subject"] for m in w["mail"])


def test_data_quality_failure_alerts_quarantines_and_emits_nothing(windows):
    from include.mlops.storage import get_store

    w = windows[BROKEN_DAY]
    summary, decision = w["summary"], w["decision"]
    assert not summary["data_quality"]["passed"]
    failed = {f["check"].split("(")[0] for f in summary["data_quality"]["failures"]}
    assert failed == {
        "MissingValueCount",
        "OutListValueCount",
        "OutRangeValueCount",
    }  # nulls, unknown category, out of range
    assert decision["action"] == "quarantine" and not decision["fire"]
    assert w["events"] == []
    store = get_store()
    q = f"quarantine/churn/monitoring/dt={BROKEN_DAY}"
    assert store.exists(f"{q}/data_quality.json") and store.exists(f"{q}/online-000.parquet")
    [body] = [b for b in w["hook"] if "quarantined" in b["text"]]
    assert summary["data_quality"]["failures"][0]["check"] in json.dumps(body)
    assert any("quarantined" in m["Subject"] for m in w["mail"])


def test_rerun_of_a_window_replaces_its_history(dags, mon, windows):
    from include.mlops.config import get_settings
    from include.mlops.registry import setup_mlflow

    client = setup_mlflow(get_settings())
    exp = client.get_experiment_by_name("churn-monitoring")
    runs = client.search_runs([exp.experiment_id], f"tags.`mlops.window_day` = '{NO_DRIFT_DAY}'")
    assert len(runs) == 1
    _, summary, decision = monitor_day(dags, mon, NO_DRIFT_DAY)
    runs = client.search_runs([exp.experiment_id], f"tags.`mlops.window_day` = '{NO_DRIFT_DAY}'")
    assert [r.info.run_id for r in runs] == [summary["run_id"]] and decision["action"] == "no_drift"
    r = runs[0]
    assert r.data.metrics["drift_share"] == summary["drift_share"] and r.data.params["sample_seed"] == "11"
    assert {"drift_monthly_charges", "perf_roc_auc", "prediction_drift_score"} <= set(r.data.metrics)
    # the Evidently workspace: one project, four snapshots per window, whatever the re-runs
    ws = Path(get_settings().home) / "evidently"
    [index] = list(ws.glob(".mlops-index-*.json"))
    days = json.loads(index.read_text())
    assert set(days) == {str(NO_DRIFT_DAY), str(DRIFT_DAY), str(BROKEN_DAY)}
    project = index.name.removeprefix(".mlops-index-").removesuffix(".json")
    assert len(list((ws / project / "snapshots").glob("*.json"))) == sum(len(v) for v in days.values())


def test_monitor_task_links_to_its_report(dags):
    from mlops_airflow.links import MlflowRunLink, ReportLink

    kinds = {type(link) for link in dags[0].get_task("monitor").operator_extra_links}
    assert {ReportLink, MlflowRunLink} <= kinds


def test_retraining_with_params_registers_a_new_version_through_the_gate(dags, mon, tmp_path, monkeypatch):
    """A manual run with params: a new version is registered and the gate decides. A strict gate keeps
    this deterministic (and needs no service for post-deployment checks): the champion stays, and the
    rejection is alerted."""
    from datetime import datetime

    import yaml

    from include.mlops.config import get_settings
    from include.mlops.registry import alias_version, setup_mlflow

    spec = mon["spec"]
    strict = yaml.safe_load(Path(mon["spec_path"]).read_text())
    strict["gate"]["minimums"] = {"roc_auc": 0.999}
    write_spec(tmp_path, strict)  # the same name, found first: MLOPS_SPEC_DIRS comes before the home
    monkeypatch.setenv("MLOPS_SPEC_DIRS", str(tmp_path / "specs"))
    client = setup_mlflow(get_settings())
    before = {v.version for v in client.search_model_versions(f"name='{spec.model_name}'")}
    champion_before = alias_version(client, spec.model_name, "champion")
    hook_before = len(mon["hook"].bodies)
    conf = {
        "dataset": spec.name,
        "window_end": str(DEMO_START + timedelta(days=9)),
        "window_days": 5,
        "data_strategy": "sliding_window",
        "deploy_strategy": "direct",
    }
    run = dags[1].test(logical_date=datetime(2026, 10, 16, tzinfo=UTC), run_conf=conf)
    tis = {ti.task_id: ti for ti in run.get_task_instances()}
    assert {t: ti_state(ti) for t, ti in tis.items()} == {
        t: "success" for t in ("plan", "train", "evaluate", "register", "deploy")
    }
    plan = tis["plan"].xcom_pull(task_ids="plan")
    assert (plan["window_days"], plan["data_strategy"], plan["trigger"]) == (5, "sliding_window", "manual")
    assert plan["interval_end"] == "2026-10-11T00:00:00+00:00" and plan["report_uri"].endswith("validation.json")
    reg = tis["register"].xcom_pull(task_ids="register")
    assert reg["created"] and reg["version"] not in before
    mv = client.get_model_version(spec.model_name, reg["version"])
    assert mv.tags["airflow.dag_id"] == "ml_retraining" and mv.tags["gate"] == "failed"
    assert mv.tags["gx_result_uri"] == plan["report_uri"]
    assert alias_version(client, spec.model_name, "challenger") == reg["version"]
    run_tags = client.get_run(reg["run_id"]).data.tags
    assert run_tags["mlops.retrain_trigger"] == "manual" and run_tags["mlops.data_strategy"] == "sliding_window"
    assert client.get_run(reg["run_id"]).data.params["window_days"] == "5"
    deployed = tis["deploy"].xcom_pull(task_ids="deploy")
    assert deployed["message"].startswith("not promoted: minimum roc_auc")
    assert alias_version(client, spec.model_name, "champion") == champion_before
    [body] = [b for b in mon["hook"].bodies[hook_before:] if "rejected by the gate" in b["text"]]
    assert f"v{reg['version']}" in body["text"] and "/dags/ml_retraining/runs/" in json.dumps(body)


def test_drift_event_runs_ml_retraining_on_a_real_scheduler_and_the_champion_moves_up(dags, mon, tmp_path, monkeypatch):
    """End to end, no dag.test for the consumer: the drift window's Asset event is queued in the
    metadata DB, `airflow standalone` (a real scheduler and LocalExecutor) starts `ml_retraining` for
    it, and the new version is promoted through the gate. The gate is lenient here (a new version on
    a short window may lose by a little); the gate's own decisions have their tests above."""
    import os

    import yaml
    from airflow.models.asset import AssetDagRunQueue
    from airflow.utils.session import create_session

    from include.mlops.config import get_settings
    from include.mlops.local.airflow_env import pause_all_but, reserialize_dags
    from include.mlops.local.airflow_standalone import AirflowStandalone
    from include.mlops.registry import alias_version, setup_mlflow

    spec = mon["spec"]
    # its own copy of the home: the champion it promotes must not be what the other tests see
    home = tmp_path / "home"
    clone_home(mon["home"], home)
    use_home(monkeypatch, home)
    raw = yaml.safe_load(Path(mon["spec_path"]).read_text())
    raw["gate"].update({"max_regression": 1.0, "slice_max_regression": 1.0, "minimums": {"roc_auc": 0.5}})
    raw["monitoring"]["retraining"] = {"data_strategy": "all_history", "window_days": 14}
    write_spec(home, raw)  # this copy's installed spec (the scheduler's tasks find it by name)
    client = setup_mlflow(get_settings())
    champion_before = int(alias_version(client, spec.model_name, "champion"))

    env = dict(os.environ)
    reserialize_dags(env)  # ml_retraining must be in the DB, unpaused, when the event is emitted
    paused = pause_all_but({"ml_retraining"})
    assert {"ml_training", "ml_monitoring"} <= set(paused)
    # a queue entry left by an earlier test's drift event would date the run before this test's
    # event, and the scheduler hands a run only the events up to its queue entry
    with create_session() as s:
        s.query(AssetDagRunQueue).delete()
    run, tis = run_dag_day(dags[0], DRIFT_DAY, dataset=spec.name)
    decision = tis["decide"].xcom_pull(task_ids="decide")
    assert decision["action"] == "retrain", decision["table"]
    with create_session() as s:
        assert [q.target_dag_id for q in s.query(AssetDagRunQueue).all()] == ["ml_retraining"]

    airflow = AirflowStandalone(env, tmp_path / "standalone.log")
    try:
        airflow.start(hold=("ml_retraining",))
        done = airflow.wait_for_run("ml_retraining", run_type="asset_triggered", timeout=900)
    finally:
        airflow.stop()
    states = {ti["task_id"]: ti["state"] for ti in done["task_instances"]}
    assert done["state"] == "success", (states, (tmp_path / "standalone.log").read_text()[-3000:])
    assert states == {t: "success" for t in ("plan", "train", "evaluate", "register", "deploy")}
    assert {ti["try_number"] for ti in done["task_instances"]} == {1}, done["task_instances"]
    champion_after = int(alias_version(client, spec.model_name, "champion"))
    assert champion_after > champion_before
    mv = client.get_model_version(spec.model_name, str(champion_after))
    assert mv.tags["airflow.dag_id"] == "ml_retraining" and mv.tags["airflow.run_id"] == done["dag_run_id"]
    tags = client.get_run(mv.run_id).data.tags
    assert tags["mlops.retrain_trigger"] == "drift" and tags["mlops.data_strategy"] == "all_history"


# -- pure pieces of the monitoring task (no fixtures) ------------------------------------------------------
def test_labels_join_on_event_time_else_on_the_request_day():
    import pandas as pd

    from include.mlops.monitoring.reading import join_labels, sample
    from include.mlops.spec import load_spec

    spec = load_spec("churn")
    t = pd.Timestamp("2026-10-12 08:00", tz="UTC")
    labels = pd.DataFrame(
        {"customer_id": [1, 2, 3], "event_timestamp": [t, t, t - pd.Timedelta(days=1)], "churned": [1, 0, 1]}
    )
    online = pd.DataFrame(
        {
            "request_id": ["a", "b", "c"],
            "ts": [t + pd.Timedelta(minutes=5)] * 3,
            "customer_id": pd.array([1, 3, None], dtype="Int64"),
            "score": [0.9, 0.2, 0.5],
        }
    )
    batch = pd.DataFrame(
        {
            "request_id": ["d", "e"],
            "ts": [t + pd.Timedelta(hours=30)] * 2,
            "customer_id": [2, 1],
            "event_timestamp": [t, t + pd.Timedelta(seconds=1)],
            "score": [0.1, 0.8],
        }
    )
    joined = join_labels(pd.concat([online, batch], ignore_index=True), labels, spec)
    # a: same entity and request day; b: entity 3's label is for the day before; c: no entity;
    # d: exact event time (the request came a day later); e: event time differs by a second
    assert sorted(joined["request_id"]) == ["a", "d"]
    assert dict(zip(joined["request_id"], joined["churned"], strict=True)) == {"a": 1, "d": 0}
    frame = pd.DataFrame({"x": range(1000)})
    assert sample(frame, 100, 7).equals(sample(frame, 100, 7)) and len(sample(frame, 100, 7)) == 100
    assert sample(frame, 5000, 7) is frame
