"""How the scoring service's registry reads go: each has a deadline, and /ready reports the result.

Every registry read has a deadline (`MLOPS_SERVE_REGISTRY_TIMEOUT`): a read that gets no answer
within it raises `RegistryTimeout`. While reads fail or hang, `registry` in /ready says
`degraded`, with the last error and since when; requests keep being answered by the models in
memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class RegistryTimeout(Exception):
    """A registry read got no answer within MLOPS_SERVE_REGISTRY_TIMEOUT."""


def utc(ts: float | None) -> str | None:
    """A POSIX time as ISO 8601 UTC text to the second (None stays None)."""
    if ts is None:
        return None
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


@dataclass
class RegistryHealth:
    """How the last registry reads went: `ok`, `degraded` (failing or hanging) or `unknown`
    (none finished yet); `since` is when that status began."""

    status: str = "unknown"
    error: str | None = None
    since: float | None = None
    last_ok: float | None = None
    failures: int = 0

    def ok(self, now: float) -> None:
        if self.status != "ok":
            self.status, self.since = "ok", now
        self.error, self.last_ok, self.failures = None, now, 0

    def failed(self, error: str, now: float) -> None:
        if self.status != "degraded":
            self.status, self.since = "degraded", now
        self.error = error
        self.failures += 1

    def describe(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "error": self.error,
            "since": utc(self.since),
            "last_ok": utc(self.last_ok),
            "failed_polls": self.failures,
        }
