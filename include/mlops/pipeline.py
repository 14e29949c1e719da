"""The lifecycle steps as plain functions: what each `ml_training` task does, minus Airflow.

Each step takes the spec, the data interval and small inputs, reads and writes the object store,
and returns a small typed result (`results`: URIs, versions, metrics) that its task pushes to XCom
as JSON. Every step is idempotent for its interval: outputs are overwritten at interval-keyed
paths and a re-run trains and registers nothing new. What the steps use lives by kind: reading
landed files in `data.landing`, store paths in `layout`, MLflow records in `training.tracking`,
the gate in `evaluation.gate`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from include.mlops import layout
from include.mlops.context import context
from include.mlops.results import (
    EvaluateResult,
    ExtractResult,
    PrepareResult,
    PromoteResult,
    RegisterResult,
    TrainResult,
    ValidateResult,
)

log = logging.getLogger(__name__)


class NotEnoughData(Exception):
    """Too few labelled rows to train yet; the DAG skips training rather than failing."""


@dataclass(frozen=True)
class Interval:
    start: datetime
    end: datetime

    @property
    def days(self) -> list[date]:
        """Calendar days whose batches belong to the interval [start, end)."""
        first = self.start.date()
        last = (self.end - timedelta(microseconds=1)).date() if self.end > self.start else first
        return [first + timedelta(days=i) for i in range((last - first).days + 1)]

    @property
    def key(self) -> str:
        return f"{self.start:%Y%m%dT%H%M%S}_{self.end:%Y%m%dT%H%M%S}"

    @property
    def label(self) -> str:
        return f"{self.start.isoformat()}/{self.end.isoformat()}"


# -- extract ------------------------------------------------------------------------------------
def extract(interval: Interval, spec_name: str | None = None) -> ExtractResult:
    """Stage the interval's landed events (every file of each day, one parquet per day) and the
    labels that arrived in it, overwriting; unreadable files are quarantined and fail the day.

    The common case, one parquet file per day, is a byte copy: no decoding and re-encoding of
    the table (a second per 200k rows); the parquet footer gives the row count and proves the
    object is a table. Several files, CSV, `source.rename` and inline labels go through Arrow.
    """
    from include.mlops.data.landing import extract_day

    ctx = context(spec_name)
    spec, store = ctx.spec, ctx.store
    staged, rows, labels = [], 0, 0
    for day in interval.days:
        uri, n, n_labels = extract_day(store, spec, day)
        staged.append(uri)
        rows += n
        labels += n_labels
    log.info("staged %d rows from %d day(s) and %d labels for %s", rows, len(staged), labels, interval.label)
    return ExtractResult(staged=staged, rows=rows, labels=labels, days=[d.isoformat() for d in interval.days])


# -- validate -----------------------------------------------------------------------------------
def validate(interval: Interval, spec_name: str | None = None) -> ValidateResult:
    """Run the spec's GX suite on each staged batch; quarantine and raise on a broken contract."""
    from include.mlops.data.landing import discard_day, reject_files
    from include.mlops.validation.checks import DataValidationError, failure_message, render_html, validate_frame

    ctx = context(spec_name)
    spec, store = ctx.spec, ctx.store
    reports, warnings, rows = [], [], 0
    for day in interval.days:
        # text columns arrive as categories (dictionary-decoded): quicker to read, and GX tests
        # categories far faster than Python strings (see validation.suite._batch_frame)
        events_key = layout.staging_events_key(spec, day)
        try:
            df = store.get_parquet(events_key, read_dictionary=spec.categorical_features)
        except FileNotFoundError:
            raise
        except Exception as exc:  # extract's fast path copies one parquet file's bytes: its pages are read here
            log.error("staged events of %s do not decode: %s", day, exc)
            cause = "the parquet file's footer reads but its data does not decode (damaged or truncated pages)"
            reject_files(store, spec, day, [(events_key, "events", cause)])
        labels_key = layout.staging_labels_key(spec, day)
        if spec.labels_inline and store.exists(labels_key):  # judged as landed: the label beside its events
            label = store.get_parquet(labels_key, columns=[spec.label])[spec.label]
            if len(label) == len(df):
                df[spec.label] = label.to_numpy()
        outcome = validate_frame(df, spec, day)
        base = layout.validation_report_prefix(spec, day)
        report_uri = store.put_json(
            f"{base}validation.json",
            {
                **outcome.summary(),
                "failures": outcome.failures,
                "warnings_detail": outcome.warnings,
                "gx_result": outcome.result,
            },
        )
        store.put_text(f"{base}validation.html", render_html(outcome, f"{spec.name} batch {day}"))
        reports.append(report_uri)
        rows += outcome.rows
        for w in outcome.warnings:
            log.warning(
                "value skew on %s (recorded, not blocking): %s unexpected=%s", day, w["label"], w["unexpected_count"]
            )
            warnings.append(f"{day}: {w['label']}")
        qprefix = layout.quarantine_prefix(spec, day)
        if not outcome.success:
            store.delete_prefix(qprefix)
            store.copy(events_key, f"{qprefix}events.parquet")  # the batch as validated: every file of the day
            if spec.labels_inline and store.exists(labels_key):
                store.copy(labels_key, f"{qprefix}labels.parquet")
            store.put_json(
                f"{qprefix}validation.json",
                {**outcome.summary(), "failures": outcome.failures, "gx_result": outcome.result},
            )
            discard_day(store, spec, day, labels=False)
            raise DataValidationError(
                failure_message(outcome, f"{spec.name} {day}", report_uri, store.uri(qprefix.rstrip("/")))
            )
        store.delete_prefix(qprefix)  # a fixed batch re-run leaves no stale quarantine
    return ValidateResult(reports=reports, report_uri=reports[-1], warnings=warnings, rows=rows)


