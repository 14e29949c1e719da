"""Alerts: payloads rendered by the project, delivered by the Airflow providers (Slack, HTTP with
retries, SMTP) to real receivers on loopback: an HTTP server thread and an aiosmtpd server."""

from __future__ import annotations

import json
import threading
import time
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from include.mlops import alerts as A

DECISION = {
    "action": "retrain",
    "day": "2026-10-14",
    "reason": "drift share 0.389 >= 0.250",
    "dataset": "churn",
    "model": "churn_model",
    "champion_version": "3",
    "drift_share": 0.3889,
    "rows": 600,
    "labelled_rows": 580,
    "drifted_features": ["monthly_charges", "plan", "support_calls_30d"],
    "performance_drop": -0.01,
    "window": {"day": "2026-10-14"},
    "table": "rule  value\ndrift share 0.389  SIGNAL",
    "alert": True,
    "fire": True,
    "report_html": "file:///store/reports/monitoring/churn/dt=2026-10-14/data_drift.html",
    "run_id": "r1",
    "experiment_id": "7",
}
DEPLOY = {
    "promoted": False,
    "message": "not promoted: minimum roc_auc",
    "model": "churn_model",
    "version": "2",
    "champion": "1",
    "run_id": "r2",
    "experiment_id": "1",
    "gate_passed": False,
}


class Receiver:
    """A webhook endpoint on 127.0.0.1 that records every JSON body; it answers `fail_status` to
    the first `fail_first` requests (or to all of them when `fail_first` is None), then 200."""

    def __init__(self, fail_status: int = 500, fail_first: int | None = 0) -> None:
        self.bodies: list[dict] = []
        self.answers: list[int] = []
        self.fail_status, self.fail_first = fail_status, fail_first
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.bodies.append(
                    {"path": self.path, "json": json.loads(body), "content_type": self.headers["Content-Type"]}
                )
                failing = outer.fail_first is None or len(outer.bodies) <= outer.fail_first
                outer.answers.append(outer.fail_status if failing else 200)
                self.send_response(outer.answers[-1])
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hooks/mlops"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def texts(self) -> list[str]:
        return [b["json"]["text"] for b in self.bodies]


@pytest.fixture
def webhook():
    with Receiver() as r:
        yield r


@pytest.fixture
def smtp_server():
    from aiosmtpd.controller import Controller

    from include.mlops.delivery.service import free_port

    class Sink:
        def __init__(self):
            self.messages = []

        async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's naming)
            self.messages.append(
                {"from": envelope.mail_from, "to": list(envelope.rcpt_tos), "msg": message_from_bytes(envelope.content)}
            )
            return "250 OK"

    sink = Sink()
    ctl = Controller(sink, hostname="127.0.0.1", port=free_port())
    ctl.start()
    yield ctl, sink
    ctl.stop()


def _text(payload: dict) -> str:
    return json.dumps(payload)


# -- payloads ------------------------------------------------------------------------------------------
def test_drift_payload_is_slack_compatible_and_carries_model_decision_numbers_links():
    links = {
        "Airflow task log": "http://airflow/dags/ml_monitoring/runs/r/tasks/decide",
        "drift report": DECISION["report_html"],
        "MLflow monitoring run": "http://mlflow/#/experiments/7/runs/r1",
    }
    p = A.slack_payload(A.drift_alert(DECISION, links))
    assert set(p) == {"text", "blocks"} and "RETRAIN" in p["text"]
    assert p["blocks"][0]["type"] == "header" and all(
        b["type"] in {"header", "section", "context"} for b in p["blocks"]
    )
    body = _text(p)
    for needle in (
        "churn_model",
        "retrain: drift share 0.389",
        "0.3889",
        "monthly_charges, plan",
        "champion version",
        "<http://airflow/dags/ml_monitoring/runs/r/tasks/decide|Airflow task log>",
        f"<{DECISION['report_html']}|drift report>",
        "|MLflow monitoring run>",
        "```rule  value",
    ):
        assert needle in body, needle
    for b in p["blocks"]:
        assert len(b.get("fields", [])) <= 10
        assert len((b.get("text") or {}).get("text", "")) <= 3000


