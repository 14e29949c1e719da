"""Who the challenger is compared with, and how each of them scores on the challenger's holdout.

The gate (`gate.gate`) judges; this module finds what it judges on: the champion to
compare with (never the run's own model: a re-run reuses the decision recorded before its
promotion), the reference (the best, on the same holdout, of the recent champions and the
baseline, read from the promotion ledger), every one of them scored, and the record a decision
keeps. A model that cannot be loaded or scored raises `gate.GateError`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from include.mlops.constants import lower_is_better
from include.mlops.evaluation.gate import GateError, gate
from include.mlops.evaluation.metrics import RegressionCI, metrics, paired_bootstrap, slice_metrics
from include.mlops.scores import Scored, score_model

if TYPE_CHECKING:
    import pandas as pd

    from include.mlops.evaluation.gate import GateDecision
    from include.mlops.spec import DatasetSpec

log = logging.getLogger(__name__)


# -- the models the gate compares with ------------------------------------------------------------
@dataclass
class VersionScore:
    """A registered version scored on the challenger's holdout."""

    version: str
    scored: Scored
    metrics: dict[str, float]
    slices: dict[str, dict[str, float]]


def score_version(
    spec: DatasetSpec,
    version: str,
    holdout: pd.DataFrame,
    load: Callable[[str], Any],
    *,
    role: str,
    missing_ok: bool = False,
) -> VersionScore | str:
    """Load version `version` of the spec's model and score the holdout with it.

    Returns a string saying why it cannot score this holdout in exactly two cases, both explicit:
    the model needs features the holdout does not have (the spec's features changed since it was
    trained), or (with `missing_ok`) the registry says the version no longer exists. A model
    trained on fewer features than the spec now has scores the same rows with its own columns.
    Anything else (a registry error, a download error, a refused artifact format, a scoring
    error) raises `GateError` naming the version and the cause."""
    from include.mlops.features.build import model_features
    from include.mlops.registry import is_not_found

    uri = f"models:/{spec.model_name}/{version}"
    try:
        model = load(uri)
    except Exception as exc:
        if missing_ok and is_not_found(exc):
            return f"v{version} no longer exists in the registry"
        raise GateError(
            f"cannot load the {role} {spec.model_name} v{version} ({uri}): {type(exc).__name__}: {exc}. "
            "The gate does not decide without it: fix the registry or the artifact, then re-run evaluate"
        ) from exc
    needed = getattr(model, "feature_names_in_", None)
    columns = [str(c) for c in needed] if needed is not None else model_features(spec)
    missing = [c for c in columns if c not in holdout.columns]
    if missing:
        return (
            f"v{version} was trained on features this holdout does not have ({', '.join(missing[:8])}"
            f"{', ...' if len(missing) > 8 else ''}): the spec's features changed"
        )
    try:
        scored = score_model(model, holdout[columns], spec)
        return VersionScore(
            str(version), scored, metrics(holdout[spec.label], scored, spec), slice_metrics(holdout, scored, spec)
        )
    except Exception as exc:
        raise GateError(
            f"the {role} {spec.model_name} v{version} could not score the holdout: {type(exc).__name__}: {exc}"
        ) from exc


DONE = (None, "done")  # ledger entries without a status (before pending/done) or completed


def champion_history(ledger: list[dict[str, Any]]) -> tuple[list[str], str | None]:
    """From the ledger: the versions that were champion, newest first (a version a rollback moved
    away from is left out, unless it was made champion again later), and the baseline: the
    version a person last put in place with `ml_rollback` (action "rollback"), else the first
    champion. Entries still pending are ignored."""
    entries = sorted(
        (e for e in ledger if e.get("to_version") and e.get("status") in DONE), key=lambda e: str(e.get("at", ""))
    )
    order: list[str] = []
    dropped: set[str] = set()
    baseline: str | None = None
    for e in entries:
        to, frm, action = str(e["to_version"]), e.get("from_version"), str(e.get("action", ""))
        if action.startswith("rollback") and frm:
            dropped.add(str(frm))
        dropped.discard(to)
        order.append(to)
        if baseline is None or action == "rollback":
            baseline = to
    recent: list[str] = []
    for v in reversed(order):
        if v not in recent and v not in dropped:
            recent.append(v)
    return recent, (baseline if baseline not in dropped else None)


def was_champion(ledger: list[dict[str, Any]], version: str) -> bool:
    """Whether a completed ledger entry ever made `version` champion."""
    return any(str(e.get("to_version")) == str(version) and e.get("status") in DONE for e in ledger)


