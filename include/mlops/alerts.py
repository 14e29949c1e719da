"""Alerts: what a person needs to act on (model, decision, numbers, links), sent by webhook and e-mail.

Plain functions, testable without Airflow: build an `Alert`, render it as a Slack-compatible JSON
body (`text` plus Block Kit `blocks`, accepted by Slack incoming webhooks and by Mattermost, Teams
workflows and most chat bridges) or as an e-mail, and deliver it. The Airflow notifiers in
`plugins/mlops_airflow/notifiers.py` build alerts from a task's context and read the delivery
settings from Airflow connections at notify time.
"""

from __future__ import annotations

import html
import json
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

log = logging.getLogger(__name__)

SEVERITY_ICON = {"info": ":information_source:", "warning": ":warning:", "critical": ":rotating_light:"}
MAX_BLOCK_TEXT = 2900  # Slack refuses section text over 3000 characters


class AlertDeliveryError(Exception):
    """A configured channel refused the alert or could not be reached; the message says which."""


@dataclass
class Alert:
    event: str  # drift | quarantine | gate_rejected | task_failed | rollback | promoted
    title: str
    severity: str = "warning"
    model: str | None = None
    dataset: str | None = None
    decision: str = ""
    numbers: dict[str, Any] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)
    details: str = ""  # e.g. the policy or gate table; shown as a code block
    source: dict[str, str] = field(default_factory=dict)  # dag_id, run_id, task_id

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    if isinstance(v, (list, tuple)):
        return ", ".join(str(x) for x in v) or "-"
    return "-" if v is None else str(v)


# -- builders ----------------------------------------------------------------------------------------
def drift_alert(
    decision: dict[str, Any], links: dict[str, str] | None = None, source: dict[str, str] | None = None
) -> Alert:
    """From the drift policy's decision dict (`drift_policy.decide_window`)."""
    action = decision.get("action", "")
    quarantined = action == "quarantine"
    numbers = {
        "window": (decision.get("window") or {}).get("day", decision.get("day")),
        "rows": decision.get("rows"),
        "drift share": decision.get("drift_share"),
        "drifted features": decision.get("drifted_features") or [],
        "labelled rows": decision.get("labelled_rows"),
        "performance drop": decision.get("performance_drop"),
        "champion version": decision.get("champion_version"),
    }
    title = (
        f"{decision.get('dataset')}: data-quality failure in window {numbers['window']}, quarantined"
        if quarantined
        else f"{decision.get('dataset')}: drift decision {action.upper()} for window {numbers['window']}"
    )
    return Alert(
        event="quarantine" if quarantined else "drift",
        title=title,
        severity="critical" if quarantined else "warning",
        model=decision.get("model"),
        dataset=decision.get("dataset"),
        decision=f"{action}: {decision.get('reason', '')}",
        numbers=numbers,
        links=dict(links or {}),
        details=decision.get("table", ""),
        source=dict(source or {}),
    )


def gate_alert(
    deploy_out: dict[str, Any],
    eval_out: dict[str, Any] | None = None,
    links: dict[str, str] | None = None,
    source: dict[str, str] | None = None,
) -> Alert:
    """A challenger the gate kept out (the deploy step's return value, the evaluate step's)."""
    ev = eval_out or {}
    numbers: dict[str, Any] = {
        "challenger version": deploy_out.get("version"),
        "champion version": deploy_out.get("champion"),
    }
    numbers.update(
        {f"challenger {k}": v for k, v in (ev.get("metrics") or {}).items() if k in ("roc_auc", "f1", "rmse", "r2")}
    )
    numbers.update(
        {
            f"champion {k}": v
            for k, v in (ev.get("champion_metrics") or {}).items()
            if k in ("roc_auc", "f1", "rmse", "r2")
        }
    )
    return Alert(
        event="gate_rejected",
        title=f"{deploy_out.get('model')}: v{deploy_out.get('version')} rejected by the gate",
        severity="warning",
        model=deploy_out.get("model"),
        decision=str(deploy_out.get("message", "")),
        numbers=numbers,
        links=dict(links or {}),
        details="\n".join(ev.get("reasons") or []),
        source=dict(source or {}),
    )


