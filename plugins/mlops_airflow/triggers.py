"""The trigger a rollout's deploy task defers to while a live phase soaks (no worker slot held).

`LiveTrafficTrigger` sleeps until the phase's soak is over, then every `poll_seconds` counts
what the phase waits for (`include.mlops.delivery.phases.check`, in a thread: it reads the
service's /metrics, or for an A/B test the prediction log and the labels that arrived since the
poll before), logs the progress, and
fires once: `ready` when enough came, `deadline` when the phase's deadline passed first. The
event carries the phase back (`state`), so the task resumes with it even where the event is all
it is given (`dag.test()` passes only the event).

Runs in the triggerer of both stacks (docker-compose `airflow-triggerer`, `local.stack`'s
triggerer) and inline under `dag.test()`. Library imports happen in `run`, never at import time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

CLASSPATH = "mlops_airflow.triggers.LiveTrafficTrigger"


class LiveTrafficTrigger(BaseTrigger):
    """Wait for a rollout phase's live traffic (see the module docstring)."""

    def __init__(self, state: dict[str, Any], soak_until: float, deadline: float, poll_seconds: float) -> None:
        super().__init__()
        self.state = state
        self.soak_until = float(soak_until)
        self.deadline = float(deadline)
        self.poll_seconds = float(poll_seconds)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return CLASSPATH, {
            "state": self.state,
            "soak_until": self.soak_until,
            "deadline": self.deadline,
            "poll_seconds": self.poll_seconds,
        }

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from include.mlops.delivery import phases

        phase = phases.Phase.from_dict(self.state)
        self.log.info("waiting: %s", phase.describe())
        kept = phases.poll_cache()  # an A/B test's polls read each log and label object once
        while True:
            event = await asyncio.to_thread(phases.check, phase, None, kept)
            if event is not None:
                self.log.info("%s: %s with %s counted", phase.title(), event["status"], event["requests"])
                yield TriggerEvent({**event, "state": self.state})
                return
            await asyncio.sleep(max(0.05, phases.next_wake(phase, time.time())))
