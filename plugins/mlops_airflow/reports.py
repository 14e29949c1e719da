"""HTML reports into MLflow, so the *Report* extra link opens them in a browser.

The reports live in the object store (`file://` or `s3://`), which a browser cannot open from the
Airflow UI (it shows only http(s) links). Each report is also logged as an artifact of an MLflow
run: the MLflow UI's artifact view renders it, through the same server that holds the models. A
validation has no run of its own, so its reports go to one run per interval in the experiment
`<dataset>-validation` (found again by its tag on a re-run: no second run); a monitoring window
already has its run (`<dataset>-monitoring`).

Called from the operators' `execute`; MLflow is imported here, never at parse time.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

REPORT_DIR = "reports"


def artifact_url(experiment_id: str | None, run_id: str, path: str) -> str:
    """The MLflow UI page that shows artifact `path` of a run."""
    from mlops_airflow.links import mlflow_ui_url

    return f"{mlflow_ui_url()}/#/experiments/{experiment_id or 0}/runs/{run_id}/artifacts/{path}"


def _log_reports(client: Any, run_id: str, report_uris: list[str]) -> list[str]:
    """Copy each report (an object-store URI) into the run under `reports/`; returns artifact paths."""
    from include.mlops.config import get_settings
    from include.mlops.context import open_store

    store = open_store(get_settings())
    paths = []
    with tempfile.TemporaryDirectory(prefix="mlops-report-") as tmp:
        for uri in report_uris:
            name = Path(store.key_of(uri)).name
            local = Path(tmp) / name
            local.write_bytes(store.get_bytes(store.key_of(uri)))
            client.log_artifact(run_id, str(local), REPORT_DIR)
            paths.append(f"{REPORT_DIR}/{name}")
    return paths


def publish_validation(report_uris: list[str], dataset: str | None, interval: Any, lineage: dict[str, str]) -> str:
    """Log the interval's validation reports (HTML) to its run in `<dataset>-validation`; the URL to the
    last one. Idempotent: the interval's run is found by its tag and its artifacts overwritten."""
    from include.mlops.context import context
    from include.mlops.registry import ensure_experiment

    ctx = context(dataset)
    spec, settings, client = ctx.spec, ctx.settings, ctx.client
    exp_id = ensure_experiment(client, f"{spec.name}-validation", settings)
    found = client.search_runs([exp_id], filter_string=f"tags.`mlops.interval` = '{interval.key}'", max_results=1)
    if found:
        run_id = found[0].info.run_id
    else:
        run_id = client.create_run(
            exp_id,
            run_name=f"validation {interval.days[0]}" + (f"..{interval.days[-1]}" if len(interval.days) > 1 else ""),
            tags={"mlops.interval": interval.key, "mlops.dataset": spec.name, **lineage},
        ).info.run_id
    paths = _log_reports(client, run_id, report_uris)
    client.set_terminated(run_id, "FINISHED")
    return artifact_url(exp_id, run_id, paths[-1]) if paths else ""


def publish_monitoring(out: dict[str, Any]) -> str:
    """Log the window's HTML reports to the window's MLflow run; the URL of the drift report."""
    run_id, reports = out.get("run_id"), out.get("reports") or {}
    if not run_id or not out.get("report_html"):
        return ""
    from include.mlops.config import get_settings
    from include.mlops.registry import setup_mlflow

    client = setup_mlflow(get_settings())
    uris = [u for u in reports.values() if u and u != out["report_html"]] + [out["report_html"]]
    paths = _log_reports(client, run_id, uris)
    return artifact_url(out.get("experiment_id"), run_id, paths[-1])
