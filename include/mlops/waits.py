"""Bounded, talkative waits for a busy laptop: a deadline from the environment, progress while
waiting, and a message on giving up that says what was awaited and where its log is.

Every wait of `make up`, `make demo` and the deploy step goes through `Wait`. A slow answer or a
timeout of one call is not a failure: the caller retries until the deadline.

| variable | default | bounds |
|---|---|---|
| MLOPS_UP_TIMEOUT | 600 | `make up`: each service becoming ready |
| MLOPS_SERVICE_START_TIMEOUT | 300 | a scoring service started for a check (or by the demo) becoming ready |
| MLOPS_DEPLOY_WAIT_TIMEOUT | 300 | the deploy step: the service serving the expected versions |
| MLOPS_DEPLOY_REQUEST_TIMEOUT | 60 | one request of the deploy check (a slower answer counts as an error) |
| MLOPS_AIRFLOW_START_TIMEOUT | 600 | the demo's `airflow standalone` answering its API |
| MLOPS_AIRFLOW_RUN_TIMEOUT | 3600 | the demo's `ml_retraining` run finishing |
| MLOPS_API_CALL_TIMEOUT | 60 | one Airflow REST call (retried until the wait's deadline) |
| MLOPS_PROGRESS_SECONDS | 15 | how often a wait says it is still waiting |
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

DEFAULTS: dict[str, float] = {
    "MLOPS_UP_TIMEOUT": 600.0,
    "MLOPS_SERVICE_START_TIMEOUT": 300.0,
    "MLOPS_DEPLOY_WAIT_TIMEOUT": 300.0,
    "MLOPS_DEPLOY_REQUEST_TIMEOUT": 60.0,
    "MLOPS_AIRFLOW_START_TIMEOUT": 600.0,
    "MLOPS_AIRFLOW_RUN_TIMEOUT": 3600.0,
    "MLOPS_API_CALL_TIMEOUT": 60.0,
    "MLOPS_PROGRESS_SECONDS": 15.0,
}


class WaitTimeout(TimeoutError):
    """A bounded wait gave up; the message says what it waited for and where to look."""


def seconds(name: str, default: float | None = None) -> float:
    """A duration from the environment (`name`), else the documented default."""
    raw = os.environ.get(name, "").strip()
    fallback = DEFAULTS.get(name, 60.0) if default is None else default
    if not raw:
        return fallback
    try:
        value = float(raw)
    except ValueError as exc:
        raise ValueError(f"{name}={raw!r} is not a number of seconds") from exc
    if value <= 0:
        raise ValueError(f"{name}={raw!r} must be a positive number of seconds")
    return value


class Wait:
    """`what` until `timeout` (seconds); `tick()` reports progress every MLOPS_PROGRESS_SECONDS.

    `say` receives the progress lines (a logger's info, or print); `log_hint` is named when the
    wait gives up, so a person knows where to look.
    """

    def __init__(
        self,
        what: str,
        timeout: float,
        *,
        say: Callable[[str], None] | None = None,
        log_hint: str | None = None,
        every: float | None = None,
    ) -> None:
        self.what, self.timeout, self.log_hint = what, timeout, log_hint
        self.say = say or logging.getLogger(__name__).info
        self.every = every if every is not None else seconds("MLOPS_PROGRESS_SECONDS")
        self.t0 = time.monotonic()
        self._next = self.t0 + self.every

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    @property
    def left(self) -> float:
        return max(0.0, self.timeout - self.elapsed)

    def expired(self) -> bool:
        return self.elapsed >= self.timeout

    def tick(self, status: str = "") -> None:
        """Say "still waiting" (with `status`) when the progress interval has passed."""
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self.every
            extra = f": {status}" if status else ""
            self.say(f"still waiting for {self.what} ({self.elapsed:.0f}s of {self.timeout:.0f}s){extra}")

    def give_up(self, status: str = "") -> WaitTimeout:
        """The exception to raise: what was awaited, for how long, the last status, the log."""
        parts = [f"gave up waiting for {self.what} after {self.elapsed:.0f}s (deadline {self.timeout:.0f}s)"]
        if status:
            parts.append(f"last status: {status}")
        if self.log_hint:
            parts.append(f"log: {self.log_hint}")
        return WaitTimeout("; ".join(parts))