def test_quarantine_payload_is_critical():
    alert = A.drift_alert({**DECISION, "action": "quarantine", "reason": "data-quality check failed"})
    assert alert.event == "quarantine" and alert.severity == "critical" and "quarantined" in alert.title
    assert ":rotating_light:" in A.slack_payload(alert)["text"]


def test_gate_payload_names_both_versions_and_the_reasons():
    from include.mlops.results import EvaluateResult, PromoteResult

    deploy = PromoteResult.from_xcom(
        {**DEPLOY, "message": "not promoted: regression of roc_auc vs champion: ...", "version": "4"}
    )
    evaluate = EvaluateResult(
        passed=False,
        metrics={"roc_auc": 0.71, "f1": 0.4},
        champion_metrics={"roc_auc": 0.76, "f1": 0.41},
        reasons=["regression of roc_auc vs champion: champion 0.7600, challenger 0.7100"],
    )
    body = _text(
        A.slack_payload(A.gate_alert(deploy, evaluate, {"MLflow run": "http://mlflow/#/experiments/1/runs/r4"}))
    )
    for needle in (
        "v4 rejected by the gate",
        "challenger roc_auc",
        "0.7100",
        "champion roc_auc",
        "0.7600",
        "not promoted: regression",
        "|MLflow run>",
    ):
        assert needle in body, needle


def test_failure_and_rollback_payloads():
    fail = A.failure_alert(
        "ml_monitoring",
        "monitor",
        "scheduled__x",
        "ValueError: boom\ntraceback...",
        links={"Airflow task log": "http://airflow/log"},
        try_number=3,
    )
    assert fail.event == "task_failed" and fail.title == "ml_monitoring.monitor failed"
    assert fail.source["error"] == "ValueError: boom"
    rb = A.failure_alert(
        "ml_retraining", "deploy", "r", "PromotionError: smoke test failed", model="churn_model", rollback=True
    )
    assert rb.event == "rollback" and "rolled back" in rb.title and rb.model == "churn_model"
    manual = A.rollback_alert({"model": "churn_model", "from_version": "2", "to_version": "1", "message": "m"})
    assert manual.title == "churn_model: rolled back from v2 to v1" and manual.severity == "critical"


def test_email_subject_and_html_carry_the_alert():
    alert = A.drift_alert(DECISION, {"drift report": DECISION["report_html"]})
    assert A.email_subject(alert).startswith("[mlops][warning] churn: drift decision RETRAIN")
    body = A.email_html(alert)
    for needle in ("<th align='left'>drift share</th><td>0.3889</td>", "churn_model", DECISION["report_html"]):
        assert needle in body, needle
    assert "<pre>rule  value" in body
    assert "&lt;script&gt;" in A.email_html(A.Alert(event="drift", title="<script>"))


# -- delivery through the providers, with connections from the environment (as Airflow reads them) --------
# `airflow_db` first: it points Airflow at the project before anything imports airflow in this session.
class FakeTI:
    dag_id, run_id, task_id, try_number = "ml_monitoring", "scheduled__2026-10-15", "decide", 1
    log_url = "http://localhost:8080/dags/ml_monitoring/runs/scheduled__2026-10-15/tasks/decide"

    def __init__(self, values: dict, task_id: str = "decide"):
        self.values = values
        self.task_id = task_id

    def xcom_pull(self, task_ids=None, **_):
        return self.values.get(task_ids)


def _http_conn(url: str) -> str:
    return json.dumps({"conn_type": "http", "host": url})


def _slack_conn(url: str) -> str:
    return json.dumps({"conn_type": "slackwebhook", "password": url})


