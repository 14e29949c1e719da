"""/ready's registry block: a registry read that errors or hangs marks the registry degraded
(bounded by the read deadline), keeps what serves, and clears once the registry answers."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from include.mlops.config import ServeConfig
from include.mlops.serving.frames import FrameBuilder
from include.mlops.serving.loading import LoadedModel
from include.mlops.serving.metrics import Metrics
from include.mlops.serving.models import ModelManager
from include.mlops.serving.registry_health import RegistryTimeout
from include.mlops.spec import load_spec


class Registry:
    """Answers, fails or hangs (until released), as the test says."""

    def __init__(self) -> None:
        self.mode = "answer"
        self.release = threading.Event()
        self.calls = 0

    def get_registered_model(self, name):
        self.calls += 1
        if self.mode == "fail":
            raise ConnectionError("connection refused")
        if self.mode == "hang":
            self.release.wait(60)
            raise ConnectionError("dropped")
        return SimpleNamespace(aliases={"champion": "1"}, tags={})

    def get_model_version(self, name, version):
        return SimpleNamespace(tags={}, run_id="r")


@pytest.fixture
def manager(monkeypatch):
    spec = load_spec("churn")
    cfg = ServeConfig(registry_timeout=0.2)
    m = ModelManager(spec, "http://registry.invalid", cfg, FrameBuilder(spec, verify=False), Metrics())
    reg = Registry()
    m._client = reg
    monkeypatch.setattr(m, "load", lambda v: LoadedModel(spec.model_name, v, object(), [], [0, 1], 1, None, tags={}))
    yield SimpleNamespace(m=m, reg=reg)
    reg.release.set()


def test_a_failing_registry_is_degraded_and_the_champion_stays(manager):
    m, reg = manager.m, manager.reg
    m.poll()
    assert m.registry.describe()["status"] == "ok" and m.state.champion.version == "1"
    reg.mode = "fail"
    m.poll()
    m.poll()
    health = m.registry.describe()
    assert health["status"] == "degraded" and "connection refused" in health["error"]
    assert health["failed_polls"] == 2 and health["since"] and health["last_ok"]
    assert m.state.champion.version == "1"
    reg.mode = "answer"
    m.poll()
    assert m.registry.describe() | {"since": None, "last_ok": None} == {
        "status": "ok",
        "error": None,
        "since": None,
        "last_ok": None,
        "failed_polls": 0,
    }


def test_a_hanging_registry_never_holds_the_poll_and_never_piles_up_reads(manager):
    m, reg = manager.m, manager.reg
    m.poll()
    reg.mode = "hang"
    m.poll()  # returns after the 0.2 s deadline, not when the registry answers
    health = m.registry.describe()
    assert health["status"] == "degraded" and "no answer from the registry" in health["error"]
    calls = reg.calls
    m.poll()  # the first read still hangs: this poll fails at once and sends no second read
    assert reg.calls == calls and "has had no answer" in m.registry.error
    with pytest.raises(RegistryTimeout):
        m.refresh()
    assert m.state.champion.version == "1"
    reg.mode = "answer"
    reg.release.set()  # the hung read ends (with an error); the next poll reads again
    m._inflight[0].join(10)
    m.poll()
    assert m.registry.status == "ok"
