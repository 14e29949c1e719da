"""Airflow notifiers for the platform's alerts: task failure, rollback, gate rejection, drift decision.

Each builds an `include.mlops.alerts.Alert` from the task's context (its typed return value, its
exception's fields, its log URL) and hands it to the Airflow providers, which read the channels'
connections at notify time, never at parse time:

- `mlops_alerts_webhook` of type `slackwebhook`: sent by the Slack provider (the webhook URL as
  the password, or host plus token), retried on connection errors, 429 and 5xx.
- `mlops_alerts_webhook` of any other type (`http`): the same Slack-compatible JSON POSTed by the
  HTTP provider to the connection's URL (`host` holding the full URL; extra keys are headers),
  retried with backoff on connection errors, 429 and 5xx.
- `mlops_alerts_smtp` (type `smtp`): sent by the SMTP provider (host, port, login, password;
  extra `from_email`, `disable_ssl`, `disable_tls`, `timeout`), to the extra's `to`.

A missing connection means that channel is off; nothing fails because alerting is not set up.
A configured channel that refuses the alert raises `AlertDeliveryError` after every channel
was tried.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseNotifier
from airflow.sdk.exceptions import AirflowException

WEBHOOK_CONN_ID = "mlops_alerts_webhook"
SMTP_CONN_ID = "mlops_alerts_smtp"
TIMEOUT_S = 10
WEBHOOK_ATTEMPTS = 4  # the first try and 3 retries, waiting 0.5, 1, 2 s
BACKOFF_S = 0.5
DEFAULT_SENDER = "mlops@localhost"


class AlertDeliveryError(AirflowException):
    """A configured channel refused the alert or could not be reached; the message says which."""


def _connection(conn_id: str | None) -> Any:
    if not conn_id:
        return None
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return Connection.get(conn_id)
    except AirflowNotFoundException:  # not defined: the channel is off
        return None


def _safe_reason(exc: BaseException) -> str:
    """What went wrong, without the URL (a webhook URL is a secret): the providers' own status
    messages carry none; any other error is named by its type only."""
    return str(exc) if isinstance(exc, AirflowException) else type(exc).__name__


def send_slack(conn_id: str, alert: Any, context: Any) -> None:
    """Through the Slack provider's notifier, retrying connection errors, 429 and 500/503."""
    from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier
    from slack_sdk.http_retry import BackoffRetryIntervalCalculator
    from slack_sdk.http_retry.builtin_handlers import (
        ConnectionErrorRetryHandler,
        RateLimitErrorRetryHandler,
        ServerErrorRetryHandler,
    )

    from include.mlops.alerts import slack_payload

    backoff = BackoffRetryIntervalCalculator(backoff_factor=BACKOFF_S)
    retries = WEBHOOK_ATTEMPTS - 1
    handlers = [
        h(max_retry_count=retries, interval_calculator=backoff)
        for h in (ConnectionErrorRetryHandler, ServerErrorRetryHandler)
    ]
    payload = slack_payload(alert)
    SlackWebhookNotifier(
        slack_webhook_conn_id=conn_id,
        text=payload["text"],
        blocks=payload["blocks"],
        timeout=TIMEOUT_S,
        retry_handlers=[*handlers, RateLimitErrorRetryHandler(max_retry_count=retries)],
    ).notify(context)


def _retryable(response: Any) -> bool:
    return response.status_code == 429 or response.status_code >= 500


def post_webhook(conn_id: str, alert: Any) -> int:
    """POST the Slack-compatible JSON through the HTTP provider, with exponential backoff on
    connection errors, timeouts, 429 and 5xx; any other answer is final. Returns the status."""
    import requests
    import tenacity
    from airflow.providers.http.hooks.http import HttpHook

    from include.mlops.alerts import slack_payload

    retry = dict(
        stop=tenacity.stop_after_attempt(WEBHOOK_ATTEMPTS),
        wait=tenacity.wait_exponential(multiplier=BACKOFF_S, max=8),
        retry=tenacity.retry_if_exception_type((requests.ConnectionError, requests.Timeout))
        | tenacity.retry_if_result(_retryable),
        retry_error_callback=lambda state: state.outcome.result(),  # the last answer, or its error
    )
    response = HttpHook(method="POST", http_conn_id=conn_id).run_with_advanced_retry(
        _retry_args=retry,
        json=slack_payload(alert),
        extra_options={"timeout": TIMEOUT_S, "check_response": False},
    )
    if not response.ok:
        tries = f" after {WEBHOOK_ATTEMPTS} tries" if _retryable(response) else " (not retried)"
        raise AlertDeliveryError(f"webhook answered HTTP {response.status_code}{tries}")
    return int(response.status_code)


