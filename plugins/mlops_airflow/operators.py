"""Operators for the steps that wrap a tool: GX validation, Feast, MLflow registration and promotion.

Each only assigns in `__init__`, declares `template_fields`, and calls one function of
`include.mlops` in `execute`; tools are imported there, never at DAG parse time. Domain errors
become `DataQualityError` / `PromotionError`, whose messages say what failed and where to look.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.decorators.python import _PythonDecoratedOperator
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from mlops_airflow.links import MlflowModelVersionLink, MlflowRunLink, ReportLink

if TYPE_CHECKING:
    from airflow.sdk.bases.decorator import TaskDecorator


class DataQualityError(AirflowFailException):
    """The batch broke the data contract, a landed file is unreadable, or no data landed for the
    interval. Not retried: the same data fails the same way."""


class PromotionError(AirflowFailException):
    """The new model failed its post-deployment checks and the aliases were moved back."""


def _interval(start: Any, end: Any) -> Any:
    from include.mlops.pipeline import Interval

    def parse(v: Any) -> datetime:
        return v if isinstance(v, datetime) else datetime.fromisoformat(str(v))

    return Interval(parse(start), parse(end))


class _IntervalOperator(BaseOperator):
    """An operator for one data interval: given (templated), or the run's own.

    Left empty, the interval is the run's data interval, or for a run triggered with
    `"logical_date": null` the last complete UTC day before its `run_after`
    (`mlops_airflow.dates.daily_interval`).
    """

    template_fields = ("dataset", "data_interval_start", "data_interval_end")

    def __init__(
        self,
        *,
        dataset: str | None = "{{ params.dataset or '' }}",
        data_interval_start: str | None = None,
        data_interval_end: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.dataset = dataset
        self.data_interval_start = data_interval_start
        self.data_interval_end = data_interval_end

    def interval_of(self, context: Any) -> Any:
        if self.data_interval_start and self.data_interval_end:
            return _interval(self.data_interval_start, self.data_interval_end)
        from mlops_airflow.dates import daily_interval

        return _interval(*daily_interval(context))


class GXValidateOperator(_IntervalOperator):
    """Validate the interval's staged batches with the GX suite generated from the dataset spec.

    The HTML reports are also logged to MLflow (`<dataset>-validation`, one run per interval) so
    the *Report* extra link opens them in a browser.
    """

    ui_color = "#ffe8cc"
    operator_extra_links = (ReportLink(),)

    def execute(self, context: Any) -> dict[str, Any]:
        from dataclasses import replace

        from include.mlops.pipeline import validate
        from include.mlops.validation.checks import DataValidationError

        interval = self.interval_of(context)
        self.log.info("validating %s for %s", self.dataset or "(default dataset)", interval.label)
        try:
            out = validate(interval, self.dataset or None)
        except DataValidationError as exc:
            raise DataQualityError(str(exc)) from exc
        out = replace(out, report_html=out.report_uri.replace(".json", ".html"))
        for w in out.warnings:
            self.log.warning("value skew (recorded): %s", w)
        self.log.info("batch valid: %s rows; report %s", out.rows, out.report_html)
        try:
            from mlops_airflow.reports import publish_validation

            htmls = [u.replace(".json", ".html") for u in out.reports]
            out = replace(out, report_url=publish_validation(htmls, self.dataset or None, interval, lineage(context)))
            self.log.info("report in MLflow: %s", out.report_url)
        except Exception as exc:  # the report is in the store; the link is a convenience
            self.log.warning("could not log the validation report to MLflow: %s", exc)
        return out.to_xcom()


class FeastPrepareOperator(_IntervalOperator):
    """Build features, write the Feast offline source, apply the definitions, materialise online."""

    ui_color = "#e0f0ff"

    def execute(self, context: Any) -> dict[str, Any]:
        from include.mlops.pipeline import prepare

        out = prepare(self.interval_of(context), self.dataset or None)
        self.log.info("feature service %s; %s entities online", out.feature_service, out.materialized)
        return out.to_xcom()


class MlflowRegisterOperator(_IntervalOperator):
    """Register the trained model with its lineage tags and point `challenger` at it."""

    template_fields = (*_IntervalOperator.template_fields, "train_task_id", "evaluate_task_id", "validate_task_id")
    ui_color = "#e8f5e9"
    operator_extra_links = (MlflowRunLink(), MlflowModelVersionLink())

    def __init__(
        self,
        *,
        train_task_id: str = "train",
        evaluate_task_id: str = "evaluate",
        validate_task_id: str = "validate",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.train_task_id = train_task_id
        self.evaluate_task_id = evaluate_task_id
        self.validate_task_id = validate_task_id

    def execute(self, context: Any) -> dict[str, Any]:
        from include.mlops.pipeline import register

        ti = context["ti"]
        train_out = ti.xcom_pull(task_ids=self.train_task_id)
        eval_out = ti.xcom_pull(task_ids=self.evaluate_task_id)
        validate_out = ti.xcom_pull(task_ids=self.validate_task_id)
        out = register(
            train_out, eval_out, validate_out, lineage(context), self.interval_of(context), self.dataset or None
        )
        return out.to_xcom()


class MlflowPromoteOperator(BaseOperator):
    """Move `champion` to the registered version if the gate passed; keep it otherwise.

    A rejected challenger ends the task successfully with "not promoted: ...". A canary, shadow
    or A/B rollout has live phases: the task defers to `LiveTrafficTrigger` while each soaks (no
    worker slot held) and resumes in `resume` to judge it. A rollout that fails a check or a
    phase is rolled back and the task fails; an A/B test the champion wins (or an inconclusive
    one) ends the task successfully with the champion kept.
    """

    template_fields = ("dataset", "strategy", "register_task_id", "evaluate_task_id")
    ui_color = "#e8f5e9"
    operator_extra_links = (MlflowRunLink(), MlflowModelVersionLink())

    def __init__(
        self,
        *,
        dataset: str | None = "{{ params.dataset or '' }}",
        strategy: str | None = "{{ params.deploy_strategy or '' }}",
        register_task_id: str = "register",
        evaluate_task_id: str = "evaluate",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.dataset = dataset
        self.strategy = strategy
        self.register_task_id = register_task_id
        self.evaluate_task_id = evaluate_task_id

    def execute(self, context: Any) -> dict[str, Any]:
        from include.mlops.delivery.request import DeployRequest
        from include.mlops.delivery.rollout import DeploymentCheckFailed, start

        ti, dag_run = context["ti"], context["dag_run"]
        req = DeployRequest.of(
            ti.xcom_pull(task_ids=self.register_task_id),
            ti.xcom_pull(task_ids=self.evaluate_task_id),
            dag_run.run_id,
            dag_run.dag_id,
            strategy=self.strategy or None,
            spec_name=self.dataset or None,
        )
        try:
            out = start(req)
        except DeploymentCheckFailed as exc:
            raise PromotionError(str(exc)) from exc
        return self._next(context, out)

    def resume(self, context: Any, event: dict[str, Any] | None = None, state: dict[str, Any] | None = None) -> Any:
        """The trigger fired: judge the phase, then defer again for the next one or finish."""
        from include.mlops.delivery.rollout import DeploymentCheckFailed, resume

        event = dict(event or {})
        state = state or event.pop("state", None)
        if state is None:
            raise PromotionError(f"resumed without the rollout's phase (event {event}): re-run the deploy task")
        try:
            out = resume(state, event)
        except DeploymentCheckFailed as exc:
            raise PromotionError(str(exc)) from exc
        return self._next(context, out)

    def _next(self, context: Any, out: Any) -> dict[str, Any]:
        """Defer for a phase (never returns), or the final result for XCom."""
        from include.mlops.delivery.phases import Phase
        from include.mlops.results import PromoteResult
        from mlops_airflow.triggers import LiveTrafficTrigger

        if isinstance(out, Phase):
            self.log.info("deferring until the live phase is judged: %s", out.describe())
            state = out.to_dict()
            self.defer(
                trigger=LiveTrafficTrigger(state, out.soak_until, out.deadline, out.poll_seconds),
                method_name="resume",
                kwargs={"state": state},
            )
        # rollout and promote log each decision once; repeating their message here doubled it
        return PromoteResult.from_xcom(out).to_xcom()


def lineage(context: Any) -> dict[str, str]:
    """Who produced a model: the Airflow DAG, run and task try that trained or registered it."""
    dag_run = context["dag_run"]
    return {"airflow.dag_id": dag_run.dag_id, "airflow.run_id": dag_run.run_id}


def mlflow_task(python_callable: Any = None, **kwargs: Any) -> TaskDecorator:
    """`@task` whose task instance links to the MLflow run in its return value (`run_id`,
    `experiment_id`): a TaskFlow task has no extra links of its own, so the link comes with the class."""
    from airflow.sdk.bases.decorator import task_decorator_factory

    return task_decorator_factory(python_callable=python_callable, decorated_operator_class=_MlflowRunTask, **kwargs)


class _MlflowRunTask(_PythonDecoratedOperator):
    """The `@task` operator with the *MLflow run* link (`mlflow_task`)."""

    operator_extra_links = (MlflowRunLink(),)
