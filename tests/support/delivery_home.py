"""A private home and a live scoring service for the progressive-delivery tests.

`copy_home` copies the session's lifecycle home (one champion, ten staged days) so a module's
rollouts never touch another module's registry; `set_delivery` rewrites the home's spec
`deployment` section (short soaks, small minimums: the tests decide in seconds); `start_live`
starts the service on a free loopback port with a 1 s registry poll and the test model wrappers
allowed (`canary_models.TRUSTED_EXTRA`); `use_live` points the process environment at both, as
the deploy task sees them (MLOPS_SERVE_URL, MLOPS_ADMIN_TOKEN); `restore` leaves the champion
it found and no rollout under way.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

SERVICE_POLL_SECONDS = 1


def copy_home(lifecycle: dict[str, Any], where: Path) -> dict[str, Any]:
    """A copy of the lifecycle home at `where`, with its environment and names."""
    src = Path(lifecycle["home"])
    dst = where / "home"
    shutil.copytree(src, dst)
    env = {k: v.replace(str(src), str(dst)) for k, v in lifecycle["env"].items()}
    env["MLOPS_DATASET"] = lifecycle["spec_name"]
    return {
        "path": dst,
        "env": env,
        "spec_name": lifecycle["spec_name"],
        "spec_path": dst / Path(lifecycle["spec_path"]).relative_to(src),
        "v1": str(lifecycle["register"]["version"]),
    }


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


def start_live(home: dict[str, Any]) -> Any:
    """The live scoring service of the home (a ServiceHandle; close it when done)."""
    from include.mlops.delivery.service import start_service
    from tests.support.canary_models import TRUSTED_EXTRA

    env = {
        **home["env"],
        "MLOPS_SERVE_POLL_SECONDS": str(SERVICE_POLL_SECONDS),
        "MLOPS_TRUSTED_TYPES_EXTRA": TRUSTED_EXTRA,
        "MLOPS_SERVE_PREDICTION_LOG": "true",
    }
    return start_service(env, timeout=240)


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
    from include.mlops import registry as R
    from include.mlops.delivery.rollback import rollback

    name = spec_of(home).model_name
    for m in R.open_moves(store, name):
        R.undo_move(client, store, m, action="rollback", reason="test cleanup", run_id="cleanup", dag_id="test")
    if R.alias_version(client, name, R.CHAMPION) != home["v1"]:
        rollback(home["v1"], "cleanup", "test", spec_name=home["spec_name"])
    R.end_routing(client, name)


def reg_out(client: Any, name: str, version: str) -> dict[str, Any]:
    """What the register task hands the deploy task, for `version`; `challenger` points at it
    as `register` leaves it."""
    from include.mlops.registry import CHALLENGER

    client.set_registered_model_alias(name, CHALLENGER, version)
    return {"model": name, "version": version, "run_id": client.get_model_version(name, version).run_id}


PASSED = {"passed": True, "reasons": [], "metrics": {"roc_auc": 0.9}}
