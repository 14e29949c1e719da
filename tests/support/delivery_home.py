"""A trained home copy and a live scoring service for the delivery tests (rollouts, rollbacks,
live measures, A/B tests), and what puts them back between tests.

`copy_home` copies the session's lifecycle home (one champion, ten staged days) so the delivery
tests never touch the lifecycle's own registry; `open_client`/`open_store` open its MLflow
registry and object store; `second_version` registers the champion's model again (a v2 to move
aliases to); `set_delivery` rewrites the copy's spec `deployment` section (short soaks, small
minimums: the tests decide in seconds); `start_live` starts the service on a free loopback port
with a 1 s registry poll and the test model wrappers allowed (`canary_models.TRUSTED_EXTRA`);
`serving` waits until the service, by its own poll, serves what the registry says (`strategy_tag`:
the strategy the registry publishes); `run_trigger` runs a deferred phase's trigger as the
triggerer would; `use_live`
points the process environment at both, as the deploy task sees them (MLOPS_SERVE_URL,
MLOPS_ADMIN_TOKEN); `restore` leaves the champion it found and no rollout under way; `fresh`
does that and more: the spec as copied, the service serving v1 alone, its queues flushed. The
fixtures over these live in `tests/integration/conftest.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

SERVICE_POLL_SECONDS = 1


def copy_home(lifecycle: dict[str, Any], where: Path) -> dict[str, Any]:
    """A copy of the lifecycle home at `where`, with its environment and names."""
    src = Path(lifecycle["home"])
    dst = where / "home"
    shutil.copytree(src, dst)
    env = {k: v.replace(str(src), str(dst)) for k, v in lifecycle["env"].items()}
    env["MLOPS_DATASET"] = lifecycle["spec_name"]
    spec_path = dst / Path(lifecycle["spec_path"]).relative_to(src)
    return {
        "path": dst,
        "env": env,
        "spec_name": lifecycle["spec_name"],
        "spec": lifecycle["spec"],  # as copied: `spec_of` reads the copy's spec as it is now
        "spec_path": spec_path,
        "spec_text": spec_path.read_text(),  # what `fresh` puts back
        "v1": str(lifecycle["register"].version),
        "run_id": lifecycle["register"].run_id,
        "interval": lifecycle["interval"],
    }


def open_client(home: dict[str, Any]) -> Any:
    """An MLflow client on the copy's tracking and registry store (process-wide URIs untouched)."""
    from mlflow import MlflowClient

    uri = home["env"]["MLFLOW_TRACKING_URI"]
    return MlflowClient(uri, uri)


def open_store(home: dict[str, Any]) -> Any:
    """The copy's object store, as the steps open it from the copy's settings."""
    from include.mlops.config import get_settings
    from include.mlops.context import open_store as store_of_settings

    with _home_env(home):
        return store_of_settings(get_settings())


def second_version(client: Any, home: dict[str, Any], timeout: float = 60) -> str:
    """v1's model registered again (same run, tagged as passed by the gate), once READY: a second
    version that the checks compare like with like."""
    name = home["spec"].model_name
    src = client.get_model_version(name, home["v1"])
    mv = client.create_model_version(name, src.source, run_id=src.run_id, tags={"gate": "passed"})
    deadline = time.monotonic() + timeout
    while client.get_model_version(name, mv.version).status != "READY":
        assert time.monotonic() < deadline, f"v{mv.version} never became READY in {timeout:g}s"
        time.sleep(0.2)
    return str(mv.version)


def set_delivery(home: dict[str, Any], **deployment: Any) -> None:
    """Replace parts of the home spec's `deployment` section (e.g. canary={...}); the steps
    read the spec by name on every call, so the next rollout follows it."""
    import yaml

    path = Path(home["spec_path"])
    raw = yaml.safe_load(path.read_text())
    raw["deployment"].update(deployment)
    path.write_text(yaml.safe_dump(raw))


def spec_of(home: dict[str, Any]) -> Any:
    from include.mlops.spec import load_spec_file

    return load_spec_file(home["spec_path"])


def start_live(home: dict[str, Any], **extra_env: str) -> Any:
    """The live scoring service of the home (a ServiceHandle; close it when done); `extra_env`
    adds or overrides service settings (e.g. MLOPS_SERVE_MAX_RECORDS)."""
    from include.mlops.delivery.service import start_service
    from tests.support.canary_models import TRUSTED_EXTRA

    env = {
        **home["env"],
        "MLOPS_SERVE_POLL_SECONDS": str(SERVICE_POLL_SECONDS),
        "MLOPS_TRUSTED_TYPES_EXTRA": TRUSTED_EXTRA,
        "MLOPS_SERVE_PREDICTION_LOG": "true",
        **extra_env,
    }
    return start_service(env, timeout=240)


