"""Airflow notifiers for the platform's alerts: task failure, rollback, gate rejection, drift decision.

Each builds an `include.mlops.alerts.Alert` from the task's context (its return value, its
exception, its log URL) and sends it through the channels configured as Airflow connections,
read at notify time, never at parse time:

- `mlops_alerts_webhook`: a Slack-compatible webhook. The URL is the connection's password (as
  Slack's `slackwebhook` type keeps it), or extra `webhook_url`, or `http(s)://host:port/schema`.
- `mlops_alerts_smtp` (optional): host, port, login, password; extra `to` (comma-separated),
  `from`, `starttls`, `ssl`.

A missing connection means that channel is off; nothing fails because alerting is not set up.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseNotifier

WEBHOOK_CONN_ID = "mlops_alerts_webhook"
SMTP_CONN_ID = "mlops_alerts_smtp"


def _connection(conn_id: str | None) -> Any:
    if not conn_id:
        return None
    from airflow.sdk import Connection

    try:
        return Connection.get(conn_id)
    except Exception:  # not defined: the channel is off
        return None


def _mlflow_run_url(value: dict[str, Any]) -> str:
    from mlops_airflow.links import mlflow_ui_url

    run_id = value.get("run_id")
    return f"{mlflow_ui_url()}/#/experiments/{value.get('experiment_id') or 0}/runs/{run_id}" if run_id else ""


class MlopsNotifier(BaseNotifier):
    """Base: resolve the channels, build the alert (subclasses), send it."""

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
        except Exception:
            return ""

    def channels(self) -> tuple[str | None, Any]:
        from include.mlops.alerts import smtp_settings, webhook_url

        url = None
        conn = _connection(self.webhook_conn_id)
        if conn is not None:
            url = webhook_url(conn.conn_type, conn.host, conn.port, conn.schema, conn.password, conn.extra_dejson)
        smtp = None
        conn = _connection(self.smtp_conn_id)
        if conn is not None:
            smtp = smtp_settings(conn.host, conn.port, conn.login, conn.password, conn.extra_dejson)
        return url, smtp

    def notify(self, context: Any) -> None:
        from include.mlops.alerts import dispatch

        alert = self.build(context)
        if alert is None:
            return
        url, smtp = self.channels()
        if not url and not smtp:
            self.log.info(
                "alert %r not sent: no %s or %s connection", alert.title, self.webhook_conn_id, self.smtp_conn_id
            )
            return
        result = dispatch(alert, url, smtp)
        self.log.info("alert %r: %s", alert.title, result)


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
            "MLflow monitoring run": _mlflow_run_url(value),
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

        value = self.task_value(context)
        if value.get("promoted") or value.get("gate_passed") is not False:  # only a gate rejection
            return None
        eval_out = context["ti"].xcom_pull(task_ids=self.evaluate_task_id) or {}
        links = {"Airflow task log": self.log_url(context), "MLflow run": _mlflow_run_url(value)}
        return gate_alert(value, eval_out, links, self.source(context))


class RollbackNotifier(MlopsNotifier):
    """After a manual rollback task (`deployment.rollback`'s return value): alert when the champion moved."""

    def build(self, context: Any) -> Any:
        from include.mlops.alerts import Alert

        value = self.task_value(context)
        if not value.get("changed"):
            return None
        return Alert(
            event="rollback",
            title=f"{value.get('model')}: rolled back from v{value.get('from_version')} to v{value.get('to_version')}",
            severity="critical",
            model=value.get("model"),
            decision=str(value.get("message", "")),
            numbers={"from version": value.get("from_version"), "to version": value.get("to_version")},
            links={"Airflow task log": self.log_url(context)},
            source=self.source(context),
        )
