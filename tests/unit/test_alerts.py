"""Alert payloads and delivery, asserted through a local HTTP receiver and a local SMTP server."""

from __future__ import annotations

import json
import threading
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


class Receiver:
    """A webhook endpoint on 127.0.0.1 that records every JSON body (and can be told to fail)."""

    def __init__(self, status: int = 200) -> None:
        self.bodies: list[dict] = []
        self.status = status
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.bodies.append(
                    {"path": self.path, "json": json.loads(body), "content_type": self.headers["Content-Type"]}
                )
                self.send_response(outer.status)
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


@pytest.fixture
def webhook():
    with Receiver() as r:
        yield r


@pytest.fixture
def smtp_server():
    from aiosmtpd.controller import Controller

    from tests.conftest import free_port

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
    deploy = {
        "promoted": False,
        "message": "not promoted: regression of roc_auc vs champion: ...",
        "model": "churn_model",
        "version": "4",
        "champion": "3",
        "run_id": "r4",
        "experiment_id": "1",
    }
    evaluate = {
        "metrics": {"roc_auc": 0.71, "f1": 0.4},
        "champion_metrics": {"roc_auc": 0.76, "f1": 0.41},
        "reasons": ["regression of roc_auc vs champion: champion 0.7600, challenger 0.7100"],
    }
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
        "ml_retraining",
        "deploy",
        "r",
        "PromotionError: smoke test failed; rolled back to v3",
        model="churn_model",
        rollback=True,
    )
    assert rb.event == "rollback" and "rolled back" in rb.title and rb.model == "churn_model"


def test_email_has_text_and_html_parts():
    msg = A.email_message(A.drift_alert(DECISION, {"drift report": DECISION["report_html"]}), "mlops@x", ["a@x", "b@x"])
    assert msg["Subject"].startswith("[mlops][warning] churn: drift decision RETRAIN")
    assert msg["To"] == "a@x, b@x"
    kinds = [p.get_content_type() for p in msg.iter_parts()]
    assert kinds == ["text/plain", "text/html"]
    assert "drift share: 0.3889" in msg.get_body(("plain",)).get_content()


# -- connection fields ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "url"),
    [
        (("http", "127.0.0.1", 8080, "hooks/x", None, {}), "http://127.0.0.1:8080/hooks/x"),
        (
            ("slackwebhook", "hooks.slack.com", None, None, "https://hooks.slack.com/services/T/B/X", {}),
            "https://hooks.slack.com/services/T/B/X",
        ),
        (("http", "chat.local", None, "hook", None, {"scheme": "https"}), "https://chat.local/hook"),
        (("http", None, None, None, None, {"webhook_url": "http://h/w"}), "http://h/w"),
        (("http", "https://chat.local", None, "api/hook", None, {}), "https://chat.local/api/hook"),
        (("http", None, None, None, None, {}), None),
    ],
)
def test_webhook_url_from_connection_fields(fields, url):
    assert A.webhook_url(*fields) == url


def test_smtp_settings_from_connection_fields():
    s = A.smtp_settings("mail", 2525, "bot", "pw", {"to": "a@x, b@x", "from": "mlops@x", "starttls": "true"})
    assert (s.host, s.port, s.sender, s.recipients, s.starttls, s.ssl) == (
        "mail",
        2525,
        "mlops@x",
        ("a@x", "b@x"),
        True,
        False,
    )
    assert "pw" not in repr(s)
    assert A.smtp_settings("mail", 25, extra={}) is None  # nobody to send to
    assert A.smtp_settings(None) is None


# -- delivery -----------------------------------------------------------------------------------------
def test_webhook_delivery_to_a_local_receiver(webhook):
    assert A.post_webhook(webhook.url, A.slack_payload(A.drift_alert(DECISION))) == 200
    [got] = webhook.bodies
    assert got["path"] == "/hooks/mlops" and got["content_type"] == "application/json"
    assert got["json"]["text"].endswith("churn: drift decision RETRAIN for window 2026-10-14")


def test_email_delivery_to_a_local_smtp_server(smtp_server):
    ctl, sink = smtp_server
    smtp = A.SmtpSettings(
        host="127.0.0.1", port=ctl.port, sender="mlops@example.org", recipients=("oncall@example.org",)
    )
    A.send_email(A.email_message(A.drift_alert(DECISION), smtp.sender, list(smtp.recipients)), smtp)
    [m] = sink.messages
    assert m["from"] == "mlops@example.org" and m["to"] == ["oncall@example.org"]
    assert "drift decision RETRAIN" in m["msg"]["Subject"]


def test_dispatch_tries_every_channel_and_reports_failures(smtp_server):
    ctl, sink = smtp_server
    smtp = A.SmtpSettings(host="127.0.0.1", port=ctl.port, recipients=("oncall@example.org",))
    with Receiver(status=500) as broken:
        with pytest.raises(A.AlertDeliveryError, match="HTTP 500"):
            A.dispatch(A.drift_alert(DECISION), broken.url, smtp)
        assert len(broken.bodies) == 1
    assert len(sink.messages) == 1, "the e-mail still goes out when the webhook fails"
    assert A.dispatch(A.drift_alert(DECISION)) == {"webhook": "not configured", "email": "not configured"}


