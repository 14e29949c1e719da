"""The compose stack's MLflow is behind MLflow's basic-auth app: nobody without the configured
user can register a model version or move the champion alias.

The server is started as the compose service `mlflow` starts it: docker/mlflow-server.sh with the
flags of the service's command, only the address, the port, the worker count and the artifact
store swapped for loopback ones, and SQLite in place of PostgreSQL for both databases."""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from include.mlops.delivery.service import free_port

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "docker" / "mlflow-server.sh"
IMAGE_PATH = "/usr/local/bin/mlops-mlflow-server"
ADMIN = "admin"
ADMIN_PASSWORD = secrets.token_hex(16)


def compose_mlflow() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yaml").read_text())["services"]["mlflow"]


def with_options(args: list[str], **values: str) -> list[str]:
    """`args` with the value after each `--option` replaced (option_name -> --option-name); every
    option replaced must be in the compose command already, so the flags stay the compose ones."""
    out = list(args)
    for key, value in values.items():
        flag = "--" + key.replace("_", "-")
        assert flag in out, f"the compose command has no {flag}: {args}"
        out[out.index(flag) + 1] = value
    return out


def call(url: str, method: str, path: str, body: dict | None = None, user: tuple[str, str] | None = None):
    """(HTTP status, parsed body) of one REST call, with basic auth when `user` is given."""
    headers = {"Content-Type": "application/json"}
    if user:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{url}{path}", data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw or b"{}")
    except ValueError:  # /health answers "OK"; refusals are text
        return status, raw.decode(errors="replace")


@pytest.fixture(scope="module")
def mlflow_auth(tmp_path_factory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("mlflow-auth")
    svc = compose_mlflow()
    command = svc["command"]
    assert command[:2] == ["bash", IMAGE_PATH], command
    port = free_port()
    args = with_options(
        command[2:],
        host="127.0.0.1",
        port=str(port),
        workers="1",
        artifacts_destination=f"file://{home / 'artifacts'}",
    )
    assert "--serve-artifacts" in args
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_", "MLOPS_"))}
    env = {
        **inherited,
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "TMPDIR": str(home),  # the script's auth config file lands here
        "MLFLOW_BACKEND_STORE_URI": f"sqlite:///{home / 'mlflow.db'}",
        "MLFLOW_AUTH_DATABASE_URI": f"sqlite:///{home / 'auth.db'}",
        "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN,
        "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "MLFLOW_AUTH_DEFAULT_PERMISSION": str(svc["environment"]["MLFLOW_AUTH_DEFAULT_PERMISSION"]),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(32),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
    }
    log = home / "mlflow.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            ["bash", str(SCRIPT), *args], env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600  # a busy 2-core machine: the schema and the auth app
        while True:
            assert proc.poll() is None, f"mlflow exited ({proc.returncode}): {log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"mlflow not ready: {log.read_text()[-3000:]}"
            try:
                if call(url, "GET", "/health")[0] == 200:  # unauthenticated, as the compose healthcheck
                    break
            except OSError:
                pass
            time.sleep(1)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def register(url: str, name: str) -> None:
    """A model with version 1 and champion -> 1, done with the platform's credentials."""
    admin = (ADMIN, ADMIN_PASSWORD)
    assert call(url, "POST", "/api/2.0/mlflow/registered-models/create", {"name": name}, admin)[0] == 200
    status, body = call(url, "POST", "/api/2.0/mlflow/runs/create", {"experiment_id": "0"}, admin)
    assert status == 200, body
    run = body["run"]["info"]
    source = {"name": name, "source": f"{run['artifact_uri']}/model", "run_id": run["run_id"]}
    status, body = call(url, "POST", "/api/2.0/mlflow/model-versions/create", source, admin)
    assert status == 200 and body["model_version"]["version"] == "1", body
    alias = {"name": name, "alias": "champion", "version": "1"}
    assert call(url, "POST", "/api/2.0/mlflow/registered-models/alias", alias, admin)[0] == 200


def champion(url: str, name: str) -> str:
    status, body = call(
        url, "GET", f"/api/2.0/mlflow/registered-models/alias?name={name}&alias=champion", user=(ADMIN, ADMIN_PASSWORD)
    )
    assert status == 200, body
    return body["model_version"]["version"]


def test_without_the_configured_user_nothing_is_registered_or_promoted(mlflow_auth: str) -> None:
    url, name = mlflow_auth, "churn-anonymous"
    register(url, name)
    version = {"name": name, "source": "mlflow-artifacts:/evil"}
    move = {"name": name, "alias": "champion", "version": "2"}
    for user in (None, (ADMIN, "wrong-password-1234"), ("nobody", ADMIN_PASSWORD)):
        assert call(url, "POST", "/api/2.0/mlflow/model-versions/create", version, user)[0] == 401, user
        assert call(url, "POST", "/api/2.0/mlflow/registered-models/alias", move, user)[0] == 401, user
        assert call(url, "POST", "/api/2.0/mlflow/registered-models/create", {"name": "x"}, user)[0] == 401, user
    assert call(url, "GET", f"/api/2.0/mlflow/registered-models/get?name={name}")[0] == 401
    # nothing changed: one version, champion still on it
    status, body = call(url, "GET", f"/api/2.0/mlflow/registered-models/get?name={name}", user=(ADMIN, ADMIN_PASSWORD))
    assert status == 200 and [v["version"] for v in body["registered_model"]["latest_versions"]] == ["1"]
    assert champion(url, name) == "1"


def test_a_signed_in_reader_cannot_move_the_champion(mlflow_auth: str) -> None:
    url, name = mlflow_auth, "churn-reader"
    register(url, name)
    reader = ("reader", secrets.token_hex(8))
    status, body = call(
        url,
        "POST",
        "/api/2.0/mlflow/users/create",
        {"username": reader[0], "password": reader[1]},
        (ADMIN, ADMIN_PASSWORD),
    )
    assert status == 200, body
    assert call(url, "GET", f"/api/2.0/mlflow/registered-models/get?name={name}", user=reader)[0] == 200  # READ
    move = {"name": name, "alias": "champion", "version": "1"}
    version = {"name": name, "source": "mlflow-artifacts:/evil"}
    assert call(url, "POST", "/api/2.0/mlflow/registered-models/alias", move, reader)[0] == 403
    assert call(url, "POST", "/api/2.0/mlflow/model-versions/create", version, reader)[0] == 403
    assert (
        call(url, "DELETE", "/api/2.0/mlflow/registered-models/alias", {"name": name, "alias": "champion"}, reader)[0]
        == 403
    )
    assert champion(url, name) == "1"


def test_mlflow_clients_sign_in_with_the_tracking_credentials(mlflow_auth: str, monkeypatch) -> None:
    """What the Airflow tasks and the scoring service do in compose: MlflowClient with
    MLFLOW_TRACKING_USERNAME/PASSWORD (x-mlops-env); without them the same calls are refused."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    url, name = mlflow_auth, "churn-client"
    client = MlflowClient(url, url)
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    with pytest.raises(MlflowException, match="401|not authenticated"):
        client.create_registered_model(name)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD)
    client.create_registered_model(name)
    run = client.create_run("0")
    mv = client.create_model_version(name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    client.set_registered_model_alias(name, "champion", mv.version)
    assert client.get_model_version_by_alias(name, "champion").version == mv.version == "1"
