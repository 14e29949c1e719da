"""Registry reads tell "no such alias" from "the registry did not answer"."""

from __future__ import annotations

import socket

import pytest

from include.mlops.registry import alias_version, mlflow_client

pytestmark = pytest.mark.usefixtures("keep_mlflow_uris")


def test_missing_model_and_missing_alias_read_as_none(tmp_path):
    client = mlflow_client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert alias_version(client, "nope_model", "champion") is None
    client.create_registered_model("m_model")
    assert alias_version(client, "m_model", "champion") is None


def test_a_registry_that_does_not_answer_is_an_error_not_no_champion(monkeypatch):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    client = mlflow_client(f"http://127.0.0.1:{port}")
    with pytest.raises(Exception) as err:
        alias_version(client, "m_model", "champion")
    assert "Connection refused" in str(err.value) or "Max retries" in str(err.value)


def _open_registry(uri: str) -> int:
    from include.mlops.registry import mlflow_client

    client = mlflow_client(uri)
    return len(client.search_experiments()) + len(client.search_registered_models())


def test_tasks_opening_a_new_sqlite_registry_at_once_all_succeed(tmp_path):
    """A fresh home: four processes create the tracking database at the same moment (as
    ml_monitoring and ml_batch_scoring did), and none fails on the schema migration."""
    import multiprocessing

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        counts = pool.map(_open_registry, [uri] * 4)
    assert counts == [1, 1, 1, 1]  # the Default experiment, no registered model
