"""Canary routing: a stable, sticky split close to the configured share."""

from __future__ import annotations

from include.mlops.serving.config import ServeConfig
from include.mlops.serving.routing import bucket, choose


def test_bucket_is_stable_and_uniform():
    assert bucket(12345) == bucket(12345) == bucket("12345")
    values = [bucket(i) for i in range(100_000, 110_000)]
    assert all(0 <= v < 1 for v in values)
    assert abs(sum(v < 0.1 for v in values) / len(values) - 0.1) < 0.01


def test_canary_share_and_stickiness():
    picks = [choose("canary", 0.2, True, e, "r") for e in range(20_000)]
    assert abs(picks.count("challenger") / len(picks) - 0.2) < 0.015
    assert picks == [choose("canary", 0.2, True, e, "other request") for e in range(20_000)]  # per entity


def test_without_entity_the_request_id_decides():
    picks = {choose("canary", 0.5, True, None, f"req-{i}") for i in range(200)}
    assert picks == {"champion", "challenger"}


def test_only_canary_with_a_challenger_splits():
    for strategy in ("direct", "shadow", "blue_green"):
        assert {choose(strategy, 1.0, True, e, "r") for e in range(50)} == {"champion"}
    assert {choose("canary", 1.0, False, e, "r") for e in range(50)} == {"champion"}
    assert {choose("canary", 0.0, True, e, "r") for e in range(50)} == {"champion"}


def test_config_from_env():
    cfg = ServeConfig.from_env(
        {
            "MLOPS_SERVE_PORT": "9001",
            "MLOPS_SERVE_POLL_SECONDS": "0.5",
            "MLOPS_ADMIN_TOKEN": "t",
            "MLOPS_SERVE_STRATEGY": "canary",
            "MLOPS_SERVE_PREDICTION_LOG": "false",
        }
    )
    assert (cfg.port, cfg.poll_seconds, cfg.admin_token, cfg.strategy, cfg.prediction_log) == (
        9001,
        0.5,
        "t",
        "canary",
        False,
    )
    assert ServeConfig.from_env({}).port == 8000 and ServeConfig.from_env({}).host == "127.0.0.1"
