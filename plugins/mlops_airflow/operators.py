"""Operators for the steps that wrap a tool: GX validation, Feast, MLflow registration and promotion.

Each only assigns in `__init__`, declares `template_fields`, and calls one function of
`include.mlops` in `execute`; tools are imported there, never at DAG parse time. Domain errors
become `DataQualityError` / `PromotionError`, whose messages say what failed and where to look.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from mlops_airflow.links import MlflowModelVersionLink, MlflowRunLink, ReportLink


class DataQualityError(AirflowFailException):
    """The batch broke the data contract. Not retried: the same data fails the same way."""


class PromotionError(AirflowFailException):
    """The new model failed its post-deployment checks and the aliases were moved back."""


def _interval(start: Any, end: Any) -> Any:
    from include.mlops.pipeline import Interval

    def parse(v: Any) -> datetime:
        return v if isinstance(v, datetime) else datetime.fromisoformat(str(v))

    return Interval(parse(start), parse(end))


class _IntervalOperator(BaseOperator):
    template_fields = ("dataset", "data_interval_start", "data_interval_end")

    def __init__(
        self,
        *,
        dataset: str | None = "{{ params.dataset or '' }}",
        data_interval_start: str = "{{ data_interval_start }}",
        data_interval_end: str = "{{ data_interval_end }}",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.dataset = dataset
        self.data_interval_start = data_interval_start
        self.data_interval_end = data_interval_end

    @property
    def interval(self) -> Any:
        return _interval(self.data_interval_start, self.data_interval_end)


class GXValidateOperator(_IntervalOperator):
    """Validate the interval's staged batches with the GX suite generated from the dataset spec."""

    ui_color = "#ffe8cc"
    operator_extra_links = (ReportLink(),)

    def execute(self, context: Any) -> dict[str, Any]:
        from include.mlops.pipeline import validate
        from include.mlops.validation import DataValidationError

        self.log.info("validating %s for %s", self.dataset or "(default dataset)", self.interval.label)
        try:
            out = validate(self.interval, self.dataset or None)
        except DataValidationError as exc:
            raise DataQualityError(str(exc)) from exc
        out["report_html"] = out["report_uri"].replace(".json", ".html")
        for w in out["warnings"]:
            self.log.warning("value skew (recorded): %s", w)
        self.log.info("batch valid: %s rows; report %s", out["rows"], out["report_html"])
        return out


class FeastPrepareOperator(_IntervalOperator):
    """Build features, write the Feast offline source, apply the definitions, materialise online."""

    ui_color = "#e0f0ff"

    def execute(self, context: Any) -> dict[str, Any]:
        from include.mlops.pipeline import prepare

        out = prepare(self.interval, self.dataset or None)
        self.log.info("feature service %s; %s entities online", out["feature_service"], out["materialized"])
        return out


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
        out = register(train_out, eval_out, validate_out, lineage(context), self.interval, self.dataset or None)
        out["experiment_id"] = train_out.get("experiment_id")
        return out


class MlflowPromoteOperator(BaseOperator):
    """Move `champion` to the registered version if the gate passed; keep it otherwise.

    A rejected challenger ends the task successfully with "not promoted: ..."; a promoted one
    that fails its post-deployment checks is rolled back and the task fails.
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
        from include.mlops import deployment

        ti = context["ti"]
        reg_out = ti.xcom_pull(task_ids=self.register_task_id)
        eval_out = ti.xcom_pull(task_ids=self.evaluate_task_id)
        dag_run = context["dag_run"]
        try:
            out = deployment.rollout(
                reg_out,
                eval_out,
                dag_run.run_id,
                dag_run.dag_id,
                strategy=self.strategy or None,
                spec_name=self.dataset or None,
            )
        except deployment.DeploymentCheckFailed as exc:
            raise PromotionError(str(exc)) from exc
        self.log.info("%s", out["message"])
        return {
            **out,
            "model": reg_out["model"],
            "version": reg_out["version"],
            "run_id": reg_out["run_id"],
            "experiment_id": reg_out.get("experiment_id"),
        }


def lineage(context: Any) -> dict[str, str]:
    """Who produced a model: the Airflow DAG, run and task try that trained or registered it."""
    dag_run = context["dag_run"]
    return {"airflow.dag_id": dag_run.dag_id, "airflow.run_id": dag_run.run_id}
