"""Fixtures shared by the integration tests: one real Airflow for the clients (REST and browser)."""

from __future__ import annotations

import pytest

from tests.integration.airflow_stack import Stack, log, start_stack, trigger_training

_STACK: dict[str, Stack] = {}
STACK_FIXTURES = {"airflow_stack", "training_run"}


@pytest.fixture(scope="session")
def airflow_stack(tmp_path_factory) -> Stack:
    """`airflow standalone` on the project, small data up to yesterday (see airflow_stack.py)."""
    stack = start_stack(tmp_path_factory.mktemp("airflow-stack"))
    _STACK["stack"] = stack
    yield stack
    stack.stop()
    _STACK.pop("stack", None)


@pytest.fixture(scope="session")
def training_run(airflow_stack) -> dict:
    """One `ml_training` run triggered through the official client with `logical_date: None`."""
    return trigger_training(airflow_stack)


def pytest_runtest_teardown(item, nextitem):
    """Stop the shared stack once no test left in the session needs it (it would load the machine)."""
    stack = _STACK.get("stack")
    if stack is None or not stack.procs:
        return
    items = item.session.items
    try:
        rest = items[items.index(item) + 1 :]
    except ValueError:
        return
    if not any(STACK_FIXTURES & set(getattr(i, "fixturenames", ())) for i in rest):
        log("no test left needs the stack: stopping it")
        stack.stop()
