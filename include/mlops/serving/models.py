"""Model manager: follows the registry's aliases and swaps models without a request noticing.

A background thread reads the registered model (aliases and deployment tags: one call) every
few seconds, or at once when POST /admin/reload asks. A version that is not in memory yet is
loaded, warmed and smoke-tested on that thread (`loading`); only then is the serving state
replaced, by one reference assignment. Requests read the state once and keep the models they
were routed to, so a swap never fails or delays a request, and a model that fails to load, is
refused (`include.mlops.model_io`) or fails its smoke test is never served (the last good one
stays). Recently served versions stay in memory, so switching back (blue/green, rollback) is
instant.

Every registry read runs on a helper thread and the poll thread waits for it at most
`MLOPS_SERVE_REGISTRY_TIMEOUT` seconds, so a registry that hangs cannot hold the poll thread
(MLflow's own HTTP timeout is 120 s per try, with up to 7 retries); one unanswered read at a
time, never a pile of them. How the reads went is `registry_health`, shown in /ready.
"""

from __future__ import annotations

import gc
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from include.mlops.constants import STRATEGIES
from include.mlops.serving.config import CANARY_SHARE_TAG, STRATEGY_TAG, spec_share
from include.mlops.serving.loading import load_version
from include.mlops.serving.registry_health import RegistryHealth, RegistryTimeout, utc
from include.mlops.serving.routing import SPLIT_STRATEGIES

if TYPE_CHECKING:
    from include.mlops.config import ServeConfig
    from include.mlops.serving.frames import FrameBuilder
    from include.mlops.serving.loading import LoadedModel
    from include.mlops.serving.metrics import Metrics
    from include.mlops.spec import DatasetSpec

log = logging.getLogger(__name__)
RETRY_FAILED_SECONDS = 60.0
KEEP_RECENT = 2  # champions kept in memory after they stop serving (instant switch back)


T = TypeVar("T")


@dataclass(frozen=True)
class ServingState:
    """What serves now. Replaced as a whole, never mutated: a request reads it once."""

    champion: LoadedModel
    challenger: LoadedModel | None
    strategy: str
    canary_share: float  # the challenger's share of the entities (canary step or A/B test)
    standby: tuple[str, ...] = ()  # versions warm in memory but not serving (blue/green)
    aliases: dict[str, str] = field(default_factory=dict)
    since: float = 0.0

    def roles(self) -> dict[str, str | None]:
        role = "shadow" if self.strategy == "shadow" else "challenger"
        return {"champion": self.champion.version, role: self.challenger.version if self.challenger else None}

    def key(self) -> tuple[Any, ...]:
        return (
            self.champion.version,
            self.challenger.version if self.challenger else None,
            self.strategy,
            self.canary_share,
            self.standby,
        )


