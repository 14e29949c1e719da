"""Bounded waits: deadlines from the environment (config.Timeouts), progress while waiting, a useful give-up."""

from __future__ import annotations

import pytest

from include.mlops.waits import DEFAULTS, Wait, WaitTimeout, seconds


def test_deadlines_come_from_the_environment_with_documented_defaults(monkeypatch):
    monkeypatch.delenv("MLOPS_UP_TIMEOUT", raising=False)
    assert seconds("MLOPS_UP_TIMEOUT") == DEFAULTS["MLOPS_UP_TIMEOUT"] == 600
    monkeypatch.setenv("MLOPS_UP_TIMEOUT", "1200")
    assert seconds("MLOPS_UP_TIMEOUT") == 1200
    for bad in ("soon", "0", "-5"):
        monkeypatch.setenv("MLOPS_UP_TIMEOUT", bad)
        with pytest.raises(ValueError, match="MLOPS_UP_TIMEOUT"):
            seconds("MLOPS_UP_TIMEOUT")


def test_a_misspelt_deadline_is_refused_with_the_known_ones():
    with pytest.raises(KeyError, match="MLOPS_UP_TIMEOUT"):
        seconds("MLOPS_UP_TIMEOT")


def test_every_documented_variable_is_in_the_readme():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    missing = [name for name in DEFAULTS if f"`{name}`" not in readme]
    assert not missing, f"README's configuration section lacks {missing}"


def test_progress_is_said_once_per_interval_and_the_give_up_names_the_log():
    said: list[str] = []
    quiet = Wait("the scoring service", 30, say=said.append, every=3600)
    quiet.tick("503 loading")  # within the interval: nothing said
    assert said == []
    w = Wait("the scoring service", 30, say=said.append, log_hint="/tmp/serve.log", every=0)
    w.tick("503 loading")
    assert said == ["still waiting for the scoring service (0s of 30s): 503 loading"]
    exc = w.give_up("503 loading")
    assert isinstance(exc, WaitTimeout) and isinstance(exc, TimeoutError)
    assert "gave up waiting for the scoring service" in str(exc)
    assert "last status: 503 loading" in str(exc) and "log: /tmp/serve.log" in str(exc)


def test_a_wait_expires_at_its_deadline():
    w = Wait("nothing", 0.001, say=lambda m: None)
    while not w.expired():
        pass
    assert w.left == 0.0
