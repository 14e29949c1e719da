"""MLflow: tracking setup, the model registry's aliases and versions, and what a failed read means.

A read that the registry answers with "no such model or alias" is an answer (`alias_version`
returns None; a step with no champion raises `NoChampion`); any other failed read is a fault
(`RegistryUnavailable`: the task fails and retries), never "no champion". Moves of `champion`
are in `include.mlops.moves`, their record in `include.mlops.ledger`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from include.mlops.config import Settings

from include.mlops.constants import CHALLENGER

# Variant routing when no rollout runs: the service answers with the champion only.
IDLE_STRATEGY, IDLE_SHARE = "direct", 0.0


class NoChampion(Exception):
    """Nothing is deployed yet, so there is nothing to monitor or score with."""


class RegistryUnavailable(RuntimeError):
    """The registry did not answer a read (a server error, a timeout, a refused connection).

    Never read as "no champion": the task fails (and Airflow retries it) rather than skipping a
    window or deciding on a guess."""


def registry_error(what: str, exc: BaseException) -> RegistryUnavailable:
    """A RegistryUnavailable naming what could not be read, where, and what happens next."""
    import mlflow

    uri = _without_credentials(mlflow.get_registry_uri())
    return RegistryUnavailable(
        f"could not read {what} from the MLflow registry at {uri}: {type(exc).__name__}: {exc}. "
        "This is a registry fault, not a missing champion: nothing was decided; the task fails "
        "and is retried (check that the tracking server answers, e.g. `curl <uri>/health`)."
    )


def _without_credentials(uri: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.username or parts.password:
        host = parts.hostname or ""
        return urlunsplit(parts._replace(netloc=f"{host}:{parts.port}" if parts.port else host))
    return uri


def mlflow_client(tracking_uri: str) -> Any:
    """MLflow's process-wide tracking and registry URIs set to `tracking_uri`, and a client on it.
    The globals matter: `models:/` downloads resolve through them whatever URI they are given."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    with _sqlite_schema_lock(tracking_uri):
        client = MlflowClient(tracking_uri, tracking_uri)  # opens (creates, migrates) the stores
        if tracking_uri.startswith("sqlite:"):
            client.search_registered_models(max_results=1)  # the registry's store opens lazily
    return client


def setup_mlflow(settings: Settings) -> Any:
    """Point MLflow at the configured tracking server; returns a client."""
    from include.mlops.config import quiet_telemetry

    quiet_telemetry()
    settings.home.mkdir(parents=True, exist_ok=True)
    return mlflow_client(settings.tracking_uri)


@contextlib.contextmanager
def _sqlite_schema_lock(uri: str) -> Iterator[None]:
    """Held while a process opens a SQLite tracking database. MLflow creates and migrates a new
    database in the first process that opens it; two tasks doing that at once (ml_monitoring and
    ml_batch_scoring on a fresh home) collide ("duplicate column name") and one fails."""
    import fcntl
    from pathlib import Path

    path = uri.split(":///", 1)[1] if uri.startswith("sqlite:///") else ""
    if not path or path == ":memory:":
        yield
        return
    db = Path(path)
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".init.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


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
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":  # any other error is not "already there"
                raise
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


# -- variant routing ----------------------------------------------------------------------------------
def strategy_in_force(client: Any, model: str, default: str) -> str:
    """The deployment strategy the service follows now: the registered model's tag (the spec's
    default when the tag was never set, as the service reads it)."""
    from include.mlops.serving.config import STRATEGY_TAG

    try:
        tags = dict(client.get_registered_model(model).tags or {})
    except Exception as exc:
        if is_not_found(exc):
            return default
        raise
    return tags.get(STRATEGY_TAG) or default


def end_routing(client: Any, model: str) -> None:
    """No variant routing: `challenger` removed, strategy tags back to idle. The service stops
    routing to (canary) and scoring with (shadow) any challenger at its next registry read."""
    from include.mlops.serving.config import CANARY_SHARE_TAG, STRATEGY_TAG

    client.set_registered_model_tag(model, STRATEGY_TAG, IDLE_STRATEGY)
    client.set_registered_model_tag(model, CANARY_SHARE_TAG, str(IDLE_SHARE))
    point_alias(client, model, CHALLENGER, None)


def point_alias(client: Any, model: str, alias: str, version: str | None) -> None:
    """Set an alias, or remove it (None; an alias already gone is fine)."""
    if version is not None:
        client.set_registered_model_alias(model, alias, str(version))
        return
    try:
        client.delete_registered_model_alias(model, alias)
    except Exception as exc:
        if not is_not_found(exc):
            raise