def test_unreachable_webhook_does_not_leak_its_url():
    from tests.conftest import free_port

    url = f"http://127.0.0.1:{free_port()}/secret-token-123"
    with pytest.raises(A.AlertDeliveryError) as info:
        A.post_webhook(url, {"text": "x"}, timeout=2)
    assert "secret-token-123" not in str(info.value)


# -- the Airflow notifiers, with connections from the environment (as Airflow reads them) -------------------
# `airflow_db` first: it points Airflow at the project before anything imports airflow in this session.
class FakeTI:
    dag_id, run_id, task_id, try_number = "ml_monitoring", "scheduled__2026-10-15", "decide", 1
    log_url = "http://localhost:8080/dags/ml_monitoring/runs/scheduled__2026-10-15/tasks/decide"

    def __init__(self, values: dict, task_id: str = "decide"):
        self.values = values
        self.task_id = task_id

    def xcom_pull(self, task_ids=None, **_):
        return self.values.get(task_ids)


def test_drift_notifier_sends_to_webhook_and_smtp_connections(airflow_db, webhook, smtp_server, monkeypatch):
    from mlops_airflow.notifiers import DriftDecisionNotifier

    ctl, sink = smtp_server
    monkeypatch.setenv(
        "AIRFLOW_CONN_MLOPS_ALERTS_WEBHOOK",
        json.dumps({"conn_type": "http", "host": "127.0.0.1", "port": webhook.port, "schema": "hooks/mlops"}),
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_MLOPS_ALERTS_SMTP",
        json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": ctl.port, "extra": {"to": "oncall@example.org"}}),
    )
    DriftDecisionNotifier().notify({"ti": FakeTI({"decide": DECISION})})
    [got] = webhook.bodies
    body = json.dumps(got["json"])
    assert "churn_model" in body and FakeTI.log_url in body and DECISION["report_html"] in body
    assert "http://localhost:5000/#/experiments/7/runs/r1" in body
    assert len(sink.messages) == 1
    # a quiet decision sends nothing
    DriftDecisionNotifier().notify({"ti": FakeTI({"decide": {**DECISION, "action": "no_drift", "alert": False}})})
    assert len(webhook.bodies) == 1


def test_notifiers_without_connections_send_nothing_and_do_not_fail(airflow_db, monkeypatch):
    from mlops_airflow.notifiers import DriftDecisionNotifier, TaskFailureNotifier

    monkeypatch.delenv("AIRFLOW_CONN_MLOPS_ALERTS_WEBHOOK", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_MLOPS_ALERTS_SMTP", raising=False)
    DriftDecisionNotifier().notify({"ti": FakeTI({"decide": DECISION})})
    TaskFailureNotifier().notify({"ti": FakeTI({}), "exception": RuntimeError("x")})


def test_gate_and_failure_notifiers(airflow_db, webhook, monkeypatch):
    from mlops_airflow.notifiers import GateDecisionNotifier, RollbackNotifier, TaskFailureNotifier

    monkeypatch.setenv(
        "AIRFLOW_CONN_MLOPS_ALERTS_WEBHOOK", json.dumps({"conn_type": "http", "extra": {"webhook_url": webhook.url}})
    )
    monkeypatch.delenv("AIRFLOW_CONN_MLOPS_ALERTS_SMTP", raising=False)
    deploy = {
        "promoted": False,
        "message": "not promoted: minimum roc_auc",
        "model": "churn_model",
        "version": "2",
        "champion": "1",
        "run_id": "r2",
        "experiment_id": "1",
        "gate_passed": False,
    }
    GateDecisionNotifier().notify(
        {"ti": FakeTI({"deploy": deploy, "evaluate": {"reasons": ["minimum roc_auc"]}}, "deploy")}
    )
    GateDecisionNotifier().notify(
        {"ti": FakeTI({"deploy": {**deploy, "promoted": True, "message": "promoted v2"}}, "deploy")}
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
    texts = [b["json"]["text"] for b in webhook.bodies]
    assert len(texts) == 3
    assert "v2 rejected by the gate" in texts[0]
    assert "churn_model: deployment rolled back" in texts[1]
    assert "churn_model: rolled back from v2 to v1" in texts[2]


def _deploy_error(message: str = "v2 failed its post-deployment check: p99 over budget", **fields):
    """What the deploy step raises: `rollout`'s DeploymentCheckFailed re-raised by the operator as
    PromotionError from it (both real, raised and caught as Airflow hands them to the callback)."""
    from mlops_airflow.operators import PromotionError

    from include.mlops.deployment import DeploymentCheckFailed

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

    from include.mlops.deployment import DeploymentCheckFailed

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