# -- prepare ------------------------------------------------------------------------------------
def prepare(interval: Interval, spec_name: str | None = None) -> PrepareResult:
    """Feature functions -> Feast offline source; apply the definitions; materialise the interval."""
    from include.mlops.features import build as F

    ctx = context(spec_name)
    spec, store = ctx.spec, ctx.store
    frames, uris = [], []
    for day in interval.days:
        raw = store.get_parquet(layout.staging_events_key(spec, day))
        offline = F.offline_frame(spec, F.build_features(raw, spec), interval.end)
        uris.append(F.write_offline(store, spec, day.isoformat(), offline))
        frames.append(offline)
    fs = F.get_feature_store(ctx.settings)
    F.apply_definitions(fs, spec, store)
    import pandas as pd

    materialized = F.materialize_frame(fs, spec, pd.concat(frames, ignore_index=True))
    log.info("wrote %s; materialised %d entities to the online store", uris, materialized)
    return PrepareResult(feature_uris=uris, feature_service=spec.feature_service_name, materialized=materialized)


# -- train --------------------------------------------------------------------------------------
def train(
    interval: Interval, lineage: dict[str, str], spec_name: str | None = None, window_days: int | None = None
) -> TrainResult:
    """Point-in-time training set from Feast, time split, budgeted search, logged to MLflow.

    Idempotent: a FINISHED run with the same interval and training-data hash is reused. Runs
    of the same interval and hash left RUNNING by a killed attempt are closed as FAILED first
    (`close_orphan_runs`), so an interval ends with one FINISHED run however often it is retried.
    """
    from include.mlops.data.landing import labelled_events
    from include.mlops.features import build as F
    from include.mlops.registry import ensure_experiment
    from include.mlops.training import fit as T
    from include.mlops.training import tracking

    ctx = context(spec_name)
    spec, store = ctx.spec, ctx.store
    window = int(window_days or spec.training.window_days)
    entity_df = labelled_events(store, spec, interval.days[-1], window)
    if len(entity_df) < spec.training.min_rows:
        raise NotEnoughData(f"{len(entity_df)} labelled rows in the last {window} days, need {spec.training.min_rows}")
    joined = F.historical_features(F.get_feature_store(ctx.settings), spec, entity_df)
    cols = [spec.entity_key, spec.timestamp, *F.model_features(spec), spec.label]
    joined = joined[cols].sort_values([spec.timestamp, spec.entity_key], ignore_index=True)
    digest = T.data_hash(joined)
    train_df, holdout = T.time_split(joined, spec, spec.training.holdout_days)

    exp_id = ensure_experiment(ctx.client, spec.name, ctx.settings)
    tracking.close_orphan_runs(ctx.client, exp_id, interval.key, digest)
    prior = tracking.finished_run(ctx.client, exp_id, interval.key, digest)
    rows = {"labelled": len(entity_df), "joined": len(joined), "train": len(train_df), "holdout": len(holdout)}
    out = {"data_hash": digest, "rows": rows, "experiment_id": exp_id}  # the fields both outcomes share
    train_key, holdout_key = (layout.training_split_key(spec, interval.key, s) for s in ("train", "holdout"))
    if prior is not None:
        log.info("reusing run %s: same interval %s and data hash %s", prior.info.run_id, interval.key, digest)
        model_uri = prior.data.tags["mlops.model_uri"]
        uris = {"train_uri": store.uri(train_key), "holdout_uri": store.uri(holdout_key)}
        return TrainResult(run_id=prior.info.run_id, model_uri=model_uri, **out, **uris, reused=True)

    uris = {"train_uri": store.put_parquet(train_key, train_df), "holdout_uri": store.put_parquet(holdout_key, holdout)}
    model, result = T.fit(spec, train_df)
    run_id, model_uri = tracking.log_training_run(
        spec,
        exp_id,
        interval.key,
        lineage,
        digest,
        rows,
        model=model,
        result=result,
        window=window,
        train_df=train_df,
        uris=uris,
    )
    return TrainResult(
        run_id=run_id, model_uri=model_uri, reused=False, candidates=len(result.candidates), **out, **uris
    )


