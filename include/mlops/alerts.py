"""Alerts: what a person needs to act on (model, decision, numbers, links), rendered for chat and e-mail.

Plain functions, testable without Airflow: build an `Alert` from a step's typed result, render it
as a Slack-compatible JSON body (`text` plus Block Kit `blocks`, accepted by Slack incoming
webhooks and by Mattermost, Teams workflows and most chat bridges) or as an e-mail (subject and
HTML body). Delivery is the Airflow providers' job (Slack, HTTP with retries, SMTP), driven by the
notifiers in `plugins/mlops_airflow/notifiers.py`.
"""

from __future__ import annotations

import html
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from include.mlops.results import EvaluateResult, PromoteResult

SEVERITY_ICON = {"info": ":information_source:", "warning": ":warning:", "critical": ":rotating_light:"}
MAX_BLOCK_TEXT = 2900  # Slack refuses section text over 3000 characters


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
    """From the drift policy's decision dict (`drift_window.decide_window`)."""
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


GATE_METRICS = ("roc_auc", "f1", "rmse", "r2")  # the figures a gate alert shows


def gate_alert(
    deployed: PromoteResult,
    evaluated: EvaluateResult | None = None,
    links: dict[str, str] | None = None,
    source: dict[str, str] | None = None,
) -> Alert:
    """A challenger the gate kept out (the deploy step's result, the evaluate step's)."""
    numbers: dict[str, Any] = {"challenger version": deployed.version, "champion version": deployed.champion}
    if evaluated is not None:
        numbers.update({f"challenger {k}": v for k, v in evaluated.metrics.items() if k in GATE_METRICS})
        champion = evaluated.champion_metrics or {}
        numbers.update({f"champion {k}": v for k, v in champion.items() if k in GATE_METRICS})
    return Alert(
        event="gate_rejected",
        title=f"{deployed.model}: v{deployed.version} rejected by the gate",
        severity="warning",
        model=deployed.model,
        decision=deployed.message,
        numbers=numbers,
        links=dict(links or {}),
        details="\n".join(evaluated.reasons) if evaluated is not None else "",
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


def rollback_alert(
    value: dict[str, Any], links: dict[str, str] | None = None, source: dict[str, str] | None = None
) -> Alert:
    """A manual rollback that moved the champion (`delivery.rollback`'s return value)."""
    return Alert(
        event="rollback",
        title=f"{value.get('model')}: rolled back from v{value.get('from_version')} to v{value.get('to_version')}",
        severity="critical",
        model=value.get("model"),
        decision=str(value.get("message", "")),
        numbers={"from version": value.get("from_version"), "to version": value.get("to_version")},
        links=dict(links or {}),
        source=dict(source or {}),
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


def email_subject(alert: Alert) -> str:
    return f"[mlops][{alert.severity}] {alert.title}"


def email_html(alert: Alert) -> str:
    """The e-mail body (HTML, as the SMTP provider sends it) with the same content as the webhook."""
    rows = "".join(
        f"<tr><th align='left'>{html.escape(k)}</th><td>{html.escape(_fmt(v))}</td></tr>"
        for k, v in ({"model": alert.model} | alert.numbers).items()
        if v not in (None, "", [])
    )
    links = "".join(f"<li><a href='{html.escape(v)}'>{html.escape(k)}</a></li>" for k, v in alert.links.items() if v)
    details = f"<pre>{html.escape(alert.details)}</pre>" if alert.details else ""
    return (
        f"<html><body><h3>{html.escape(alert.title)}</h3>"
        f"<p><b>decision:</b> {html.escape(alert.decision)}</p>"
        f"<table>{rows}</table><ul>{links}</ul>{details}</body></html>"
    )
