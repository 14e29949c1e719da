"""Which variant answers a record: pure functions, so the split can be tested without a server.

Canary traffic is sticky: the same entity always lands on the same side (a hash of its id, or
of the request id when there is no entity), so one customer never flips between models.
"""

from __future__ import annotations

import hashlib

CHAMPION, CHALLENGER, SHADOW = "champion", "challenger", "shadow"


def bucket(key: object) -> float:
    """A stable position in [0, 1) for a key: the same on every process and every run."""
    digest = hashlib.blake2b(str(key).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def choose(strategy: str, canary_share: float, has_challenger: bool, entity: int | str | None, request_id: str) -> str:
    """The variant that answers: "challenger" for the canary's share, "champion" otherwise
    (shadow scoring happens in addition and never answers)."""
    if strategy == "canary" and has_challenger and canary_share > 0:
        key = entity if entity is not None else request_id
        if bucket(key) < canary_share:
            return CHALLENGER
    return CHAMPION