def _smtp_conn(port: int, **extra) -> str:
    extra = {"to": "oncall@example.org", "disable_ssl": True, "disable_tls": True, **extra}
    return json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": port, "extra": extra})


@pytest.fixture
def channels(airflow_db, monkeypatch):
    """Set the alert connections (None: that channel off), as `AIRFLOW_CONN_*` variables."""

    def use(webhook: str | None = None, smtp: str | None = None) -> None:
        for name, value in (("AIRFLOW_CONN_MLOPS_ALERTS_WEBHOOK", webhook), ("AIRFLOW_CONN_MLOPS_ALERTS_SMTP", smtp)):
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)

    return use


def _notify_drift(decision: dict = DECISION) -> None:
    from mlops_airflow.notifiers import DriftDecisionNotifier

    DriftDecisionNotifier().notify({"ti": FakeTI({"decide": decision})})


@pytest.mark.parametrize("conn", [_slack_conn, _http_conn], ids=["slack-provider", "http-provider"])
def test_drift_notifier_sends_to_the_webhook_and_smtp_connections(channels, webhook, smtp_server, conn):
    ctl, sink = smtp_server
    channels(webhook=conn(webhook.url), smtp=_smtp_conn(ctl.port, from_email="mlops@example.org"))
    _notify_drift()
    [got] = webhook.bodies
    assert got["path"] == "/hooks/mlops" and got["content_type"].startswith("application/json")
    assert got["json"]["text"].endswith("churn: drift decision RETRAIN for window 2026-10-14")
    body = json.dumps(got["json"])
    assert "churn_model" in body and FakeTI.log_url in body and DECISION["report_html"] in body
    assert "http://localhost:5000/#/experiments/7/runs/r1" in body
    [m] = sink.messages
    assert m["from"] == "mlops@example.org" and m["to"] == ["oncall@example.org"]
    assert "drift decision RETRAIN" in m["msg"]["Subject"]
    html = m["msg"].get_payload()[0].get_payload(decode=True).decode()
    assert "<td>0.3889</td>" in html
    _notify_drift({**DECISION, "action": "no_drift", "alert": False})  # a quiet decision sends nothing
    assert len(webhook.bodies) == 1 and len(sink.messages) == 1


@pytest.mark.parametrize("conn", [_slack_conn, _http_conn], ids=["slack-provider", "http-provider"])
def test_a_webhook_that_fails_twice_then_answers_gets_the_alert_once(channels, monkeypatch, conn):
    from mlops_airflow import notifiers

    monkeypatch.setattr(notifiers, "BACKOFF_S", 0.1)  # waits 0.1 s, then 0.2 s (and Slack's jitter)
    with Receiver(fail_status=503, fail_first=2) as flaky:
        channels(webhook=conn(flaky.url))
        started = time.monotonic()
        _notify_drift()
        elapsed = time.monotonic() - started
    assert flaky.answers == [503, 503, 200]
    assert len({json.dumps(b["json"], sort_keys=True) for b in flaky.bodies}) == 1, "the same alert each try"
    assert elapsed >= 0.3, "the retries back off"


def test_a_refused_webhook_is_not_retried_and_the_email_still_goes_out(channels, smtp_server):
    from mlops_airflow.notifiers import AlertDeliveryError

    ctl, sink = smtp_server
    with Receiver(fail_status=400, fail_first=None) as broken:
        channels(webhook=_http_conn(broken.url), smtp=_smtp_conn(ctl.port))
        with pytest.raises(AlertDeliveryError, match="HTTP 400") as info:
            _notify_drift()
    assert broken.answers == [400], "a 4xx is final"
    assert "'email': 'sent'" in str(info.value)
    [m] = sink.messages
    assert m["from"] == "mlops@localhost"