def send_email(conn: Any, alert: Any, context: Any) -> None:
    """Through the SMTP provider's notifier, to the connection's extra `to`."""
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    from include.mlops.alerts import email_html, email_subject

    extra = conn.extra_dejson
    SmtpNotifier(
        to=extra["to"],
        from_email=extra.get("from_email") or extra.get("from") or conn.login or DEFAULT_SENDER,  # "from": older name
        subject=email_subject(alert),
        html_content=email_html(alert),
        smtp_conn_id=conn.conn_id,
    ).notify(context)


def _misconfigured(conn: Any) -> str | None:
    """What to change in a connection the providers would misread (most likely one written for the
    hand-made delivery these replaced: its extras `ssl`, `starttls`, `webhook_url`, the path in
    `schema`), or None."""
    extra = conn.extra_dejson
    if conn.conn_type == "smtp":
        if not extra.get("to"):
            return f"{conn.conn_id}: no recipients; set extra 'to' (comma-separated addresses)"
        if {"ssl", "starttls"} & set(extra):
            return (
                f"{conn.conn_id}: extras 'ssl'/'starttls' are not read; the SMTP provider uses SSL and "
                "STARTTLS unless extra 'disable_ssl'/'disable_tls' is true"
            )
        return None
    if conn.conn_type != "slackwebhook" and (
        "webhook_url" in extra or (conn.schema or "http") not in ("http", "https")
    ):
        return (
            f"{conn.conn_id}: the HTTP provider reads the URL from 'host' (the full URL, path included) "
            "and 'schema' as http/https; move 'webhook_url' or the path in 'schema' into 'host'"
        )
    return None


def _mlflow_run_url(run_id: str | None, experiment_id: str | None) -> str:
    from mlops_airflow.links import mlflow_ui_url

    return f"{mlflow_ui_url()}/#/experiments/{experiment_id or 0}/runs/{run_id}" if run_id else ""


def deliver(alert: Any, context: Any, webhook: Any, smtp: Any) -> dict[str, str]:
    """Send through every configured channel (a connection, or None: off); one channel's failure
    does not stop the others. Returns channel -> "sent" | "not configured" | "failed: ...";
    raises AlertDeliveryError after trying all of them if any configured channel failed."""
    out = {"webhook": "not configured", "email": "not configured"}
    for name, conn in (("webhook", webhook), ("email", smtp)):
        if conn is None:
            continue
        try:
            if problem := _misconfigured(conn):
                raise AlertDeliveryError(problem)
            if name == "email":
                send_email(conn, alert, context)
            elif conn.conn_type == "slackwebhook":
                send_slack(conn.conn_id, alert, context)
            else:
                post_webhook(conn.conn_id, alert)
            out[name] = "sent"
        except Exception as exc:  # a channel's failure, reported with the others'
            why = f"{type(exc).__name__}: {exc}" if name == "email" else _safe_reason(exc)
            out[name] = f"failed: {why}"
    if any(v.startswith("failed") for v in out.values()):
        raise AlertDeliveryError(f"alert {alert.title!r} not delivered everywhere: {out}")
    return out


class MlopsNotifier(BaseNotifier):
    """Base: build the alert (subclasses), send it through the configured channels."""

    template_fields = ("webhook_conn_id", "smtp_conn_id")

    def __init__(
        self, *, webhook_conn_id: str | None = WEBHOOK_CONN_ID, smtp_conn_id: str | None = SMTP_CONN_ID
    ) -> None:
        super().__init__()
        self.webhook_conn_id = webhook_conn_id
        self.smtp_conn_id = smtp_conn_id

    def build(self, context: Any) -> Any:
        """The Alert for this context, or None when there is nothing to say."""
        raise NotImplementedError

    @staticmethod
    def task_value(context: Any) -> dict[str, Any]:
        ti = context["ti"]
        value = ti.xcom_pull(task_ids=ti.task_id)
        return value if isinstance(value, dict) else {}

    @staticmethod
    def source(context: Any) -> dict[str, str]:
        ti = context["ti"]
        return {"dag_id": ti.dag_id, "run_id": ti.run_id, "task_id": ti.task_id}

    @staticmethod
    def log_url(context: Any) -> str:
        try:
            return str(context["ti"].log_url)
        except Exception:  # a context without a task instance's URL: the alert goes out without the link
            return ""

    def notify(self, context: Any) -> None:
        alert = self.build(context)
        if alert is None:
            return
        webhook, smtp = _connection(self.webhook_conn_id), _connection(self.smtp_conn_id)
        if webhook is None and smtp is None:
            self.log.info(
                "alert %r not sent: no %s or %s connection", alert.title, self.webhook_conn_id, self.smtp_conn_id
            )
            return
        self.log.info("alert %r (%s): %s", alert.title, alert.event, deliver(alert, context, webhook, smtp))


