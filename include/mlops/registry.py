"""MLflow: tracking setup, the model registry's aliases, and the deployment ledger.

The champion changes only here, by moving the `champion` alias (atomic in the registry), and
every move is written to the ledger: when, from which version to which, why, by which run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from include.mlops.config import Settings
    from include.mlops.storage import ObjectStore

from include.mlops.constants import CHALLENGER, CHAMPION, PREVIOUS


def mlflow_client(tracking_uri: str) -> Any:
    """MLflow's process-wide tracking and registry URIs set to `tracking_uri`, and a client on it.
    The globals matter: `models:/` downloads resolve through them whatever URI they are given."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    return MlflowClient(tracking_uri, tracking_uri)


def setup_mlflow(settings: Settings) -> Any:
    """Point MLflow at the configured tracking server; returns a client."""
    from include.mlops.config import quiet_telemetry

    quiet_telemetry()
    settings.home.mkdir(parents=True, exist_ok=True)
    return mlflow_client(settings.tracking_uri)


def ensure_experiment(client: Any, name: str, settings: Settings) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = f"{settings.mlflow_artifacts.rstrip('/')}/{name}" if settings.mlflow_artifacts else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # created concurrently by another task
        return client.get_experiment_by_name(name).experiment_id


def is_not_found(exc: BaseException) -> bool:
    """Whether an MLflow error says "no such model or alias" (and nothing else: a server error,
    a timeout or a refused connection is not an answer, and must never read as one)."""
    from mlflow.exceptions import MlflowException

    if not isinstance(exc, MlflowException):
        return False
    if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
        return True
    return exc.error_code == "INVALID_PARAMETER_VALUE" and "alias" in str(exc) and "not found" in str(exc)


def alias_version(client: Any, model: str, alias: str) -> str | None:
    """The version an alias points to; None only when the registry says the model or the alias
    does not exist. Any other error propagates: a task that cannot read the registry fails (and
    retries) rather than deciding as if there were no champion."""
    try:
        return str(client.get_model_version_by_alias(model, alias).version)
    except Exception as exc:
        if is_not_found(exc):
            return None
        raise


def find_version(client: Any, model: str, run_id: str) -> str | None:
    """The version registered from a run, if any (re-runs must not register a second one)."""
    versions = client.search_model_versions(f"name='{model}' and run_id='{run_id}'")
    return str(min(int(v.version) for v in versions)) if versions else None


def register(client: Any, model: str, model_uri: str, run_id: str, tags: dict[str, str]) -> tuple[str, bool]:
    """Register once per run; returns (version, created). Sets the `challenger` alias."""
    from mlflow.exceptions import MlflowException

    existing = find_version(client, model, run_id)
    created = existing is None
    if created:
        try:
            client.create_registered_model(model, description="Managed by the MLOps platform; see the ledger.")
        except MlflowException:
            pass  # already there
        # A logged model's URI (models:/m-<id>) must name its model id, or a tracking server
        # refuses it ("The model_id request parameter must identify the resource ...").
        model_id = model_uri.split("models:/", 1)[1].split("/")[0] if model_uri.startswith("models:/m-") else None
        source = model_uri
        if model_id is not None:
            source = client.get_logged_model(model_id).artifact_location
        # create_model_version waits until the version is READY (await_creation_for, 300 s)
        mv = client.create_model_version(model, source, run_id=run_id, tags=tags, model_id=model_id)
        existing = str(mv.version)
    else:
        for k, v in tags.items():
            client.set_model_version_tag(model, existing, k, v)
    client.set_registered_model_alias(model, CHALLENGER, existing)
    return existing, created


@dataclass
class LedgerEntry:
    at: str
    model: str
    action: str  # promote | rollback | rollback_after_failed_check | hold
    from_version: str | None
    to_version: str | None
    reason: str
    run_id: str
    dag_id: str = ""
    strategy: str = "direct"


def ledger_prefix(model: str) -> str:
    return f"ledger/{model}"


def write_ledger(store: ObjectStore, entry: LedgerEntry) -> str:
    """One object per event, keyed by time and run: an audit log that a re-run cannot duplicate."""
    safe_run = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in entry.run_id)
    key = f"{ledger_prefix(entry.model)}/{entry.at.replace(':', '')}_{entry.action}_{safe_run}.json"
    return store.put_json(key, asdict(entry))


def read_ledger(store: ObjectStore, model: str) -> list[dict[str, Any]]:
    return [store.get_json(k) for k in store.list(ledger_prefix(model)) if k.endswith(".json")]


def move_champion(
    client: Any,
    store: ObjectStore,
    model: str,
    to_version: str,
    *,
    action: str,
    reason: str,
    run_id: str,
    dag_id: str = "",
    strategy: str = "direct",
) -> LedgerEntry | None:
    """Point `champion` at a version, keep the old one as `previous`, and record the move.

    Returns None (and records nothing) when `to_version` already is the champion, so re-runs
    and double clicks are harmless.
    """
    current = alias_version(client, model, CHAMPION)
    if current == str(to_version):
        return None
    client.set_registered_model_alias(model, CHAMPION, str(to_version))
    if current is not None:
        client.set_registered_model_alias(model, PREVIOUS, current)
    entry = LedgerEntry(
        at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        model=model,
        action=action,
        from_version=current,
        to_version=str(to_version),
        reason=reason,
        run_id=run_id,
        dag_id=dag_id,
        strategy=strategy,
    )
    write_ledger(store, entry)
    client.set_model_version_tag(model, str(to_version), "mlops.last_promoted_at", entry.at)
    return entry