def test_an_unreachable_webhook_does_not_leak_its_url(channels, monkeypatch):
    from mlops_airflow import notifiers
    from mlops_airflow.notifiers import AlertDeliveryError

    from include.mlops.delivery.service import free_port

    monkeypatch.setattr(notifiers, "BACKOFF_S", 0.01)  # the retries still happen, quickly
    channels(webhook=_http_conn(f"http://127.0.0.1:{free_port()}/secret-token-123"))
    with pytest.raises(AlertDeliveryError, match="ConnectionError") as info:
        _notify_drift()
    assert "secret-token-123" not in str(info.value)


@pytest.mark.parametrize(
    ("webhook", "smtp", "fix"),
    [
        ({"conn_type": "http", "host": "127.0.0.1", "port": 9, "schema": "hooks/x"}, None, "into 'host'"),
        ({"conn_type": "http", "extra": {"webhook_url": "http://h/w"}}, None, "into 'host'"),
        (None, {"conn_type": "smtp", "host": "127.0.0.1", "extra": {"to": "a@x", "ssl": "true"}}, "disable_ssl"),
        (None, {"conn_type": "smtp", "host": "127.0.0.1", "extra": {}}, "extra 'to'"),
    ],
)
def test_a_connection_in_the_old_form_is_refused_with_the_fix(channels, webhook, smtp, fix):
    from mlops_airflow.notifiers import AlertDeliveryError

    channels(webhook=webhook and json.dumps(webhook), smtp=smtp and json.dumps(smtp))
    with pytest.raises(AlertDeliveryError, match=fix):
        _notify_drift()


def test_notifiers_without_connections_send_nothing_and_do_not_fail(channels):
    from mlops_airflow.notifiers import TaskFailureNotifier

    channels()
    _notify_drift()
    TaskFailureNotifier().notify({"ti": FakeTI({}), "exception": RuntimeError("x")})


# what the evaluate task pushes for a rejected challenger (`EvaluateResult.to_xcom()`)
REJECTED_XCOM = {"passed": False, "reasons": ["minimum roc_auc"], "metrics": {"roc_auc": 0.61}}


def test_gate_rollback_and_failure_notifiers(channels, webhook):
    from mlops_airflow.notifiers import GateDecisionNotifier, RollbackNotifier, TaskFailureNotifier

    channels(webhook=_slack_conn(webhook.url))
    GateDecisionNotifier().notify({"ti": FakeTI({"deploy": DEPLOY, "evaluate": REJECTED_XCOM}, "deploy")})
    GateDecisionNotifier().notify(
        {
            "ti": FakeTI(
                {"deploy": {**DEPLOY, "promoted": True, "gate_passed": True, "message": "promoted v2"}}, "deploy"
            )
        }
    )
    TaskFailureNotifier().notify(
        {"ti": FakeTI({}, "deploy"), "exception": _deploy_error(rolled_back=True), "params": {"dataset": ""}}
    )
    manual = {
        "model": "churn_model",
        "from_version": "2",
        "to_version": "1",
        "changed": True,
        "message": "rolled churn_model back from v2 to v1",
    }
    RollbackNotifier().notify({"ti": FakeTI({"rollback": manual}, "rollback")})
    RollbackNotifier().notify({"ti": FakeTI({"rollback": {**manual, "changed": False}}, "rollback")})
    texts = webhook.texts()
    assert len(texts) == 3
    assert "churn_model: v2 rejected by the gate" in texts[0]
    assert "churn_model: deployment rolled back" in texts[1]
    assert "churn_model: rolled back from v2 to v1" in texts[2]


# -- decisions read from typed fields, never from a message or a class name ------------------------------
def _deploy_error(message: str = "v2 failed its post-deployment check: p99 over budget", **fields):
    """What the deploy step raises: `rollout`'s DeploymentCheckFailed re-raised by the operator as
    PromotionError from it (both real, raised and caught as Airflow hands them to the callback)."""
    from mlops_airflow.operators import PromotionError

    from include.mlops.delivery.rollout import DeploymentCheckFailed

    try:
        try:
            raise DeploymentCheckFailed(message, **fields)
        except DeploymentCheckFailed as exc:
            raise PromotionError(str(exc)) from exc
    except PromotionError as exc:
        return exc


