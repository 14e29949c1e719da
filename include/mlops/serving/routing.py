"""Which variant answers a record: pure functions, so the split can be tested without a server.

Two strategies split the answers between the champion and the challenger: a `canary` (the
challenger's share grows step by step) and an `ab_test` (a fixed share for the test's period).
Both splits are sticky: the same entity always lands on the same side (a hash of its id, or of
the request id when there is no entity), so one customer never flips between models and an A/B
test's arms hold different customers. Shadow scoring happens beside the champion's answer and
never answers.
"""

from __future__ import annotations

import hashlib

CHAMPION, CHALLENGER, SHADOW = "champion", "challenger", "shadow"
SPLIT_STRATEGIES = ("canary", "ab_test")  # the challenger answers a share of the entities


def bucket(key: object) -> float:
    """A stable position in [0, 1) for a key: the same on every process and every run."""
    digest = hashlib.blake2b(str(key).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def splits(strategy: str) -> bool:
    """Whether `strategy` routes a share of the answers to the challenger."""
    return strategy in SPLIT_STRATEGIES


def choose(strategy: str, share: float, has_challenger: bool, entity: int | str | None, request_id: str) -> str:
    """The variant that answers: "challenger" for the entities in the challenger's `share`
    (canary or A/B test), "champion" otherwise."""
    if splits(strategy) and has_challenger and share > 0:
        key = entity if entity is not None else request_id
        if bucket(key) < share:
            return CHALLENGER
    return CHAMPION
