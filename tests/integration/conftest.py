"""Fixtures shared by the integration tests: one real Airflow for the clients (REST and browser),
and one trained home copy with a live scoring service for the delivery tests.

The delivery set (`delivery_*`): a copy of the session's lifecycle home (`delivery_home`: v1
champion, ten staged days), its MLflow client and object store, a second version of the
champion's model (`delivery_v2`), sample feature rows, and one scoring service on loopback over
the copy (`delivery_service`, registry poll 1 s, the test model wrappers allowed). They are made
once per session (a home copy and a service start cost 10-20 s each on a loaded machine, paid
once instead of once per module). Sharing is safe because every test that uses them takes
`delivery` (function scope), which puts the copy back before and after the test
(`delivery_home.fresh`: the spec as copied, v1 champion, no open move, no routing, the service
serving v1 alone): a test registers the versions it needs, or uses `delivery_v2`, which `fresh`
leaves neither champion nor routed. A test that needs a differently configured service
(test_serving: body and record limits) starts its own with the same helpers.
"""

from __future__ import annotations

import pytest

from tests.integration.airflow_stack import Stack, log, start_stack, trigger_training
from tests.support import delivery_home as H

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


# -- the delivery tests' home copy and live service --------------------------------------------------
@pytest.fixture(scope="session")
def delivery_home(lifecycle, tmp_path_factory) -> dict:
    """A copy of the lifecycle home (see `delivery_home.copy_home`); take `delivery` to use it."""
    return H.copy_home(lifecycle, tmp_path_factory.mktemp("delivery"))


@pytest.fixture(scope="session")
def delivery_client(delivery_home):
    return H.open_client(delivery_home)


@pytest.fixture(scope="session")
def delivery_store(delivery_home):
    return H.open_store(delivery_home)


@pytest.fixture(scope="session")
def delivery_v2(delivery_home, delivery_client) -> str:
    """v1's model registered again: a second version to promote, route and roll back."""
    return H.second_version(delivery_client, delivery_home)


@pytest.fixture(scope="session")
def delivery_rows(delivery_home, delivery_store) -> list[dict]:
    """200 feature records of the newest staged day, for live traffic (`live_traffic.sample_rows`)."""
    from tests.support.live_traffic import sample_rows

    return sample_rows(delivery_home["spec"], delivery_store, n=200)


@pytest.fixture(scope="session")
def delivery_service(delivery_home):
    """The scoring service over the copy (`delivery_home.start_live`), for the whole session."""
    h = H.start_live(delivery_home)
    yield h
    h.close()
    h.cleanup()


@pytest.fixture
def delivery(delivery_home, delivery_client, delivery_store, delivery_service) -> dict:
    """The copy, fresh before this test and again after it (`delivery_home.fresh`): no test sees
    what another left. Returns the copy's description (env, spec_path, spec_name, spec, v1)."""
    H.fresh(delivery_home, delivery_client, delivery_store, delivery_service)
    yield delivery_home
    H.fresh(delivery_home, delivery_client, delivery_store, delivery_service)
