"""Canary and A/B routing: a stable, sticky split close to the configured share."""

from __future__ import annotations

import pytest

from include.mlops.config import ServeConfig, SettingsError
from include.mlops.serving.config import spec_share
from include.mlops.serving.routing import bucket, choose
from include.mlops.spec import load_spec


def test_bucket_is_stable_and_uniform():
    assert bucket(12345) == bucket(12345) == bucket("12345")
    values = [bucket(i) for i in range(100_000, 110_000)]
    assert all(0 <= v < 1 for v in values)
    assert abs(sum(v < 0.1 for v in values) / len(values) - 0.1) < 0.01


@pytest.mark.parametrize(("strategy", "share"), [("canary", 0.2), ("ab_test", 0.5), ("ab_test", 0.1)])
def test_split_share_and_stickiness(strategy, share):
    picks = [choose(strategy, share, True, e, "r") for e in range(20_000)]
    assert abs(picks.count("challenger") / len(picks) - share) < 0.015
    assert picks == [choose(strategy, share, True, e, "other request") for e in range(20_000)]  # per entity


def test_an_ab_test_and_a_canary_of_the_same_share_pick_the_same_entities():
    """One hash for both splits: an entity in a canary's 50% is in the A/B test's 50% arm too,
    and a growing share only adds entities (no one leaves the challenger between steps)."""
    ids = range(5_000)
    assert [choose("ab_test", 0.5, True, e, "r") for e in ids] == [choose("canary", 0.5, True, e, "r") for e in ids]
    small = {e for e in ids if choose("canary", 0.05, True, e, "r") == "challenger"}
    large = {e for e in ids if choose("canary", 0.25, True, e, "r") == "challenger"}
    assert small < large


def test_without_entity_the_request_id_decides():
    picks = {choose("canary", 0.5, True, None, f"req-{i}") for i in range(200)}
    assert picks == {"champion", "challenger"}


def test_only_canary_and_ab_test_with_a_challenger_split():
    for strategy in ("direct", "shadow", "blue_green"):
        assert {choose(strategy, 1.0, True, e, "r") for e in range(50)} == {"champion"}
    for strategy in ("canary", "ab_test"):
        assert {choose(strategy, 1.0, False, e, "r") for e in range(50)} == {"champion"}
        assert {choose(strategy, 0.0, True, e, "r") for e in range(50)} == {"champion"}
        assert {choose(strategy, 1.0, True, e, "r") for e in range(50)} == {"challenger"}


def test_the_spec_share_each_strategy_falls_back_to():
    dep = load_spec("churn").deployment
    dep = dep.model_copy(
        update={
            "canary": dep.canary.model_copy(update={"steps": [0.1, 0.3]}),
            "ab_test": dep.ab_test.model_copy(update={"share": 0.4}),
        }
    )
    assert [spec_share(dep, s) for s in ("canary", "ab_test", "direct", "shadow", "blue_green")] == [
        0.1,
        0.4,
        0.0,
        0.0,
        0.0,
    ]


def test_config_from_env(monkeypatch):
    for name in ("MLOPS_SERVE_PORT", "MLOPS_SERVE_HOST"):
        monkeypatch.delenv(name, raising=False)
    assert ServeConfig.from_env().port == 8000 and ServeConfig.from_env().host == "127.0.0.1"
    values = {
        "MLOPS_SERVE_PORT": "9001",
        "MLOPS_SERVE_POLL_SECONDS": "0.5",
        "MLOPS_ADMIN_TOKEN": "t",
        "MLOPS_SERVE_STRATEGY": "canary",
        "MLOPS_SERVE_PREDICTION_LOG": "false",
        "MLOPS_SERVE_SPEC": "housing",
    }
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    cfg = ServeConfig.from_env()
    assert (cfg.port, cfg.poll_seconds, cfg.admin_token, cfg.strategy, cfg.prediction_log, cfg.spec_name) == (
        9001,
        0.5,
        "t",
        "canary",
        False,
        "housing",
    )
    monkeypatch.setenv("MLOPS_SERVE_STRATEGY", "big_bang")
    with pytest.raises(SettingsError, match="MLOPS_SERVE_STRATEGY='big_bang': must be one of direct"):
        ServeConfig.from_env()
