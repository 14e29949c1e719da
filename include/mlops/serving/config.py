"""The service's settings, read from the environment when the service starts (never at import)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from include.mlops.constants import STRATEGIES

if TYPE_CHECKING:
    from include.mlops.spec import DeploymentSpec

STRATEGY_TAG = "mlops.deployment.strategy"
# The challenger's share of the entities while traffic is split (canary step, A/B test), set by
# the deploy step; the name is kept from when only the canary split traffic.
CANARY_SHARE_TAG = "mlops.deployment.canary_share"
SYNTHETIC_HEADER = "x-mlops-traffic"  # value "synthetic": deploy checks, never written to the prediction log
# A version in memory answers the request whatever the routing says (admin token required): the
# deploy check measures the new and the current version side by side through it.
VERSION_HEADER = "x-mlops-model-version"
PINNED = "pinned"  # the variant such answers carry


def spec_share(deployment: DeploymentSpec, strategy: str) -> float:
    """The challenger's share when neither the environment nor the registry tag sets one: the
    canary's first step, the A/B test's share, else 0 (no split)."""
    if strategy == "canary":
        return float(deployment.canary.steps[0])
    if strategy == "ab_test":
        return float(deployment.ab_test.share)
    return 0.0


def _bool(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _opt_float(value: str | None) -> float | None:
    return float(value) if value not in (None, "") else None


@dataclass(frozen=True)
class ServeConfig:
    """| variable | default | meaning |
    |---|---|---|
    | MLOPS_SERVE_HOST | 127.0.0.1 | bind address |
    | MLOPS_SERVE_PORT | 8000 | port |
    | MLOPS_SERVE_POLL_SECONDS | 5 | how often the registry's aliases are read |
    | MLOPS_SERVE_REGISTRY_TIMEOUT | 10 | longest wait for one registry read before /ready says `registry: degraded` |
    | MLOPS_ADMIN_TOKEN | (unset: admin endpoints refuse) | bearer token for POST /admin/* |
    | MLOPS_SERVE_MAX_BODY_BYTES | 1048576 | larger bodies get 413 |
    | MLOPS_SERVE_MAX_RECORDS | 1000 | more records in one request get 413 |
    | MLOPS_SERVE_BATCH_MAX_ROWS | 64 | micro-batch size cap |
    | MLOPS_SERVE_BATCH_WAIT_MS | 2 | how long a batch waits for stragglers under load |
    | MLOPS_SERVE_INLINE | true | score a lone request on the event loop (no thread hand-off) |
    | MLOPS_SERVE_PREDICTION_LOG | true | write the prediction log |
    | MLOPS_SERVE_LOG_FLUSH_SECONDS | 5 | prediction log flush interval |
    | MLOPS_SERVE_LOG_MAX_ROWS | 10000 | prediction log rows per object |
    | MLOPS_SERVE_STRATEGY | (registry tag, then spec) | pins the deployment strategy |
    | MLOPS_SERVE_CANARY_SHARE | (registry tag, then spec) | pins the challenger's share (canary, A/B test) |
    | MLOPS_SERVE_ACCESS_LOG | false | uvicorn access log |
    | MLOPS_SERVE_SPEC | (MLOPS_DATASET) | dataset spec name (installed in a spec directory) |
    """

    host: str = "127.0.0.1"
    port: int = 8000
    poll_seconds: float = 5.0
    registry_timeout: float = 10.0
    admin_token: str | None = None
    max_body_bytes: int = 1_048_576
    max_records: int = 1000
    batch_max_rows: int = 64
    batch_wait_ms: float = 2.0
    inline: bool = True
    prediction_log: bool = True
    log_flush_seconds: float = 5.0
    log_max_rows: int = 10_000
    strategy: str | None = None
    canary_share: float | None = None
    access_log: bool = False
    spec_name: str | None = None  # default: MLOPS_DATASET through include.mlops.config

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> ServeConfig:
        e = dict(os.environ if env is None else env)
        strategy = e.get("MLOPS_SERVE_STRATEGY") or None
        if strategy is not None and strategy not in STRATEGIES:
            raise ValueError(f"MLOPS_SERVE_STRATEGY must be one of {STRATEGIES}, not {strategy!r}")
        return cls(
            host=e.get("MLOPS_SERVE_HOST") or "127.0.0.1",
            port=int(e.get("MLOPS_SERVE_PORT") or 8000),
            poll_seconds=float(e.get("MLOPS_SERVE_POLL_SECONDS") or 5),
            registry_timeout=float(e.get("MLOPS_SERVE_REGISTRY_TIMEOUT") or 10),
            admin_token=e.get("MLOPS_ADMIN_TOKEN") or None,
            max_body_bytes=int(e.get("MLOPS_SERVE_MAX_BODY_BYTES") or 1_048_576),
            max_records=int(e.get("MLOPS_SERVE_MAX_RECORDS") or 1000),
            batch_max_rows=int(e.get("MLOPS_SERVE_BATCH_MAX_ROWS") or 64),
            batch_wait_ms=float(e.get("MLOPS_SERVE_BATCH_WAIT_MS") or 2),
            inline=_bool(e.get("MLOPS_SERVE_INLINE"), True),
            prediction_log=_bool(e.get("MLOPS_SERVE_PREDICTION_LOG"), True),
            log_flush_seconds=float(e.get("MLOPS_SERVE_LOG_FLUSH_SECONDS") or 5),
            log_max_rows=int(e.get("MLOPS_SERVE_LOG_MAX_ROWS") or 10_000),
            strategy=strategy,
            canary_share=_opt_float(e.get("MLOPS_SERVE_CANARY_SHARE")),
            access_log=_bool(e.get("MLOPS_SERVE_ACCESS_LOG"), False),
            spec_name=e.get("MLOPS_SERVE_SPEC") or None,
        )