def _failure_alert(exc: BaseException, dataset: str = ""):
    from mlops_airflow.notifiers import TaskFailureNotifier

    return TaskFailureNotifier().build({"ti": FakeTI({}, "deploy"), "exception": exc, "params": {"dataset": dataset}})


def test_a_rollback_alert_names_the_model_the_error_carries_with_an_empty_dataset_param(airflow_db):
    exc = _deploy_error(model="housing_model", version="4", rolled_back=True, rolled_back_to="3")
    alert = _failure_alert(exc)
    assert alert.event == "rollback" and alert.model == "housing_model"
    assert alert.title.startswith("housing_model: deployment rolled back")


@pytest.mark.parametrize(("env", "model"), [("housing", "housing_model"), (None, "churn_model")])
def test_a_rollback_without_a_model_names_the_default_datasets_model_from_its_spec(airflow_db, monkeypatch, env, model):
    """An error built from its message (and the rollback flag) alone: the model is the one of the
    spec the step used, the `dataset` param or else MLOPS_DATASET (default churn), never "_model"."""
    if env:
        monkeypatch.setenv("MLOPS_DATASET", env)
    else:
        monkeypatch.delenv("MLOPS_DATASET", raising=False)
    alert = _failure_alert(_deploy_error(rolled_back=True))
    assert alert.event == "rollback" and alert.model == model
    assert _failure_alert(_deploy_error(rolled_back=True), dataset="churn").model == "churn_model"


def test_a_failure_that_is_not_a_rollback_is_not_flagged_whatever_its_text(airflow_db):
    not_undone = _deploy_error("v2 was not promoted: ...", model="churn_model", version="2", rolled_back=False)
    alert = _failure_alert(not_undone)
    assert alert.event == "task_failed" and alert.model == "churn_model"
    plain = _failure_alert(RuntimeError("the champion was rolled back by hand earlier"))
    assert plain.event == "task_failed" and plain.model is None
    legacy = _failure_alert(_deploy_error("built from a message alone"))  # rolled_back defaults to False
    assert legacy.event == "task_failed"


def test_the_deploy_error_keeps_its_fields_through_pickling():
    import pickle

    from include.mlops.delivery.rollout import DeploymentCheckFailed

    exc = DeploymentCheckFailed("check failed", model="churn_model", version=4, rolled_back=True, rolled_back_to=3)
    back = pickle.loads(pickle.dumps(exc))
    assert (str(back), back.model, back.version, back.rolled_back, back.rolled_back_to) == (
        "check failed",
        "churn_model",
        "4",
        True,
        "3",
    )
    bare = pickle.loads(pickle.dumps(DeploymentCheckFailed("only a message")))
    assert (str(bare), bare.model, bare.rolled_back, bare.rolled_back_to) == ("only a message", None, False, None)


def test_the_gate_alert_reads_the_gate_decision_not_the_message(airflow_db):
    from mlops_airflow.notifiers import GateDecisionNotifier

    def build(deploy: dict):
        return GateDecisionNotifier().build({"ti": FakeTI({"deploy": deploy, "evaluate": {}}, "deploy")})

    base = {"model": "churn_model", "version": "3", "champion": "2", "run_id": "r3", "experiment_id": "1"}
    rejected = build({**base, "promoted": False, "gate_passed": False, "message": "kept v2: roc_auc too low"})
    assert rejected is not None and "v3 rejected by the gate" in rejected.title
    # the gate passed but this run's promotion had been ended elsewhere: no gate alert
    ended = "not promoted: v3: this run's promotion of it was ended (rolled_back: ...)"
    assert build({**base, "promoted": False, "gate_passed": True, "message": ended}) is None
    assert build({**base, "promoted": True, "gate_passed": True, "message": "promoted v3"}) is None