def champion_before(ledger: list[dict[str, Any]], version: str) -> str | None:
    """The champion in force before `version` was first made champion (None: it was the first)."""
    entries = sorted((e for e in ledger if e.get("status") in DONE), key=lambda e: str(e.get("at", "")))
    for e in entries:
        if str(e.get("to_version")) == str(version):
            frm = e.get("from_version")
            return None if frm in (None, "", "None") else str(frm)
    return None


def reference_versions(spec: DatasetSpec, ledger: list[dict[str, Any]], champion: str | None) -> list[str]:
    """The versions the reference is chosen from: the current champion, the last
    `gate.reference_champions` champions and the baseline (see `champion_history`)."""
    n = spec.gate.reference_champions
    if n <= 0:
        return []
    recent, baseline = champion_history(ledger)
    out: list[str] = []
    for v in [*([champion] if champion else []), *recent]:
        if v not in out and len(out) < n:
            out.append(v)
    if baseline and baseline not in out:
        out.append(baseline)
    return out


@dataclass
class Reference:
    """The best of the reference versions on this holdout, and the challenger's regression."""

    version: str
    value: float  # its primary metric on this holdout
    ci: RegressionCI | None
    considered: list[str]
    skipped: list[str] = field(default_factory=list)  # why some could not be scored

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def find_reference(
    spec: DatasetSpec,
    candidates: list[str],
    holdout: pd.DataFrame,
    challenger: Scored,
    load: Callable[[str], Any],
    scored: dict[str, VersionScore | str],
) -> Reference | str | None:
    """Score each candidate version (reusing `scored`, filled in) and return the best one with
    the challenger's paired-bootstrap regression against it; a string when no candidate can
    score this holdout (why); None when there is no candidate."""
    if not candidates:
        return None
    primary = spec.primary_metric
    usable: list[VersionScore] = []
    skipped: list[str] = []
    for v in candidates:
        if v not in scored:
            scored[v] = score_version(spec, v, holdout, load, role="reference version", missing_ok=True)
        got = scored[v]
        if isinstance(got, str):
            skipped.append(got)
        elif not math.isnan(got.metrics.get(primary, float("nan"))):
            usable.append(got)
    if not usable:
        return "no earlier champion can score this holdout" + (f" ({'; '.join(skipped)})" if skipped else "")
    lower = lower_is_better(primary)
    best = (min if lower else max)(usable, key=lambda s: s.metrics[primary])
    g = spec.gate
    ci = paired_bootstrap(holdout[spec.label], challenger, best.scored, spec, g.bootstrap_resamples, g.confidence)
    return Reference(best.version, best.metrics[primary], ci, list(candidates), skipped)


# -- the evaluate step's parts --------------------------------------------------------------------
@dataclass
class Opponent:
    """Which champion a run's model is judged against, or the earlier decision a re-run reuses."""

    own: str | None  # the run's model version, once registered
    champion: str | None  # the version to compare with; None: no champion yet
    before: bool = False  # `champion` is the one in force before `own` (own is or was champion)
    recorded: dict[str, Any] | None = None  # the gate decision recorded earlier, reused as it is


def opponent(client: Any, spec: DatasetSpec, ledger: list[dict[str, Any]], run_id: str) -> Opponent:
    """The current champion; but for a run whose model is or was champion, the decision recorded
    before its promotion, else the champion before it: never the model against itself."""
    from include.mlops.constants import CHAMPION
    from include.mlops.registry import alias_version, find_version
    from include.mlops.training.tracking import recorded_gate

    champion = alias_version(client, spec.model_name, CHAMPION)
    own = find_version(client, spec.model_name, run_id)
    if own is None or not (own == champion or was_champion(ledger, own)):
        return Opponent(own, champion)
    state = "is the champion" if own == champion else "was champion"
    recorded = recorded_gate(client, run_id)
    if recorded is not None:
        log.info(
            "run %s: its model v%s %s; reusing the gate decision recorded at %s (%s) instead of comparing "
            "the model with itself",
            run_id,
            own,
            state,
            recorded.get("at", "its first evaluation"),
            "passed" if recorded["passed"] else "failed",
        )
        return Opponent(own, champion, recorded=recorded)
    before = champion_before(ledger, own)
    log.info(
        "run %s: its model v%s %s and no gate decision is recorded; comparing with the champion in force "
        "before it (%s)",
        run_id,
        own,
        state,
        f"v{before}" if before else "none: it was the first",
    )
    return Opponent(own, before, before=True)


