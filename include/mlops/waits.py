"""Bounded, talkative waits for a busy laptop: a deadline from the environment, progress while
waiting, and a message on giving up that says what was awaited and where its log is.

Every wait of `make up`, `make demo` and the deploy step goes through `Wait`. A slow answer or a
timeout of one call is not a failure: the caller retries until the deadline. The deadlines
(MLOPS_*_TIMEOUT, MLOPS_PROGRESS_SECONDS) are `config.Timeouts`, one field per variable with its
default and meaning; `seconds(variable)` reads one, `DEFAULTS` lists them by variable.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from include.mlops.config import Timeouts, get_timeouts, variable

_FIELDS: dict[str, str] = {variable(Timeouts, name): name for name in Timeouts.model_fields}
DEFAULTS: dict[str, float] = {var: Timeouts.model_fields[name].default for var, name in _FIELDS.items()}


class WaitTimeout(TimeoutError):
    """A bounded wait gave up; the message says what it waited for and where to look."""


def seconds(name: str) -> float:
    """The deadline in the environment variable `name` (one of `DEFAULTS`), else its default; a value
    that is not a positive number raises `config.SettingsError` naming the variable."""
    if name not in _FIELDS:
        raise KeyError(f"{name} is not a wait deadline; the deadlines are {sorted(_FIELDS)} (config.Timeouts)")
    return float(getattr(get_timeouts(), _FIELDS[name]))


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
        self.every = every if every is not None else get_timeouts().progress
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