# -- evaluate -----------------------------------------------------------------------------------
def evaluate(train_out: TrainResult | dict[str, Any], spec_name: str | None = None) -> EvaluateResult:
    """Challenger against the current champion and the reference on the same holdout; the gate
    decides; every decision is kept in the run (`evaluation/gate-<UTC time>.json`, the first one
    also as `evaluation/gate.json`).

    Fails closed: a registry error, or a champion or reference model that cannot be loaded or
    scored, fails the task (`gate.GateError`), except the one explicit case of a model
    trained on features the holdout lacks (`gate.feature_change` decides). A re-run for a run
    whose model is or was champion reuses the decision recorded before the promotion rather
    than comparing the model with itself."""
    from datetime import UTC

    from include.mlops.evaluation import comparison as C
    from include.mlops.evaluation import plots
    from include.mlops.ledger import read_ledger
    from include.mlops.training import tracking

    train_out = TrainResult.from_xcom(train_out)  # a malformed input fails here, before any work
    ctx = context(spec_name)
    spec, store, client = ctx.spec, ctx.store, ctx.client
    run_id = train_out.run_id
    ledger = read_ledger(store, spec.model_name)
    opp = C.opponent(client, spec, ledger, run_id)
    if opp.recorded is not None:
        return EvaluateResult.from_xcom(C.reused_result(opp.recorded))

    holdout = store.get_parquet(store.key_of(train_out.holdout_uri))
    challenger = tracking.load_sklearn(train_out.model_uri)
    ch = C.score_challenger(challenger, holdout, spec)
    versions: dict[str, C.VersionScore | str] = {}
    champ = C.score_champion(spec, opp, holdout, ch, tracking.load_sklearn, versions)
    candidates = [v for v in C.reference_versions(spec, ledger, opp.champion) if v != opp.own]
    reference = C.find_reference(spec, candidates, holdout, ch.scored, tracking.load_sklearn, versions)
    decision = C.judge(spec, ch, champ, reference)
    table = decision.table()
    log.info("gate for run %s (%s):\n%s", run_id, champ.note, table)

    tracking.log_holdout_metrics(client, run_id, ch.metrics, champ.metrics or {})
    now = datetime.now(UTC)
    record = C.gate_record(decision, now.isoformat(), ch, champ, reference, opp.own)
    tracking.log_gate_decision(client, run_id, record, table + f"\n{champ.note}\n", decision.passed, now)
    plots.log_evaluation_plots(client, run_id, spec, challenger, holdout, ch.scored)
    return EvaluateResult(
        passed=decision.passed,
        reasons=decision.reasons,
        metrics=ch.metrics,
        champion_metrics=champ.metrics,
        champion_version=champ.version,
        nan_predictions=ch.nan_predictions,
    )


# -- register -----------------------------------------------------------------------------------
def _report_uri(validate_out: ValidateResult | dict[str, Any] | None) -> str:
    """The GX report a version's lineage names: from validate's result, or from a dict that carries
    `report_uri` (validate's XCom, or the retraining plan, which names the window's last report)."""
    if validate_out is None or isinstance(validate_out, ValidateResult):
        return validate_out.report_uri if validate_out else ""
    return str(validate_out.get("report_uri") or "")


def register(
    train_out: TrainResult | dict[str, Any],
    eval_out: EvaluateResult | dict[str, Any],
    validate_out: ValidateResult | dict[str, Any] | None,
    lineage: dict[str, str],
    interval: Interval,
    spec_name: str | None = None,
) -> RegisterResult:
    """A model version tagged with its lineage, alias `challenger`; one version per run."""
    from include.mlops.registry import register as reg

    train_out, eval_out = TrainResult.from_xcom(train_out), EvaluateResult.from_xcom(eval_out)
    ctx = context(spec_name)
    spec, settings, client = ctx.spec, ctx.settings, ctx.client
    tags = {
        **lineage,
        "data_interval": interval.label,
        "data_hash": train_out.data_hash,
        "gx_result_uri": _report_uri(validate_out),
        "feast_feature_service": spec.feature_service_name,
        "git_commit": settings.git_commit,
        "rows": ",".join(f"{k}={v}" for k, v in train_out.rows.items()),
        "gate": "passed" if eval_out.passed else "failed",
    }
    tags = {k: str(v) for k, v in tags.items()}
    version, created = reg(client, spec.model_name, train_out.model_uri, train_out.run_id, tags)
    log.info(
        "%s version %s %s (alias challenger)",
        spec.model_name,
        version,
        "registered" if created else "already registered",
    )
    return RegisterResult(spec.model_name, str(version), created, train_out.run_id, train_out.experiment_id)


