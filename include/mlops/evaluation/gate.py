"""The promotion gate: the challenger against minimums, the champion and a reference.

The gate compares the challenger, on its holdout, with the current champion and with a
reference: the best, on the same holdout, of the recent champions and the baseline (see
`comparison.reference_versions`). It decides on numbers measured on that holdout
(`metrics.metrics`, `metrics.slice_metrics`, `metrics.paired_bootstrap`). Every model
the gate must compare with is loaded and scored, or `comparison` raises `GateError`: a registry
or artifact fault fails the task, it never decides as if the model did not exist.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from include.mlops.constants import lower_is_better, worse_by

if TYPE_CHECKING:
    from include.mlops.evaluation.comparison import Reference
    from include.mlops.evaluation.metrics import RegressionCI
    from include.mlops.spec import DatasetSpec


@dataclass
class GateCheck:
    check: str
    value: float | None
    threshold: float | None
    passed: bool
    note: str = ""


@dataclass
class GateDecision:
    passed: bool
    checks: list[GateCheck] = field(default_factory=list)

    @property
    def reasons(self) -> list[str]:
        return [f"{c.check}: {c.note}" for c in self.checks if not c.passed]

    def table(self) -> str:
        """A fixed-width table for the task log and the run."""
        head = f"{'check':<44} {'value':>10} {'threshold':>10}  result"
        lines = [head, "-" * len(head)]
        for c in self.checks:
            v = "" if c.value is None else f"{c.value:.4f}"
            t = "" if c.threshold is None else f"{c.threshold:.4f}"
            lines.append(f"{c.check:<44} {v:>10} {t:>10}  {'pass' if c.passed else 'FAIL'} {c.note}".rstrip())
        lines.append(f"decision: {'PROMOTE' if self.passed else 'KEEP CHAMPION'}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "reasons": self.reasons, "checks": [asdict(c) for c in self.checks]}


class GateError(Exception):
    """The gate cannot decide: a model it must compare with cannot be loaded or scored. The task
    fails (and retries); the gate never decides as if that model did not exist."""


def _regression_check(
    check: str, primary: str, challenger: float, other: float, tol: float, ci: RegressionCI | None, who: str
) -> GateCheck:
    """Fails when the challenger is worse than `other` by more than `tol`: with a bootstrap, when
    the regression exceeds `tol` at the given confidence (its one-sided lower bound is above
    `tol`); without one, when the bare difference does."""
    worse = worse_by(primary, other, challenger)
    note = f"{who} {other:.4f}, challenger {challenger:.4f}"
    if ci is None:
        ok = not math.isnan(worse) and worse <= tol
    else:
        ok = ci.low <= tol
        note += f"; {ci.describe()}"
    return GateCheck(check, worse, tol, ok, note)


def gate(
    spec: DatasetSpec,
    challenger: dict[str, float],
    challenger_slices: dict[str, dict[str, float]],
    nan_predictions: int,
    champion: dict[str, float] | None = None,
    champion_slices: dict[str, dict[str, float]] | None = None,
    *,
    champion_version: str | None = None,
    champion_ci: RegressionCI | None = None,
    champion_unscorable: str | None = None,
    reference: Reference | str | None = None,
) -> GateDecision:
    """Absolute minimums, no NaN predictions, no regression against the champion overall or per
    slice, and none against the reference beyond `gate.cumulative_max_regression`.

    `champion_unscorable` says why the champion cannot score this holdout (the spec's features
    changed): then `gate.feature_change` decides, "minimums" (the champion check passes, noted)
    or "refuse". `reference` is a `Reference`, a string (why there is none to score: noted), or
    None (no reference check)."""
    who = f"champion v{champion_version}" if champion_version else "champion"
    checks = _minimum_checks(spec, challenger, nan_predictions)
    if champion_unscorable is not None:
        checks.append(_feature_change_check(spec, who, champion_unscorable))
    elif champion is None:
        checks.append(GateCheck("vs champion", None, None, True, "no champion yet"))
    else:
        checks += _champion_checks(spec, challenger, challenger_slices, champion, champion_slices, champion_ci, who)
    if isinstance(reference, str):
        checks.append(GateCheck("vs reference", None, None, True, reference))
    elif reference is not None:
        checks.append(_reference_check(spec, challenger, reference))
    return GateDecision(all(c.passed for c in checks), checks)


def _minimum_checks(spec: DatasetSpec, challenger: dict[str, float], nan_predictions: int) -> list[GateCheck]:
    """No NaN prediction, and every `gate.minimums` metric at or beyond its minimum."""
    nan_note = "" if nan_predictions == 0 else f"{nan_predictions} NaN predictions"
    checks = [GateCheck("no NaN predictions", float(nan_predictions), 0.0, nan_predictions == 0, nan_note)]
    for metric, minimum in spec.gate.minimums.items():
        v = challenger.get(metric, float("nan"))
        ok = not math.isnan(v) and (v <= minimum if lower_is_better(metric) else v >= minimum)
        checks.append(
            GateCheck(f"minimum {metric}", v, float(minimum), ok, "" if ok else f"{v:.4f} vs minimum {minimum}")
        )
    return checks


def _feature_change_check(spec: DatasetSpec, who: str, why: str) -> GateCheck:
    """The champion cannot score this holdout (the spec's features changed): `gate.feature_change` decides."""
    ok = spec.gate.feature_change == "minimums"
    rule = (
        "decided on the minimums and the reference (gate.feature_change: minimums)"
        if ok
        else "refused until a person promotes a model of the new features (gate.feature_change: refuse)"
    )
    return GateCheck("vs champion", None, None, ok, f"{who} cannot score this holdout: {why}; {rule}")


def _champion_checks(
    spec: DatasetSpec,
    challenger: dict[str, float],
    challenger_slices: dict[str, dict[str, float]],
    champion: dict[str, float],
    champion_slices: dict[str, dict[str, float]] | None,
    ci: RegressionCI | None,
    who: str,
) -> list[GateCheck]:
    """No regression against the champion overall (`gate.max_regression`) or on any slice both
    scored (`gate.slice_max_regression`)."""
    primary, g = spec.primary_metric, spec.gate
    tol = g.max_regression
    check = f"regression of {primary} vs champion"
    checks = [_regression_check(check, primary, challenger[primary], champion[primary], tol, ci, who)]
    stol = float(g.slice_max_regression if g.slice_max_regression is not None else tol)
    for name, m in sorted(challenger_slices.items()):
        ref = (champion_slices or {}).get(name)
        if ref is None or math.isnan(ref.get(primary, float("nan"))) or math.isnan(m.get(primary, float("nan"))):
            continue
        worse = worse_by(primary, ref[primary], m[primary])
        note = "" if worse <= stol else f"champion {ref[primary]:.4f}, challenger {m[primary]:.4f}"
        checks.append(GateCheck(f"slice {name} {primary} regression", worse, stol, worse <= stol, note))
    return checks


def _reference_check(spec: DatasetSpec, challenger: dict[str, float], reference: Reference) -> GateCheck:
    """No regression against the best reference version beyond `gate.cumulative_max_regression`."""
    primary, g = spec.primary_metric, spec.gate
    tol = float(g.cumulative_max_regression if g.cumulative_max_regression is not None else g.max_regression)
    considered = ", ".join(f"v{v}" for v in reference.considered)
    return _regression_check(
        f"regression of {primary} vs reference v{reference.version}",
        primary,
        challenger[primary],
        reference.value,
        tol,
        reference.ci,
        f"best of {considered}: v{reference.version}",
    )