def failure_alert(
    dag_id: str,
    task_id: str,
    run_id: str,
    error: str,
    model: str | None = None,
    links: dict[str, str] | None = None,
    rollback: bool = False,
    try_number: int | None = None,
) -> Alert:
    """A task that failed for good (after its retries), or a deployment that was rolled back."""
    first = (error or "unknown error").strip().splitlines()[0][:300]
    if rollback:
        title = f"{model or dag_id}: deployment rolled back ({dag_id}.{task_id})"
    else:
        title = f"{dag_id}.{task_id} failed"
    return Alert(
        event="rollback" if rollback else "task_failed",
        title=title,
        severity="critical",
        model=model,
        decision="rolled back to the previous champion" if rollback else "task failed",
        numbers={"try": try_number},
        links=dict(links or {}),
        details=(error or "")[:4000],
        source={"dag_id": dag_id, "task_id": task_id, "run_id": run_id, "error": first},
    )


# -- rendering ---------------------------------------------------------------------------------------
def slack_payload(alert: Alert) -> dict[str, Any]:
    """A Slack-compatible JSON body: `text` (fallback, notifications) and Block Kit `blocks`."""
    icon = SEVERITY_ICON.get(alert.severity, "")
    text = f"{icon} {alert.title}".strip()
    fields = [
        {"type": "mrkdwn", "text": f"*{k}*\n{_fmt(v)}"} for k, v in alert.numbers.items() if v not in (None, "", [])
    ]
    if alert.model:
        fields.insert(0, {"type": "mrkdwn", "text": f"*model*\n{alert.model}"})
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": alert.title[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*decision:* {alert.decision}"[:MAX_BLOCK_TEXT]}},
    ]
    for i in range(0, len(fields), 10):  # at most 10 fields per section
        blocks.append({"type": "section", "fields": fields[i : i + 10]})
    if alert.details:
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": f"```{alert.details[: MAX_BLOCK_TEXT - 6]}```"}}
        )
    if alert.links:
        links = " · ".join(f"<{url}|{name}>" for name, url in alert.links.items() if url)
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": links[:MAX_BLOCK_TEXT]}]})
    if alert.source:
        src = " ".join(f"{k}={v}" for k, v in alert.source.items() if k != "error" and v)
        if src:
            blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": src[:MAX_BLOCK_TEXT]}]})
    return {"text": text, "blocks": blocks}


def email_message(alert: Alert, sender: str, recipients: list[str]) -> Any:
    """A multipart (text + HTML) e-mail with the same content as the webhook."""
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["Subject"] = f"[mlops][{alert.severity}] {alert.title}"
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    lines = [alert.title, "", f"decision: {alert.decision}"]
    if alert.model:
        lines.append(f"model: {alert.model}")
    lines += [f"{k}: {_fmt(v)}" for k, v in alert.numbers.items() if v not in (None, "", [])]
    if alert.links:
        lines += ["", "links:"] + [f"  {k}: {v}" for k, v in alert.links.items() if v]
    if alert.details:
        lines += ["", alert.details]
    msg.set_content("\n".join(lines))
    rows = "".join(
        f"<tr><th align='left'>{html.escape(k)}</th><td>{html.escape(_fmt(v))}</td></tr>"
        for k, v in ({"model": alert.model} | alert.numbers).items()
        if v not in (None, "", [])
    )
    links = "".join(f"<li><a href='{html.escape(v)}'>{html.escape(k)}</a></li>" for k, v in alert.links.items() if v)
    body = (
        f"<h3>{html.escape(alert.title)}</h3><p><b>decision:</b> {html.escape(alert.decision)}</p>"
        f"<table>{rows}</table><ul>{links}</ul>" + (f"<pre>{html.escape(alert.details)}</pre>" if alert.details else "")
    )
    msg.add_alternative(f"<html><body>{body}</body></html>", subtype="html")
    return msg