# -- deploy (promotion) -------------------------------------------------------------------------
def promote(
    reg_out: RegisterResult | dict[str, Any],
    eval_out: EvaluateResult | dict[str, Any],
    run_id: str,
    dag_id: str,
    strategy: str = "direct",
    spec_name: str | None = None,
    *,
    complete: bool = True,
) -> PromoteResult:
    """Move `champion` if the gate passed; otherwise keep it and say why (not a failure).
    `gate_passed` in the result says which: False is a gate rejection (what the gate alert reads).

    The move is a ledger transaction (see `moves`): this run's promotion of this version is
    begun once (`pending`), resumed by a retry, and with `complete` closed here (`done`); the
    deploy step passes `complete=False` and closes it only after its checks. A version that
    already is champion with no promotion of it pending is left alone."""
    from include.mlops import ledger as L
    from include.mlops import moves as M
    from include.mlops import registry as R
    from include.mlops.constants import CHAMPION

    reg, eval_out = RegisterResult.from_xcom(reg_out), EvaluateResult.from_xcom(eval_out)
    ctx = context(spec_name)
    store, client = ctx.store, ctx.client
    model, version = reg.model, reg.version
    which = dict(model=model, version=version, run_id=reg.run_id, experiment_id=reg.experiment_id, strategy=strategy)
    if not eval_out.passed:
        champion = R.alias_version(client, model, CHAMPION)  # raises when the registry does not answer
        msg = "not promoted: " + "; ".join(eval_out.reasons)
        log.info("%s (champion stays v%s)", msg, champion)
        return PromoteResult(promoted=False, message=msg, champion=champion, gate_passed=False, **which)
    base = M.promotion_base(dag_id, run_id, version)
    mine = L.moves_of(store, model, base)
    move = mine[-1] if mine else None
    resumed = move is not None and move.status == L.PENDING
    if move is not None and not resumed:
        return _already_ended(client, move, reg, strategy)
    if move is None:
        M.finish_open_moves(client, store, model)  # another run's interrupted promotion completes first
        if R.alias_version(client, model, CHAMPION) == version:
            msg = f"v{version} already champion"
            log.info(msg)
            return PromoteResult(promoted=False, message=msg, champion=version, gate_passed=True, **which)
        reason = "gate passed: " + ", ".join(f"{k}={v:.4f}" for k, v in eval_out.metrics.items())
        txn = {"run_id": run_id, "dag_id": dag_id, "strategy": strategy, "base": base, "awaits_check": not complete}
        move = M.begin_move(client, store, model, version, action="promote", reason=reason, **txn)
    M.apply_move(client, move)
    status = L.PENDING
    if complete and not move.awaits_check:  # a rollout's promotion completes after its checks only
        status = M.complete_move(client, store, move, outcome="promoted without a deployment check").status
    before = f"previous: v{move.from_version}" if move.from_version else "the first champion"
    msg = f"promoted v{version} to champion ({before})" + (" - resumed after an interruption" if resumed else "")
    log.info(msg)
    moved = {"previous": move.from_version, "move": move.move, "move_status": status, "resumed": resumed}
    return PromoteResult(promoted=True, message=msg, champion=version, gate_passed=True, **moved, **which)


def _already_ended(client: Any, move: Any, reg: RegisterResult, strategy: str) -> PromoteResult:
    """This run's promotion of the version was completed or undone before: say which, change nothing."""
    from include.mlops import ledger as L
    from include.mlops.constants import CHAMPION
    from include.mlops.registry import alias_version

    how = "completed" if move.status == L.DONE else f"ended ({move.status}: {move.outcome})"
    msg = f"v{reg.version}: this run's promotion of it was {how} at {move.at}; nothing more to do"
    msg = msg if move.status == L.DONE else "not promoted: " + msg
    log.info(msg)
    champion = alias_version(client, reg.model, CHAMPION)
    moved = {"previous": move.from_version, "move": move.move, "move_status": move.status}
    which = dict(model=reg.model, version=reg.version, run_id=reg.run_id, experiment_id=reg.experiment_id)
    return PromoteResult(
        promoted=False, message=msg, champion=champion, gate_passed=True, strategy=strategy, **moved, **which
    )