def _deploy_failure(exc: BaseException | None) -> BaseException | None:
    """The deploy step's typed error in `exc` or its causes (the operator re-raises
    `DeploymentCheckFailed` as `PromotionError` from it), read by its fields, not its text."""
    seen = 0
    while exc is not None and seen < 10:
        if hasattr(exc, "rolled_back"):
            return exc
        exc, seen = exc.__cause__, seen + 1  # `raise ... from`: never an unrelated error's context
    return None


def _model_of(dataset: str | None) -> str | None:
    """The registered model of the task's dataset: its spec, or the default dataset's (the
    `dataset` param empty), resolved as the steps resolve it; None when it cannot be read."""
    from include.mlops.config import get_settings
    from include.mlops.spec import load_spec

    try:
        return load_spec(dataset or get_settings().dataset).model_name
    except Exception:  # an alert still goes out without the model's name
        return None


class TaskFailureNotifier(MlopsNotifier):
    """A task failed for good; a deploy error whose `rolled_back` is set is a rollback."""

    def build(self, context: Any) -> Any:
        from include.mlops.alerts import failure_alert

        ti = context["ti"]
        exc = context.get("exception")
        error = f"{type(exc).__name__}: {exc}" if exc is not None else "failed (no exception recorded)"
        deploy = _deploy_failure(exc)
        rollback = bool(getattr(deploy, "rolled_back", False))
        params = context.get("params") or {}
        model = getattr(deploy, "model", None)
        if model is None and (rollback or params.get("dataset")):
            model = _model_of(params.get("dataset"))
        return failure_alert(
            ti.dag_id,
            ti.task_id,
            ti.run_id,
            error,
            model=model,
            links={"Airflow task log": self.log_url(context)},
            rollback=rollback,
            try_number=getattr(ti, "try_number", None),
        )


class DriftDecisionNotifier(MlopsNotifier):
    """After the drift policy: alert when it decided to retrain or to quarantine."""

    def build(self, context: Any) -> Any:
        from include.mlops.alerts import drift_alert

        value = self.task_value(context)
        if not value.get("alert"):
            return None
        links = {
            "Airflow task log": self.log_url(context),
            "drift report": value.get("report_html") or "",
            "MLflow monitoring run": _mlflow_run_url(value.get("run_id"), value.get("experiment_id")),
        }
        if value.get("quarantine_uri"):
            links["quarantine"] = value["quarantine_uri"]
        return drift_alert(value, links, self.source(context))


class GateDecisionNotifier(MlopsNotifier):
    """After the deploy step: alert when the gate kept the challenger out."""

    def __init__(self, *, evaluate_task_id: str = "evaluate", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.evaluate_task_id = evaluate_task_id

    def build(self, context: Any) -> Any:
        from include.mlops.alerts import gate_alert
        from include.mlops.results import EvaluateResult, PromoteResult

        value = self.task_value(context)
        if not value:  # the deploy step pushed nothing: no decision to report
            return None
        deployed = PromoteResult.from_xcom(value)  # a malformed value fails here, by name
        if deployed.promoted or deployed.gate_passed:  # only a gate rejection
            return None
        pulled = context["ti"].xcom_pull(task_ids=self.evaluate_task_id)
        evaluated = EvaluateResult.from_xcom(pulled) if pulled else None
        links = {
            "Airflow task log": self.log_url(context),
            "MLflow run": _mlflow_run_url(deployed.run_id, deployed.experiment_id),
        }
        return gate_alert(deployed, evaluated, links, self.source(context))


class RollbackNotifier(MlopsNotifier):
    """After a manual rollback task (`delivery.rollback.rollback`'s return value): alert when the champion moved."""

    def build(self, context: Any) -> Any:
        from include.mlops.alerts import rollback_alert

        value = self.task_value(context)
        if not value.get("changed"):
            return None
        return rollback_alert(value, {"Airflow task log": self.log_url(context)}, self.source(context))