def reused_result(recorded: dict[str, Any]) -> dict[str, Any]:
    """The evaluate step's result from a decision recorded earlier (`reused`: nothing was scored)."""
    return {
        "passed": bool(recorded["passed"]),
        "reasons": list(recorded.get("reasons", [])),
        "metrics": recorded.get("challenger", {}),
        "champion_metrics": recorded.get("champion"),
        "champion_version": recorded.get("champion_version"),
        "nan_predictions": int(recorded.get("nan_predictions", 0)),
        "reused": True,
    }


@dataclass
class HoldoutScore:
    """The challenger on its holdout; NaN scores count against the gate (metrics fill them)."""

    scored: Scored
    metrics: dict[str, float]
    slices: dict[str, dict[str, float]]
    nan_predictions: int


def score_challenger(model: Any, holdout: pd.DataFrame, spec: DatasetSpec) -> HoldoutScore:
    import numpy as np

    from include.mlops.features.build import model_features

    scored = score_model(model, holdout[model_features(spec)], spec)
    nan_preds = int(np.isnan(np.asarray(scored.score, dtype=float)).sum())
    y = holdout[spec.label]
    return HoldoutScore(scored, metrics(y, scored, spec), slice_metrics(holdout, scored, spec), nan_preds)


@dataclass
class ChampionScore:
    """The champion on the challenger's holdout, or why it cannot score it (`unscorable`)."""

    version: str | None
    score: VersionScore | None
    ci: RegressionCI | None  # the challenger's paired-bootstrap regression against it
    unscorable: str | None
    note: str  # for the log and the record

    @property
    def metrics(self) -> dict[str, float] | None:
        return self.score.metrics if self.score else None

    @property
    def slices(self) -> dict[str, dict[str, float]] | None:
        return self.score.slices if self.score else None


def score_champion(
    spec: DatasetSpec,
    opp: Opponent,
    holdout: pd.DataFrame,
    challenger: HoldoutScore,
    load: Callable[[str], Any],
    versions: dict[str, VersionScore | str],
) -> ChampionScore:
    """The opponent scored on the challenger's holdout (recorded in `versions`), with the
    challenger's regression against it."""
    note, champ, unscorable = "no champion yet", None, None
    if opp.champion is not None:
        got = score_version(spec, opp.champion, holdout, load, role="champion")
        versions[opp.champion] = got
        if isinstance(got, str):
            unscorable = got
            note = f"champion v{opp.champion} cannot score this holdout: {got}"
            log.warning("%s (gate.feature_change: %s)", note, spec.gate.feature_change)
        else:
            champ = got
            note = f"champion v{opp.champion} scored on the same holdout"
    if opp.before:
        note += " (the champion before this run's model)"
    g = spec.gate
    y = holdout[spec.label]
    ci = (
        paired_bootstrap(y, challenger.scored, champ.scored, spec, g.bootstrap_resamples, g.confidence)
        if champ
        else None
    )
    return ChampionScore(opp.champion, champ, ci, unscorable, note)


def judge(
    spec: DatasetSpec, challenger: HoldoutScore, champion: ChampionScore, reference: Reference | str | None
) -> GateDecision:
    """The gate on what was scored."""
    return gate(
        spec,
        challenger.metrics,
        challenger.slices,
        challenger.nan_predictions,
        champion.metrics,
        champion.slices,
        champion_version=champion.version,
        champion_ci=champion.ci,
        champion_unscorable=champion.unscorable,
        reference=reference,
    )


def gate_record(
    decision: GateDecision,
    at: str,
    challenger: HoldoutScore,
    champion: ChampionScore,
    reference: Reference | str | None,
    model_version: str | None,
) -> dict[str, Any]:
    """What a gate decision keeps in the run: the decision and everything it was made on."""
    return {
        **decision.to_dict(),
        "at": at,
        "challenger": challenger.metrics,
        "champion": champion.metrics,
        "champion_version": champion.version,
        "champion_note": champion.note,
        "champion_ci": asdict(champion.ci) if champion.ci else None,
        "reference": reference.to_dict() if isinstance(reference, Reference) else reference,
        "slices": challenger.slices,
        "champion_slices": champion.slices,
        "nan_predictions": challenger.nan_predictions,
        "model_version": model_version,
    }