class ModelManager:
    def __init__(
        self, spec: DatasetSpec, tracking_uri: str, cfg: ServeConfig, builder: FrameBuilder, metrics: Metrics
    ) -> None:
        self.spec, self.tracking_uri, self.cfg, self.builder, self.metrics = spec, tracking_uri, cfg, builder, metrics
        self.name = spec.model_name
        self.state: ServingState | None = None
        self.last_error: str | None = None
        self.registry = RegistryHealth()
        self.pending: dict[str, str] = {}  # alias -> why the version it names is not serving
        self.refused: dict[str, str] = {}  # version -> why its artifact was refused (unsafe format or types)
        self._inflight: tuple[threading.Thread, float, str] | None = None
        self._cache: dict[str, LoadedModel] = {}
        self._recent: list[str] = []
        self._failed: dict[str, tuple[float, str]] = {}
        self._client: Any = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._requested = 0
        self._done = 0
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        import os

        # MLflow's HTTP client waits 120 s per try and retries 7 times by default: bound its own
        # calls too (downloads included), unless the operator set these for the process
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(1, math.ceil(self.cfg.registry_timeout))))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        self._thread = threading.Thread(target=self._run, name="model-manager", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)

    def request_refresh(self) -> int:
        """Ask for a registry read now; returns a ticket for `wait_refresh`."""
        with self._cond:
            self._requested += 1
            ticket = self._requested
        self._wake.set()
        return ticket

    def wait_refresh(self, ticket: int, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._done >= ticket, timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                ticket = self._requested
            self.poll()
            with self._cond:
                self._done = max(self._done, ticket)
                self._cond.notify_all()
            self._wake.wait(self.cfg.poll_seconds)
            self._wake.clear()

    def poll(self) -> None:
        """One registry read and whatever it brings; a failure or a hang (bounded) marks the
        registry degraded and changes nothing that serves."""
        try:
            self.refresh()
            self.last_error = None
            if self.registry.status == "degraded":
                log.info("registry answers again (degraded since %s)", utc(self.registry.since))
            self.registry.ok(time.time())
        except Exception as exc:  # the registry may be down: keep serving what we have
            self.last_error = f"{type(exc).__name__}: {exc}"[:500]
            self.registry.failed(self.last_error, time.time())
            log.warning(
                "registry degraded since %s (serving %s from memory): %s",
                utc(self.registry.since),
                self.state.roles() if self.state else "nothing yet",
                self.last_error,
            )

    def loaded(self, version: str) -> LoadedModel | None:
        """A version already in memory (serving, standby or recently served), or None: never loads."""
        return self._cache.get(str(version))

    # -- the registry -----------------------------------------------------------------------------
    def client(self) -> Any:
        if self._client is None:
            from include.mlops.registry import mlflow_client

            # with the process-wide URIs too: a service started with only MLOPS_HOME set (`make
            # serve`) would otherwise look for the versions in MLflow's default registry
            self._client = mlflow_client(self.tracking_uri)
        return self._client

    def _registry_call(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on a helper thread, waited for at most `cfg.registry_timeout` seconds. A
        read still unanswered from an earlier poll makes this one fail at once: at most one
        thread is ever stuck on a hanging registry."""
        inflight = self._inflight
        if inflight is not None and inflight[0].is_alive():
            age = time.monotonic() - inflight[1]
            raise RegistryTimeout(
                f"{inflight[2]} has had no answer from the registry at {self.tracking_uri} for {age:.0f}s"
            )
        box: dict[str, Any] = {}

        def call() -> None:
            try:
                box["result"] = fn(*args)
            except BaseException as exc:  # handed to the poll thread below
                box["error"] = exc

        worker = threading.Thread(target=call, name="registry-read", daemon=True)
        self._inflight = (worker, time.monotonic(), what)
        worker.start()
        worker.join(self.cfg.registry_timeout)
        if worker.is_alive():
            raise RegistryTimeout(
                f"{what}: no answer from the registry at {self.tracking_uri} within {self.cfg.registry_timeout:g}s "
                "(MLOPS_SERVE_REGISTRY_TIMEOUT)"
            )
        self._inflight = None
        if "error" in box:
            raise box["error"]
        return box["result"]

    def _deployment(self, tags: dict[str, str]) -> tuple[str, float]:
        """(strategy, challenger share): the environment pins, else the registry's tags (the
        deploy step's), else the spec (`spec_share`)."""
        dep = self.spec.deployment
        strategy = self.cfg.strategy or tags.get(STRATEGY_TAG) or dep.strategy
        if strategy not in STRATEGIES:
            log.warning("unknown deployment strategy %r: serving direct", strategy)
            strategy = "direct"
        share = self.cfg.canary_share
        if share is None:
            tagged = tags.get(CANARY_SHARE_TAG)
            try:
                share = float(tagged) if tagged else spec_share(dep, strategy)
            except ValueError:
                share = math.nan
            if math.isnan(share):
                log.warning("registry tag %s=%r is not a share: using the spec's", CANARY_SHARE_TAG, tagged)
                share = spec_share(dep, strategy)
        return strategy, min(max(share, 0.0), 1.0)

    def refresh(self) -> ServingState | None:
        """Read aliases and tags; load what is missing; swap if anything changed."""
        rm = self._registry_call(f"reading registered model {self.name}", self.client().get_registered_model, self.name)
        aliases = {k: str(v) for k, v in (rm.aliases or {}).items()}
        strategy, share = self._deployment(dict(rm.tags or {}))
        pending: dict[str, str] = {}
        current = self.state
        champ_v = aliases.get("champion")
        if champ_v is None:
            pending["champion"] = "the registered model has no champion alias"
            self.pending = pending
            return current
        champion = self._get(champ_v)
        if champion is None:
            pending["champion"] = f"v{champ_v}: {self._failed.get(champ_v, (0, 'not loaded'))[1]}"
            self.pending = pending
            return current  # keep serving the old champion
        challenger = None
        chall_v = aliases.get("challenger")
        if strategy in (*SPLIT_STRATEGIES, "shadow") and chall_v and chall_v != champ_v:
            gate = self._version_tags(chall_v).get("gate")
            if strategy in SPLIT_STRATEGIES and gate == "failed":  # it would answer callers: never
                pending["challenger"] = f"v{chall_v} failed the gate: no {strategy} traffic"
            else:
                challenger = self._get(chall_v)
                if challenger is None:
                    pending["challenger"] = f"v{chall_v}: {self._failed.get(chall_v, (0, 'not loaded'))[1]}"
        standby: list[str] = []
        if strategy == "blue_green":  # keep the next and the last champion warm: switching is instant
            for alias in ("challenger", "previous"):
                v = aliases.get(alias)
                if v and v != champ_v and v not in standby and self._get(v) is not None:
                    standby.append(v)
        new = ServingState(champion, challenger, strategy, share, tuple(standby), aliases, time.time())
        self.pending = pending
        if current is None or current.key() != new.key():
            self.state = new  # the atomic switch: one reference assignment
            self.metrics.swaps.inc()
            self.metrics.set_serving(new.roles())
            log.info(
                "serving %s (strategy %s, challenger share %.2f, standby %s)", new.roles(), strategy, share, standby
            )
            if current is not None and current.champion.version != champion.version:
                self._recent = [v for v in [current.champion.version, *self._recent] if v != champion.version][
                    :KEEP_RECENT
                ]
        else:
            self.state = new if current.aliases != aliases else current
        self._evict(new)
        return self.state

    def _version_tags(self, version: str) -> dict[str, str]:
        if version in self._cache:
            return self._cache[version].tags
        try:
            mv = self._registry_call(
                f"reading {self.name} v{version}", self.client().get_model_version, self.name, version
            )
            return dict(mv.tags or {})
        except Exception:
            return {}

    def _evict(self, state: ServingState) -> None:
        keep = {state.champion.version, *state.standby, *self._recent}
        if state.challenger is not None:
            keep.add(state.challenger.version)
        if state.aliases.get("previous"):
            keep.add(state.aliases["previous"])
        for v in list(self._cache):
            if v not in keep:
                del self._cache[v]

    # -- loading ----------------------------------------------------------------------------------
    def _get(self, version: str) -> LoadedModel | None:
        if version in self._cache:
            return self._cache[version]
        failed = self._failed.get(version)
        if failed and time.monotonic() - failed[0] < RETRY_FAILED_SECONDS:
            return None
        from include.mlops.model_io import UnsafeModelError

        try:
            lm = self.load(version)
        except RegistryTimeout:
            raise  # the registry, not the version: the poll fails and /ready says degraded
        except UnsafeModelError as exc:
            reason = f"{type(exc).__name__}: {exc}"[:1000]
            log.error("REFUSED %s v%s; it will not serve, the last good model stays: %s", self.name, version, reason)
            self._failed[version] = (time.monotonic(), reason)
            self.refused[version] = reason
            self.metrics.model_loads.labels(outcome="refused").inc()
            return None
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"[:500]
            log.error("could not load %s v%s; it will not serve: %s", self.name, version, reason)
            self._failed[version] = (time.monotonic(), reason)
            self.metrics.model_loads.labels(outcome="failed").inc()
            return None
        self._failed.pop(version, None)
        self.refused.pop(version, None)
        self._cache[version] = lm
        # A model and the libraries behind it are millions of long-lived objects; left to the
        # cyclic GC, every full collection walks them all and stalls requests for ~0.3 s.
        gc.freeze()
        self.metrics.model_loads.labels(outcome="loaded").inc()
        self.metrics.model_load.labels(model_version=version).set(lm.load_seconds)
        return lm

    def load(self, version: str) -> LoadedModel:
        """One version read from the registry (within the read deadline), downloaded, checked,
        loaded, warmed and smoke-tested (`loading.load_version`)."""
        return load_version(
            self.spec,
            self.builder,
            self.tracking_uri,
            version,
            lambda: self._registry_call(
                f"reading {self.name} v{version}", self.client().get_model_version, self.name, version
            ),
        )
