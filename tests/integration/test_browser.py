"""The Airflow UI in a real browser (Playwright driving Debian's chromium) against a real Airflow.

What a new user clicks: log in, read the DAG list (each DAG says what it does), trigger
`ml_retraining` through the trigger form with params (no "null" in its dropdowns), read a task's
log, and follow the extra links of an `ml_training` run to the MLflow UI: the model version, the
run, and the validation report rendered by MLflow (an http page, never file:// or s3://).
"""

from __future__ import annotations

import re
import shutil
import urllib.parse
from datetime import timedelta
from pathlib import Path

import pytest

from include.mlops.constants import STRATEGIES

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
UI_TIMEOUT_MS = 90_000  # a loaded 2-core machine renders slowly; every wait below has this deadline
DESCRIPTIONS = {
    "ml_training": "One day of data through extract, validate",
    "ml_retraining": "Train, evaluate, register and deploy again",
    "ml_monitoring": "One day of predictions and late labels",
    "ml_batch_scoring": "scored by the champion",
    "ml_rollback": "undo the last promotion",
}


@pytest.fixture(scope="module")
def browser():
    assert Path(CHROMIUM).exists() or shutil.which("chromium"), (
        "Debian's chromium is missing: `apt-get install -y chromium` (make install does it)"
    )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def ui(browser, airflow_stack):
    """A logged-in page (through the login form) and its context."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    ctx.set_default_timeout(UI_TIMEOUT_MS)
    page = ctx.new_page()
    page.goto(f"{airflow_stack.url}/")
    page.wait_for_url("**/auth/login**")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", airflow_stack.password)
    page.click("button[type=submit]")
    page.wait_for_url(lambda u: "/auth/login" not in u)
    yield page, ctx
    ctx.close()


def _q(run_id: str) -> str:
    return urllib.parse.quote(run_id, safe="")


def test_dag_list_shows_each_dag_with_its_description(ui, airflow_stack):
    page, _ = ui
    page.goto(f"{airflow_stack.url}/dags")
    for dag_id, text in DESCRIPTIONS.items():
        name = page.get_by_role("link", name=dag_id, exact=True).first
        name.wait_for()
        name.hover()  # the list shows a DAG's description as its name's tooltip
        page.get_by_text(text).first.wait_for()
        page.mouse.move(0, 0)


def test_trigger_form_with_params_then_read_the_task_log(ui, airflow_stack):
    """Trigger `ml_retraining` from its form; the run gets the params and its plan log follows them."""
    import airflow_client.client as ac

    page, _ = ui
    page.goto(f"{airflow_stack.url}/dags/ml_retraining")
    page.get_by_role("button", name="Trigger").first.click()
    form = page.get_by_role("dialog")
    form.locator("#element_window_end").fill(airflow_stack.day.isoformat())
    form.locator("input[name=element_window_days]").fill("3")
    picked = {}
    for param, choice in (("data_strategy", "sliding_window"), ("deploy_strategy", "direct")):
        form.locator(f"input[name=element_{param}]").locator("xpath=..").click()
        options = page.get_by_role("option")
        options.first.wait_for()
        picked[param] = options.all_inner_texts()
        page.get_by_role("option", name=choice, exact=True).click()
    assert picked["data_strategy"][0] == "the spec's strategy" and "sliding_window" in picked["data_strategy"]
    assert picked["deploy_strategy"] == ["the spec's strategy", *STRATEGIES]
    assert not [t for texts in picked.values() for t in texts if "null" in t.lower()]
    form.get_by_role("button", name="Trigger").click()
    page.wait_for_url(re.compile(r".*/dags/ml_retraining/runs/[^/]+$"))
    run_id = urllib.parse.unquote(page.url.rsplit("/runs/", 1)[1])

    client = airflow_stack.client()
    runs = ac.DagRunApi(client)
    try:
        conf = runs.get_dag_run("ml_retraining", run_id).conf
        assert {k: conf[k] for k in ("window_end", "window_days", "data_strategy", "deploy_strategy")} == {
            "window_end": airflow_stack.day.isoformat(),
            "window_days": 3,
            "data_strategy": "sliding_window",
            "deploy_strategy": "direct",
        }
        assert airflow_stack.wait_for_task("ml_retraining", run_id, "plan", 300) == "success"
        page.goto(f"{airflow_stack.url}/dags/ml_retraining/runs/{_q(run_id)}/tasks/plan")
        page.get_by_text("(manual): sliding_window window of 3 day(s)").first.wait_for()
        page.get_by_text(f"ending {airflow_stack.day + timedelta(days=1)}").first.wait_for()
        page.get_by_text("deploy strategy direct").first.wait_for()
    finally:
        # the rest of this run (train ... deploy) is what test_rest_client covers: stop it here
        runs.patch_dag_run("ml_retraining", run_id, ac.DAGRunPatchBody(state=ac.DagRunMutableStates.FAILED))


def test_extra_links_open_mlflow(ui, airflow_stack, training_run):
    """From the task instance pages of the `ml_training` run to the MLflow UI: model version, run, report."""
    page, ctx = ui
    mlflow = airflow_stack.start_mlflow_ui()
    base = f"{airflow_stack.url}/dags/ml_training/runs/{_q(training_run['run_id'])}/tasks"

    page.goto(f"{base}/evaluate")  # a task log, as the UI shows it: the gate table
    page.get_by_text("gate for run").first.wait_for()

    page.goto(f"{base}/register/details")
    link = page.get_by_role("link", name="MLflow model version")
    with ctx.expect_page() as opened:
        link.click()
    mv = opened.value
    mv.wait_for_url(f"{mlflow}/**")
    version = airflow_stack.task_value("ml_training", training_run["run_id"], "register")["version"]
    assert mv.url == f"{mlflow}/#/models/{airflow_stack.model_name}/versions/{version}"
    mv.get_by_text(f"Version {version}").first.wait_for()
    mv.get_by_text(training_run["run_id"]).first.wait_for()  # the lineage tag airflow.run_id
    mv.close()

    page.goto(f"{base}/train/details")
    with ctx.expect_page() as opened:
        page.get_by_role("link", name="MLflow run").click()
    run_page = opened.value
    run_page.wait_for_url(re.compile(re.escape(mlflow) + r"/#/experiments/\d+/runs/\w+"))
    run_page.get_by_text(f"churn-{airflow_stack.day:%Y%m%d}").first.wait_for()  # the run's name: its interval
    run_page.close()

    page.goto(f"{base}/validate/details")
    with ctx.expect_page() as opened:
        page.get_by_role("link", name="Report").click()
    report = opened.value
    report.wait_for_url(f"{mlflow}/**/artifacts/reports/validation.html")
    report.get_by_text("reports/validation.html").first.wait_for()
    # MLflow renders the HTML report in a frame of its own
    title = f"churn batch {airflow_stack.day.isoformat()}"
    report.frame_locator("iframe").first.get_by_text(title).wait_for()
    report.close()