def serving(server: Any, *, champion: str, challenger: str | None, timeout: float = 120) -> dict[str, Any]:
    """/ready once the service serves `champion` and `challenger` (None: no variant), by its own poll."""
    import httpx

    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = httpx.get(f"{server.url}/ready", timeout=30).json()
        seen = ((body.get("champion") or {}).get("version"), (body.get("challenger") or {}).get("version"))
        if seen == (champion, challenger):
            return body
        time.sleep(0.2)
    raise AssertionError(f"the service did not come to champion={champion} challenger={challenger}: {body}")


def strategy_tag(client: Any, name: str) -> tuple[str | None, str | None]:
    """The registered model's deployment strategy and canary share tags, as the service reads them."""
    tags = client.get_registered_model(name).tags
    return tags.get("mlops.deployment.strategy"), tags.get("mlops.deployment.canary_share")


def run_trigger(trigger: Any) -> dict[str, Any]:
    """Serialised and rebuilt from its classpath (as the triggerer does), run to its one event."""
    classpath, kwargs = trigger.serialize()
    module, name = classpath.rsplit(".", 1)
    rebuilt = getattr(importlib.import_module(module), name)(**kwargs)

    async def first_event() -> Any:
        return await anext(rebuilt.run())

    return asyncio.run(first_event()).payload


def use_live(monkeypatch: Any, home: dict[str, Any], server: Any) -> None:
    """The process environment of a deploy task of this home with `server` live, and MLflow's
    process-wide URIs on its tracking store (models are logged there; use with the
    `keep_mlflow_uris` fixture, which puts them back)."""
    from include.mlops.registry import mlflow_client
    from tests.support.canary_models import TRUSTED_EXTRA

    for k, v in home["env"].items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("MLOPS_SERVE_URL", server.url)
    monkeypatch.setenv("MLOPS_ADMIN_TOKEN", server.token)
    monkeypatch.setenv("MLOPS_TRUSTED_TYPES_EXTRA", TRUSTED_EXTRA)
    mlflow_client(home["env"]["MLFLOW_TRACKING_URI"])


def restore(home: dict[str, Any], client: Any, store: Any) -> None:
    """v1 champion again, no open move, no routing: what the next test starts from."""
    from include.mlops import ledger as L
    from include.mlops import moves as M
    from include.mlops import registry as R
    from include.mlops.constants import CHAMPION
    from include.mlops.delivery.rollback import rollback

    name = spec_of(home).model_name
    for m in L.open_moves(store, name):
        M.undo_move(client, store, m, action="rollback", reason="test cleanup", run_id="cleanup", dag_id="test")
    if R.alias_version(client, name, CHAMPION) != home["v1"]:
        rollback(home["v1"], "cleanup", "test", spec_name=home["spec_name"])
    R.end_routing(client, name)


def fresh(home: dict[str, Any], client: Any, store: Any, server: Any) -> None:
    """The state every delivery test starts from and leaves, whatever ran before: the copy's spec
    as copied, v1 champion, no open move, no routing, the service serving v1 alone (by its own
    poll) with its prediction log and shadow queue flushed. MLflow's process-wide URIs and the
    environment are as they were."""
    import httpx
    import mlflow

    Path(home["spec_path"]).write_text(home["spec_text"])
    saved = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    try:
        with _home_env(home):
            restore(home, client, store)
    finally:
        mlflow.set_tracking_uri(saved[0])
        mlflow.set_registry_uri(saved[1])
    serving(server, champion=home["v1"], challenger=None)
    r = httpx.post(f"{server.url}/admin/flush", headers=server.headers(), timeout=60)
    assert r.status_code == 200, f"POST /admin/flush answered {r.status_code}: {r.text}"


@contextlib.contextmanager
def _home_env(home: dict[str, Any]) -> Iterator[None]:
    """The process environment on the copy (no service URL: nothing asks a service to reload)
    inside the `with` block, as it was after it."""
    with pytest.MonkeyPatch.context() as mp:
        for k, v in home["env"].items():
            mp.setenv(k, v)
        mp.delenv("MLOPS_SERVE_URL", raising=False)
        yield


def reg_out(client: Any, name: str, version: str) -> dict[str, Any]:
    """What the register task hands the deploy task, for `version`; `challenger` points at it
    as `register` leaves it."""
    from include.mlops.constants import CHALLENGER

    client.set_registered_model_alias(name, CHALLENGER, version)
    run_id = client.get_model_version(name, version).run_id
    return {"model": name, "version": version, "created": False, "run_id": run_id}


PASSED = {"passed": True, "reasons": [], "metrics": {"roc_auc": 0.9}}
