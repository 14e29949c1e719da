"""What the deploy step is asked and what one rollout works with, from `start` to its last phase.

`DeployRequest` is the deploy step's input: the register and evaluate steps' results, the Airflow
run, the strategy and the dataset. `Run` adds what the rollout found and keeps: the context, the
strategy in force, the pending promotion (the ledger move), the champion before it. The strategy
a rollout runs and the share it publishes first are picked here too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from include.mlops.constants import STRATEGIES
from include.mlops.results import EvaluateResult, RegisterResult

if TYPE_CHECKING:
    from include.mlops.context import Context
    from include.mlops.spec import DatasetSpec


@dataclass(frozen=True)
class DeployRequest:
    """Deploy `register`'s version, judged by `evaluate`, for the Airflow run `run_id` of
    `dag_id`, by `strategy` (None: the spec's), on the dataset `spec_name` (None: the default)."""

    register: RegisterResult
    evaluate: EvaluateResult
    run_id: str
    dag_id: str
    strategy: str | None = None
    spec_name: str | None = None

    @classmethod
    def of(
        cls,
        reg_out: RegisterResult | dict[str, Any],
        eval_out: EvaluateResult | dict[str, Any],
        run_id: str,
        dag_id: str,
        strategy: str | None = None,
        spec_name: str | None = None,
    ) -> DeployRequest:
        """From the register and evaluate tasks' XCom values (or their results); a malformed
        value fails here, naming the step."""
        reg, evaluated = RegisterResult.from_xcom(reg_out), EvaluateResult.from_xcom(eval_out)
        return cls(reg, evaluated, run_id, dag_id, strategy, spec_name)


def strategy_of(spec: DatasetSpec, strategy: str | None) -> tuple[str, float]:
    """The run's strategy (or the spec's) and the share it publishes first, checked against the
    known strategies: the canary's first step, the A/B test's challenger arm."""
    dep = spec.deployment
    s = strategy or dep.strategy
    if s not in STRATEGIES:
        raise ValueError(f"deployment strategy must be one of {STRATEGIES}, not {s!r}")
    return s, dep.ab_test.share if s == "ab_test" else dep.canary.steps[0]


@dataclass
class Run:
    """What one rollout works with, from `start` to the end of its last phase."""

    ctx: Context
    req: DeployRequest
    strategy: str  # in force: the request's, the spec's, or the one a resumed promotion began with
    move: Any  # the pending promotion (ledger.LedgerEntry), None for a gate-rejected challenger in shadow
    champion: str | None  # the champion before the rollout
    champion_now: str | None
    resumed: bool = False

    @property
    def model(self) -> str:
        return self.req.register.model

    @property
    def version(self) -> str:
        return self.req.register.version

    @property
    def passed(self) -> bool:
        return self.req.evaluate.passed

    @property
    def mlflow_run(self) -> str | None:
        return self.req.register.run_id

    @property
    def run_id(self) -> str:
        return self.req.run_id

    @property
    def dag_id(self) -> str:
        return self.req.dag_id

    @property
    def spec_name(self) -> str | None:
        return self.req.spec_name

    @property
    def env(self) -> dict[str, str]:
        env = {"MLOPS_DATASET": self.spec_name} if self.spec_name else {}
        env["MLOPS_SERVE_PREDICTION_LOG"] = "false"  # a service started for the check logs nothing
        return env

    def phase_base(self, url: str, staged: dict[str, Any] | None) -> dict[str, Any]:
        """The fields every `Phase` of this rollout carries (the request as JSON)."""
        return {
            "model": self.model, "version": self.version, "champion": str(self.champion),
            "move": self.move.move if self.move is not None else None, "strategy": self.strategy,
            "spec_name": self.spec_name, "run_id": self.run_id, "dag_id": self.dag_id,
            "reg_out": self.req.register.to_xcom(), "eval_out": self.req.evaluate.to_xcom(), "service_url": url,
            "staged": staged, "resumed": self.resumed,
        }  # fmt: skip

    def ended(self, status: str | None, from_version: str | None) -> dict[str, Any]:
        return ended_as(self.model, self.version, status, from_version)

    def share_now(self, first: float) -> float:
        """The share to publish: a retried canary goes on at the step after the last one passed."""
        if self.strategy != "canary" or self.move is None:
            return first
        steps = self.ctx.spec.deployment.canary.steps
        return steps[min(self.canary_steps_passed(), len(steps) - 1)]

    def canary_steps_passed(self) -> int:
        """The canary steps of this rollout's move the ledger records as passed."""
        from include.mlops import ledger as L

        if self.move is None:
            return 0
        steps = [s for s in L.steps_of(self.ctx.store, self.model, self.move.move) if s.get("action") == "canary_step"]
        return len([s for s in steps if s.get("decision") == "pass"])


def ended_as(model: str, version: str, status: str | None, from_version: str | None) -> dict[str, Any]:
    """The typed fields of the error raised when this run's promotion was ended elsewhere: a
    rollback when the ledger move says `rolled_back` (the champion then is its `from_version`)."""
    from include.mlops.ledger import ROLLED_BACK

    rolled_back = status == ROLLED_BACK
    return {
        "model": model,
        "version": version,
        "rolled_back": rolled_back,
        "rolled_back_to": from_version if rolled_back else None,
    }
