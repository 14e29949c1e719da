"""The settings models (include/mlops/config.py): every variable reaches its field, empty counts as
unset, a bad value names its variable, MLOPS_HOME moves the derived defaults, nothing is read at
import time, and no module reads the environment behind the settings' back."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from include.mlops.config import (
    PROJECT_ROOT,
    DemoOverrides,
    LocalPorts,
    Settings,
    SettingsError,
    Timeouts,
    get_demo_overrides,
    get_ports,
    get_settings,
    get_timeouts,
    variable,
)

MODELS = {Settings: get_settings, Timeouts: get_timeouts, LocalPorts: get_ports, DemoOverrides: get_demo_overrides}


def _variables(cls: type) -> list[str]:
    """Every name a field of `cls` answers to (AliasChoices: all of them)."""
    out = []
    for f in cls.model_fields.values():
        alias = f.validation_alias
        out.extend(getattr(alias, "choices", None) or [alias])
    return [str(a) for a in out]


@pytest.fixture
def clean_env(monkeypatch):
    """No variable of any settings model set (but the session's AIRFLOW_HOME: Airflow reads it once,
    on its first import, and would otherwise open ~/airflow for the rest of the session)."""
    for cls in MODELS:
        for var in _variables(cls):
            if var != "AIRFLOW_HOME":
                monkeypatch.delenv(var, raising=False)
    return monkeypatch


# (variable, value, model, field, expected value of the field)
CASES = [
    ("MLOPS_HOME", "/srv/mlops", Settings, "home", Path("/srv/mlops")),
    ("MLOPS_STORE_URI", "s3://bucket/store", Settings, "store_uri", "s3://bucket/store"),
    ("MLOPS_S3_ENDPOINT_URL", "http://minio:9000", Settings, "s3_endpoint_url", "http://minio:9000"),
    ("AWS_ENDPOINT_URL", "http://aws:9000", Settings, "s3_endpoint_url", "http://aws:9000"),
    ("MLFLOW_TRACKING_URI", "http://mlflow:5000", Settings, "tracking_uri", "http://mlflow:5000"),
    ("MLOPS_MLFLOW_ARTIFACTS", "s3://bucket/mlflow", Settings, "mlflow_artifacts", "s3://bucket/mlflow"),
    (
        "FEAST_REGISTRY_PATH",
        "postgresql+psycopg2://x/feast",
        Settings,
        "feast_registry_path",
        "postgresql+psycopg2://x/feast",
    ),
    ("FEAST_ONLINE_STORE", "redis", Settings, "feast_online_store", "redis"),
    ("FEAST_ONLINE_PATH", "redis:6379", Settings, "feast_online_path", "redis:6379"),
    ("MLOPS_FEAST_REPO", "/srv/repo", Settings, "feast_repo", Path("/srv/repo")),
    ("MLOPS_FEAST_TYPECHECKS", "1", Settings, "feast_typechecks", True),
    ("MLOPS_DATASET", "loans", Settings, "dataset", "loans"),
    ("MLOPS_GIT_COMMIT", "abc123", Settings, "git_commit", "abc123"),
    ("MLOPS_SPEC_DIRS", f"/a{os.pathsep}{os.pathsep}/b", Settings, "spec_dirs", (Path("/a"), Path("/b"))),
    ("MLOPS_SERVE_URL", "http://scoring:8000/", Settings, "serve_url", "http://scoring:8000"),
    ("MLOPS_ADMIN_TOKEN", "s3cret", Settings, "admin_token", "s3cret"),
    ("MLOPS_MLFLOW_UI_URL", "http://ui:5000/ ", Settings, "mlflow_ui_url", "http://ui:5000"),
    ("MLOPS_TRUSTED_TYPES_EXTRA", " my.Est, ,other.T", Settings, "trusted_types_extra", ("my.Est", "other.T")),
    ("MLOPS_BIND_ADDRESS", " 0.0.0.0 ", Settings, "bind_address", "0.0.0.0"),
    ("MLOPS_LOG_LEVEL", "debug", Settings, "log_level", "DEBUG"),
    ("MLOPS_START_DATE", "2018-03-04T10:00:00", Settings, "start_date", date(2018, 3, 4)),
    ("AIRFLOW_HOME", "/srv/airflow", Settings, "airflow_home", Path("/srv/airflow")),
    ("MLOPS_UP_TIMEOUT", "1200", Timeouts, "up", 1200.0),
    ("MLOPS_SERVICE_START_TIMEOUT", "30", Timeouts, "service_start", 30.0),
    ("MLOPS_DEPLOY_WAIT_TIMEOUT", "31", Timeouts, "deploy_wait", 31.0),
    ("MLOPS_DEPLOY_REQUEST_TIMEOUT", "2.5", Timeouts, "deploy_request", 2.5),
    ("MLOPS_AIRFLOW_START_TIMEOUT", "33", Timeouts, "airflow_start", 33.0),
    ("MLOPS_AIRFLOW_RUN_TIMEOUT", "34", Timeouts, "airflow_run", 34.0),
    ("MLOPS_API_CALL_TIMEOUT", "35", Timeouts, "api_call", 35.0),
    ("MLOPS_PROGRESS_SECONDS", "36", Timeouts, "progress", 36.0),
    ("MLOPS_EXECUTION_API_TIMEOUT", "90", Timeouts, "execution_api", 90.0),
    ("AIRFLOW_PORT", "18080", LocalPorts, "airflow", 18080),
    ("MLFLOW_PORT", "15000", LocalPorts, "mlflow", 15000),
    ("MLOPS_SERVE_PORT", "18000", LocalPorts, "serve", 18000),
    ("EVIDENTLY_PORT", "18001", LocalPorts, "evidently", 18001),
    ("DEMO_SCENARIO", "none", DemoOverrides, "scenario", "none"),
    ("DEMO_HISTORY_DAYS", "20", DemoOverrides, "history_days", 20),
    ("DEMO_MONITOR_DAYS", "0", DemoOverrides, "monitor_days", 0),
    ("DEMO_DRIFT_DAYS", "4", DemoOverrides, "drift_days", 4),
    ("DEMO_ROWS_PER_DAY", "200", DemoOverrides, "rows_per_day", 200),
]


@pytest.mark.parametrize(("var", "value", "cls", "field", "expected"), CASES, ids=[c[0] for c in CASES])
def test_each_variable_reaches_its_field(clean_env, var, value, cls, field, expected):
    before = getattr(MODELS[cls](), field)
    clean_env.setenv(var, value)
    assert getattr(MODELS[cls](), field) == expected != before


def test_every_field_and_every_variable_has_a_case():
    covered = {(cls, field) for _, _, cls, field, _ in CASES}
    fields = {(cls, f) for cls in MODELS for f in cls.model_fields}
    assert fields - covered == set(), "a settings field without a case in CASES"
    assert {v for cls in MODELS for v in _variables(cls)} == {c[0] for c in CASES}


def test_empty_counts_as_unset(clean_env):
    clean_env.delenv("AIRFLOW_HOME", raising=False)  # nothing here imports Airflow
    unset = {cls: read().model_dump() for cls, read in MODELS.items()}
    for var, *_ in CASES:
        clean_env.setenv(var, "")
    assert {cls: read().model_dump() for cls, read in MODELS.items()} == unset


@pytest.mark.parametrize("var", [variable(Timeouts, f) for f in Timeouts.model_fields])
@pytest.mark.parametrize("bad", ["soon", "0", "-5"])
def test_a_bad_timeout_names_the_variable_and_its_default(clean_env, var, bad):
    from include.mlops.waits import DEFAULTS, seconds

    clean_env.setenv(var, bad)
    with pytest.raises(SettingsError, match=rf"^{var}='{bad}': .*unset it for the default \({DEFAULTS[var]}\)$"):
        get_timeouts()
    with pytest.raises(ValueError, match=var):  # through the waits' public name too
        seconds(var)


@pytest.mark.parametrize(
    ("var", "bad", "why"),
    [
        ("MLOPS_START_DATE", "last tuesday", "not an ISO date"),
        ("MLOPS_LOG_LEVEL", "loud", "not a log level"),
        ("MLOPS_FEAST_TYPECHECKS", "maybe", "valid boolean"),
        ("AIRFLOW_PORT", "99999", "less than or equal to 65535"),
        ("MLOPS_SERVE_PORT", "http", "valid integer"),
        ("DEMO_ROWS_PER_DAY", "5", "greater than or equal to 10"),
    ],
)
def test_other_bad_values_name_the_variable(clean_env, var, bad, why):
    clean_env.setenv(var, bad)
    cls = next(c for c in MODELS if var in _variables(c))
    with pytest.raises(SettingsError, match=rf"{var}='{bad}': .*{why}"):
        MODELS[cls]()


def test_mlops_home_moves_the_derived_defaults(clean_env, tmp_path):
    from include.mlops.local.airflow_env import airflow_env

    clean_env.setenv("MLOPS_HOME", str(tmp_path))
    clean_env.setenv("MLOPS_GIT_COMMIT", "abc")
    clean_env.delenv("AIRFLOW_HOME", raising=False)  # nothing here imports Airflow
    s = get_settings()
    assert (s.home, s.store_uri, s.tracking_uri) == (
        tmp_path,
        f"file://{tmp_path}/store",
        f"sqlite:///{tmp_path}/mlflow.db",
    )
    assert s.mlflow_artifacts == f"file://{tmp_path}/mlartifacts"
    assert s.feast_registry_path == f"sqlite:///{tmp_path}/feast_registry.db"
    assert s.feast_online_path == str(tmp_path / "feast_online.db")
    assert airflow_env()["AIRFLOW_HOME"] == str(tmp_path / "airflow")
    clean_env.setenv("AIRFLOW_HOME", str(tmp_path / "elsewhere"))  # Airflow's own variable wins
    assert airflow_env()["AIRFLOW_HOME"] == str(tmp_path / "elsewhere")
    clean_env.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")  # a server keeps its own artifacts
    assert get_settings().mlflow_artifacts is None


def test_the_modules_that_used_to_read_the_environment_read_the_settings(clean_env, tmp_path):
    from mlops_airflow.dates import start_date
    from mlops_airflow.links import mlflow_ui_url

    from include.mlops import model_io, spec
    from include.mlops.local.airflow_env import airflow_env, bind_address

    clean_env.setenv("MLOPS_HOME", str(tmp_path))
    clean_env.setenv("MLOPS_SPEC_DIRS", "/extra/specs")
    clean_env.setenv("MLOPS_TRUSTED_TYPES_EXTRA", "my.Est")
    clean_env.setenv("MLOPS_MLFLOW_UI_URL", "http://ui:5001/")
    clean_env.setenv("MLOPS_BIND_ADDRESS", "0.0.0.0")
    clean_env.setenv("MLOPS_EXECUTION_API_TIMEOUT", "90")
    clean_env.setenv("MLOPS_START_DATE", "2019-05-06")
    assert spec.spec_dirs()[:2] == [Path("/extra/specs"), tmp_path / "specs"]
    assert "my.Est" in model_io.trusted_types() and model_io.EXTRA_TYPES_ENV == "MLOPS_TRUSTED_TYPES_EXTRA"
    assert mlflow_ui_url() == "http://ui:5001"
    env = airflow_env()
    assert bind_address() == env["AIRFLOW__API__HOST"] == "0.0.0.0"
    assert env["AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT"] == "90"
    assert start_date().isoformat() == "2019-05-06T00:00:00+00:00"


MODULES = [
    "include.mlops.config",
    "include.mlops.waits",
    "include.mlops.local.airflow_env",
    "include.mlops.local.stack",
    "include.mlops.local.airflow_standalone",
    "include.mlops.model_io",
    "include.mlops.spec",
    "include.mlops.features.feast_import",
    "include.mlops.serving.__main__",
    "mlops_airflow.dates",
    "mlops_airflow.links",
]


def test_nothing_is_read_at_import_time():
    """Every module imports with every variable unparseable; the settings then say what is wrong."""
    bad = {var: "not-a-value" for var, *_ in CASES if var not in ("MLOPS_HOME", "AIRFLOW_HOME")}
    code = (
        f"import importlib\nfor m in {MODULES!r}:\n    importlib.import_module(m)\n"
        "from include.mlops.config import SettingsError, get_settings, get_timeouts\n"
        "for read in (get_settings, get_timeouts):\n"
        "    try:\n        read()\n    except SettingsError as exc:\n        print(exc)\n"
    )
    env = {**os.environ, **bad, "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), str(PROJECT_ROOT / "plugins")])}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "MLOPS_START_DATE='not-a-value'" in out.stdout and "MLOPS_UP_TIMEOUT='not-a-value'" in out.stdout


# Reading an inherited PATH or PYTHONPATH to extend it for a subprocess is composing that
# subprocess's environment, not configuration.
COMPOSED = {"PATH", "PYTHONPATH"}
# Reads that are not the platform's configuration: boto3 and s3fs read the AWS_* credentials
# themselves; the store only keys its cached filesystem on them, so new credentials get a new client.
NOT_CONFIGURATION = {"include/mlops/storage.py": "keys the S3 filesystem cache on the AWS_* variables"}


def _reads(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, what) of each read of the process environment: os.getenv, os.environ.get/[...]/in,
    or os.environ handed to something other than a setter or a `{**os.environ, ...}` spread."""
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}

    def is_environ(n: ast.AST) -> bool:
        return isinstance(n, ast.Attribute) and n.attr == "environ" and getattr(n.value, "id", "") == "os"

    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "getenv" and getattr(node.value, "id", "") == "os":
            out.append((node.lineno, "os.getenv"))
        if not is_environ(node):
            continue
        up = parents.get(node)
        if isinstance(up, ast.Dict) and any(k is None and v is node for k, v in zip(up.keys, up.values, strict=True)):
            continue  # {**os.environ, ...}: the environment handed on to a subprocess
        if isinstance(up, ast.Subscript) and isinstance(up.ctx, ast.Store):
            continue  # os.environ[...] = ...: setting
        if isinstance(up, ast.Attribute) and up.attr in ("setdefault", "__setitem__", "update", "pop"):
            continue
        if isinstance(up, ast.Attribute) and up.attr == "get":
            call = parents.get(up)
            arg = call.args[0] if isinstance(call, ast.Call) and call.args else None
            if isinstance(arg, ast.Constant) and arg.value in COMPOSED:
                continue
        out.append((node.lineno, ast.unparse(up) if up is not None else "os.environ"))
    return out


def test_no_module_reads_the_environment_behind_the_settings():
    found = {}
    for top in ("include", "plugins", "dags"):
        for path in sorted((PROJECT_ROOT / top).rglob("*.py")):
            rel = path.relative_to(PROJECT_ROOT).as_posix()
            if rel == "include/mlops/config.py" or rel in NOT_CONFIGURATION:
                continue
            reads = _reads(ast.parse(path.read_text(), rel))
            if reads:
                found[rel] = reads
    assert found == {}, f"read these through include/mlops/config.py instead: {found}"