# -- delivery ----------------------------------------------------------------------------------------
def post_webhook(url: str, payload: dict[str, Any], timeout: float = 10.0) -> int:
    """POST the JSON body; any non-2xx answer is an AlertDeliveryError (the URL is not echoed: it is a secret)."""
    import urllib.error
    import urllib.request

    req = urllib.request.Request(
        url, data=json.dumps(payload).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        raise AlertDeliveryError(f"webhook answered HTTP {exc.code}") from exc
    except OSError as exc:
        raise AlertDeliveryError(f"webhook unreachable: {type(exc).__name__}") from exc


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int = 25
    sender: str = "mlops@localhost"
    recipients: tuple[str, ...] = ()
    login: str | None = None
    password: str | None = field(default=None, repr=False)
    starttls: bool = False
    ssl: bool = False
    timeout: float = 10.0


def send_email(msg: Any, smtp: SmtpSettings) -> None:
    import smtplib

    cls = smtplib.SMTP_SSL if smtp.ssl else smtplib.SMTP
    try:
        with cls(smtp.host, smtp.port, timeout=smtp.timeout) as client:
            if smtp.starttls and not smtp.ssl:
                client.starttls()
            if smtp.login and smtp.password:
                client.login(smtp.login, smtp.password)
            client.send_message(msg)
    except (OSError, smtplib.SMTPException) as exc:
        raise AlertDeliveryError(f"SMTP {smtp.host}:{smtp.port} failed: {type(exc).__name__}: {exc}") from exc


def _truthy(v: Any) -> bool:
    return str(v).strip().lower() in {"1", "true", "yes", "on"}


def webhook_url(
    conn_type: str | None,
    host: str | None,
    port: int | None = None,
    schema: str | None = None,
    password: str | None = None,
    extra: dict[str, Any] | None = None,
) -> str | None:
    """The webhook URL from an Airflow connection's fields.

    Accepted forms: extra `webhook_url`; a full URL as password (Slack's `slackwebhook` style) or as
    host; else `<extra.scheme or http(s)>://host[:port]/schema`.
    """
    extra = extra or {}
    if extra.get("webhook_url"):
        return str(extra["webhook_url"])
    if password and str(password).startswith(("http://", "https://")):
        return str(password)
    if not host:
        return None
    if host.startswith(("http://", "https://")):
        return host.rstrip("/") + (f"/{schema.lstrip('/')}" if schema else "")
    scheme = extra.get("scheme") or ("https" if (conn_type or "").lower() in {"https", "slackwebhook"} else "http")
    netloc = f"{host}:{port}" if port else host
    return f"{scheme}://{netloc}/{(schema or '').lstrip('/')}"


def smtp_settings(
    host: str | None,
    port: int | None = None,
    login: str | None = None,
    password: str | None = None,
    extra: dict[str, Any] | None = None,
) -> SmtpSettings | None:
    """SMTP settings from an Airflow connection's fields; recipients in extra `to` (comma-separated or a list)."""
    extra = extra or {}
    if not host:
        return None
    to = extra.get("to") or extra.get("recipients") or []
    recipients = tuple(x.strip() for x in (to.split(",") if isinstance(to, str) else to) if x.strip())
    if not recipients:
        log.warning("SMTP connection has no recipients (extra 'to'); no e-mail sent")
        return None
    return SmtpSettings(
        host=host,
        port=int(port or (465 if _truthy(extra.get("ssl")) else 25)),
        sender=str(extra.get("from") or login or "mlops@localhost"),
        recipients=recipients,
        login=login or None,
        password=password or None,
        starttls=_truthy(extra.get("starttls")),
        ssl=_truthy(extra.get("ssl")),
        timeout=float(extra.get("timeout", 10)),
    )


def dispatch(alert: Alert, webhook: str | None = None, smtp: SmtpSettings | None = None) -> dict[str, str]:
    """Send through every configured channel; a channel's failure does not stop the others.

    Returns channel -> "sent" | "not configured" | "failed: ..."; raises AlertDeliveryError after
    trying all of them if any configured channel failed.
    """
    out = {"webhook": "not configured", "email": "not configured"}
    errors = []
    if webhook:
        try:
            post_webhook(webhook, slack_payload(alert))
            out["webhook"] = "sent"
        except AlertDeliveryError as exc:
            out["webhook"] = f"failed: {exc}"
            errors.append(str(exc))
    if smtp:
        try:
            send_email(email_message(alert, smtp.sender, list(smtp.recipients)), smtp)
            out["email"] = "sent"
        except AlertDeliveryError as exc:
            out["email"] = f"failed: {exc}"
            errors.append(str(exc))
    log.info("alert %r (%s): %s", alert.title, alert.event, out)
    if errors:
        raise AlertDeliveryError("; ".join(errors))
    return out
