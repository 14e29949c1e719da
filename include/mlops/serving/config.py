"""What the service and the deploy step agree on: registry tags, headers, the split's share.

The service's settings (MLOPS_SERVE_*) are `include.mlops.config.ServeConfig`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from include.mlops.spec_sections import DeploymentSpec

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
