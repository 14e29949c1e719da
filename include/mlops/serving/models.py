"""Model manager: follows the registry's aliases and swaps models without a request noticing.

A background thread reads the registered model (aliases and deployment tags: one call) every
few seconds, or at once when POST /admin/reload asks. A version that is not in memory yet is
downloaded, loaded, warmed and smoke-tested on that thread; only then is the serving state
replaced, by one reference assignment. Requests read the state once and keep the models they
were routed to, so a swap never fails or delays a request, and a model that fails to load or
to pass its smoke test is never served (the old one stays). Recently served versions stay in
memory, so switching back (blue/green, rollback) is instant.

Models are loaded through `include.mlops.model_io`: only the sklearn flavour in skops format with
the code's trusted types; anything else is refused unopened (`refused` in /ready says which
version and why) and the last good model keeps serving.

Every registry read has a deadline (`MLOPS_SERVE_REGISTRY_TIMEOUT`): it runs on a helper thread
and the poll thread waits for it at most that long, so a registry that hangs cannot hold the
poll thread (MLflow's own HTTP timeout is 120 s per try, with up to 7 retries); one unanswered
read at a time, never a pile of them. While reads fail or hang, `registry` in /ready says
`degraded`, with the last error and since when; requests keep being answered by the models in
memory.
"""

from __future__ import annotations

import gc
import logging
import math
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from include.mlops.constants import STRATEGIES
from include.mlops.scores import scores_from_proba
from include.mlops.serving.config import CANARY_SHARE_TAG, STRATEGY_TAG, spec_share
from include.mlops.serving.routing import SPLIT_STRATEGIES

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from include.mlops.config import ServeConfig
    from include.mlops.serving.frames import FrameBuilder
    from include.mlops.serving.metrics import Metrics
    from include.mlops.serving.validation import RecordValidator
    from include.mlops.spec import DatasetSpec

log = logging.getLogger(__name__)
RETRY_FAILED_SECONDS = 60.0
KEEP_RECENT = 2  # champions kept in memory after they stop serving (instant switch back)


T = TypeVar("T")


class SmokeTestFailed(Exception):
    """A freshly loaded model gave outputs of the wrong shape or range on known inputs."""


class RegistryTimeout(Exception):
    """A registry read got no answer within MLOPS_SERVE_REGISTRY_TIMEOUT."""


def _utc(ts: float | None) -> str | None:
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
            "since": _utc(self.since),
            "last_ok": _utc(self.last_ok),
            "failed_polls": self.failures,
        }


@dataclass
class LoadedModel:
    name: str
    version: str
    model: Any
    input_columns: list[str]
    classes: list[Any] | None
    positive_index: int | None
    validator: RecordValidator
    run_id: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    loaded_at: float = 0.0
    load_seconds: float = 0.0

    @property
    def is_classifier(self) -> bool:
        return self.classes is not None

    def score(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(prediction, score, class probabilities or None) for a model-feature frame.

        Prediction and score as `include.mlops.scores` defines them: the predicted class value
        and the positive class's probability (binary; `positive_index` resolved at load), the
        most probable class and its probability (multiclass), or the regression value."""
        import numpy as np

        X = X[self.input_columns] if list(X.columns) != self.input_columns else X
        if self.classes is None:
            pred = np.asarray(self.model.predict(X), dtype=np.float64)
            return pred, pred, None
        proba = np.asarray(self.model.predict_proba(X), dtype=np.float64)
        pred, score = scores_from_proba(proba, self.classes, self.positive_index)
        return pred, score, proba

    def describe(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "run_id": self.run_id,
            "loaded_at": self.loaded_at,
            "load_seconds": round(self.load_seconds, 3),
        }


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


def smoke_test(lm: LoadedModel, X: pd.DataFrame) -> None:
    """Known inputs must give one finite output per row; probabilities in [0, 1] summing to 1."""
    import numpy as np

    pred, score, proba = lm.score(X)
    if len(pred) != len(X) or len(score) != len(X):
        raise SmokeTestFailed(f"v{lm.version}: {len(pred)} predictions for {len(X)} rows")
    if not np.all(np.isfinite(score)):
        raise SmokeTestFailed(f"v{lm.version}: non-finite scores on known inputs")
    if proba is not None:
        if proba.shape != (len(X), len(lm.classes or [])):
            raise SmokeTestFailed(f"v{lm.version}: probabilities of shape {proba.shape}")
        if (proba < 0).any() or (proba > 1).any() or not np.allclose(proba.sum(axis=1), 1.0, atol=1e-6):
            raise SmokeTestFailed(f"v{lm.version}: class probabilities outside [0, 1] or not summing to 1")


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
                log.info("registry answers again (degraded since %s)", _utc(self.registry.since))
            self.registry.ok(time.time())
        except Exception as exc:  # the registry may be down: keep serving what we have
            self.last_error = f"{type(exc).__name__}: {exc}"[:500]
            self.registry.failed(self.last_error, time.time())
            log.warning(
                "registry degraded since %s (serving %s from memory): %s",
                _utc(self.registry.since),
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
        """Download, check the format and types and load (`model_io`), check the signature
        against the spec, warm up and smoke-test."""
        from mlflow.artifacts import download_artifacts
        from mlflow.models import Model

        from include.mlops import model_io
        from include.mlops.serving.validation import RecordValidator, signature_columns

        t0 = time.perf_counter()
        mv = self._registry_call(f"reading {self.name} v{version}", self.client().get_model_version, self.name, version)
        with tempfile.TemporaryDirectory(prefix=f"mlops-serve-{version}-") as tmp:
            local = download_artifacts(
                artifact_uri=f"models:/{self.name}/{version}",
                dst_path=tmp,
                tracking_uri=self.tracking_uri,
                registry_uri=self.tracking_uri,
            )
            model = model_io.load_local(local, f"{self.name} v{version}")  # refused unopened unless skops + allowlist
            meta = Model.load(local)
            try:
                example = meta.load_input_example(local)
            except Exception:
                example = None
        sig = signature_columns(meta.signature)
        validator = RecordValidator(self.spec, sig)  # raises SchemaMismatch for an unservable model
        columns = [c for c, _ in sig] if sig else list(self.builder.columns)
        classes = None
        positive = None
        if hasattr(model, "predict_proba") and hasattr(model, "classes_") and self.spec.is_classification:
            from include.mlops.scores import check_classes, class_values
            from include.mlops.scores import positive_index as resolve_positive

            classes = class_values(model.classes_)
            check_classes(classes, self.spec)  # a model whose classes the spec does not name never serves
            positive = None if self.spec.is_multiclass else resolve_positive(classes, self.spec)
        lm = LoadedModel(
            self.name,
            str(version),
            model,
            columns,
            classes,
            positive,
            validator,
            run_id=mv.run_id or "",
            tags=dict(mv.tags or {}),
        )
        self._warm(lm, example)
        lm.loaded_at = time.time()
        lm.load_seconds = time.perf_counter() - t0
        log.info("loaded %s v%s in %.2fs (warmed, smoke test passed)", self.name, version, lm.load_seconds)
        return lm

    def _warm(self, lm: LoadedModel, example: Any) -> None:
        import pandas as pd

        probe = self.builder.frame(self.builder.probe_rows(64))
        if isinstance(example, pd.DataFrame) and set(lm.input_columns) <= set(example.columns):
            known = example[lm.input_columns].reset_index(drop=True)
        else:
            known = probe
        smoke_test(lm, known)
        smoke_test(lm, probe)
        for n in (1, 8, 32):  # the first calls of a fresh model are slow: pay for them here
            lm.score(probe.head(n))
