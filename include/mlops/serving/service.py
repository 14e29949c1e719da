"""What the scoring routes share, and the path of one scoring request through it.

`Service` holds the model manager, the batcher, the online-store lookup and the prediction log,
started and stopped with the app (`app`). A request is read, parsed and validated, routed to the
variant that answers (`routing`), scored in a micro-batch (`batcher`), answered and counted; a
failure becomes the status and field errors the HTTP contract in `app` describes.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import logging
import re
import time
import uuid
from typing import Any

from fastapi import Request, Response

from include.mlops.config import ServeConfig
from include.mlops.serving.batcher import Batcher, Job, ModelError, Task
from include.mlops.serving.bodies import dumps, parse_csv, parse_json, read_body
from include.mlops.serving.config import PINNED, SYNTHETIC_HEADER, VERSION_HEADER
from include.mlops.serving.feature_lookup import FeatureLookup, FeatureStoreUnavailable
from include.mlops.serving.routing import CHALLENGER, CHAMPION, choose, splits
from include.mlops.serving.validation import (
    RequestTooLarge,
    ValidationFailed,
    error,
    invocation_records,
    predict_records,
)

log = logging.getLogger("include.mlops.serving")
_RID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class NotReady(Exception):
    """No champion is loaded yet (503)."""


class PinRefused(Exception):
    """A request named a version it may not have (403) or that is not in memory (409)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class UnsupportedMediaType(Exception):
    """/invocations got a content type it does not speak (415, as MLflow's server answers)."""


class Service:
    """Everything the routes share; built in the app's lifespan, torn down on shutdown."""

    def __init__(self, cfg: ServeConfig) -> None:
        self.cfg = cfg
        self.lookup_ready = False

    async def start(self) -> None:
        from include.mlops.config import get_settings, quiet_telemetry
        from include.mlops.serving.frames import FrameBuilder
        from include.mlops.serving.metrics import Metrics
        from include.mlops.serving.models import ModelManager
        from include.mlops.serving.predlog import PredictionLog
        from include.mlops.spec import load_spec
        from include.mlops.storage import ObjectStore

        quiet_telemetry()
        cfg = self.cfg
        self.settings = get_settings()
        self.spec = load_spec(cfg.spec_name or self.settings.dataset)
        self.name = self.spec.model_name
        self.metrics = Metrics()
        self.builder = FrameBuilder(self.spec)
        self.predlog = None
        if cfg.prediction_log:
            store = ObjectStore(self.settings.store_uri, self.settings.s3_endpoint_url)
            self.predlog = PredictionLog(
                store,
                self.spec,
                self.name,
                flush_seconds=cfg.log_flush_seconds,
                max_rows=cfg.log_max_rows,
                metrics=self.metrics,
                builder=self.builder,
            )
            self.predlog.start()
        self.lookup = FeatureLookup(self.settings, self.spec)
        self.batcher = Batcher(
            self.spec,
            self.builder,
            self.lookup,
            self.predlog,
            self.metrics,
            max_rows=cfg.batch_max_rows,
            wait_ms=cfg.batch_wait_ms,
            inline=cfg.inline,
        )
        await self.batcher.start()
        self.manager = ModelManager(self.spec, self.settings.tracking_uri, cfg, self.builder, self.metrics)
        self.manager.start()
        self._warm = self.batcher.run_on_scorer(self._warm_lookup)
        log.info(
            "scoring service for %s (spec %s) starting; prediction log %s",
            self.name,
            self.spec.path,
            "on" if self.predlog else "off",
        )

    def _warm_lookup(self) -> None:
        try:
            self.lookup.warm()
        except Exception as exc:  # entity requests will answer 503 until the store is reachable
            log.warning("online store not reachable yet: %s", exc)
        gc.freeze()  # see ModelManager._get: keep the libraries out of the cyclic GC's full passes
        self.lookup_ready = True

    async def stop(self) -> None:
        await self.batcher.stop()
        if self.predlog is not None:
            await asyncio.to_thread(self.predlog.close)
        await asyncio.to_thread(self.manager.stop)
        log.info("scoring service stopped; prediction log flushed")

    # -- status -------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        st = self.manager.state
        ready = st is not None and self.lookup_ready
        registry = self.manager.registry.describe()
        return {
            "status": "ready" if ready else "loading",
            "degraded": registry["status"] == "degraded",
            "registry": registry,
            "refused": dict(self.manager.refused),
            "model_name": self.name,
            "dataset": self.spec.name,
            "strategy": st.strategy if st else None,
            "canary_share": st.canary_share if st else None,
            "champion": st.champion.describe() if st else None,
            "challenger": st.challenger.describe() if st and st.challenger else None,
            "standby": list(st.standby) if st else [],
            "aliases": st.aliases if st else {},
            "since": st.since if st else None,
            "pending": self.manager.pending,
            "registry_error": self.manager.last_error,
            "prediction_log": self.predlog is not None,
        }

    def authorized(self, request: Request) -> bool:
        token = self.cfg.admin_token
        if not token:
            return False
        given = request.headers.get("x-admin-token") or ""
        auth = request.headers.get("authorization") or ""
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        return hmac.compare_digest(given.encode(), token.encode())

    # -- scoring ------------------------------------------------------------------------------
    def _pinned(self, request: Request) -> Any:
        """The in-memory version a request names in VERSION_HEADER (admin only), or None."""
        version = request.headers.get(VERSION_HEADER)
        if not version:
            return None
        if not self.authorized(request):
            raise PinRefused(403, f"{VERSION_HEADER} needs the admin token (MLOPS_ADMIN_TOKEN)")
        model = self.manager.loaded(version)
        if model is None:
            raise PinRefused(409, f"v{version} is not in memory here (serving, standby or recently served)")
        return model

    def _route(self, items: list[Any], state: Any, rid: str, loc: tuple[Any, ...], pinned: Any = None) -> list[Task]:
        if pinned is not None:  # check traffic for one version: no canary split, no shadow
            multi = len(items) > 1
            return [
                Task(
                    it.entity,
                    it.row,
                    (*loc, it.index),
                    f"{rid}-{it.index}" if multi else rid,
                    PINNED,
                    pinned,
                    None,
                    it.event_ts,
                )
                for it in items
            ]
        has_challenger = state.challenger is not None
        shadow = state.challenger if state.strategy == "shadow" else None
        split = splits(state.strategy) and has_challenger  # canary or A/B test: sticky by entity
        multi = len(items) > 1
        tasks = []
        for it in items:
            rid_i = f"{rid}-{it.index}" if multi else rid
            variant = (
                choose(state.strategy, state.canary_share, has_challenger, it.entity, rid_i) if split else CHAMPION
            )
            model = state.challenger if variant == CHALLENGER else state.champion
            tasks.append(Task(it.entity, it.row, (*loc, it.index), rid_i, variant, model, shadow, it.event_ts))
        return tasks

    async def _admit(self, request: Request, endpoint: str, rid: str) -> list[Task]:
        """Read, parse, validate and route one request's records (the tasks to score)."""
        self.batcher.arriving += 1
        try:
            body = await read_body(request, self.cfg.max_body_bytes)
            if endpoint == "predict":
                records = predict_records(parse_json(body), self.spec.entity_key)
                loc: tuple[Any, ...] = ("body", "records")
            else:
                ctype = (request.headers.get("content-type") or "application/json").split(";")[0].strip().lower()
                if ctype == "text/csv":
                    text_key = self.spec.entity_key if self.spec.entity_is_string else None
                    records, loc = parse_csv(body, text_key), ("body", "csv")
                elif ctype in ("application/json", ""):
                    records, fmt = invocation_records(parse_json(body))
                    loc = ("body", fmt)
                else:
                    raise UnsupportedMediaType(f"content type {ctype!r}: use application/json or text/csv")
            if len(records) > self.cfg.max_records:
                raise RequestTooLarge(f"{len(records)} records exceed the limit of {self.cfg.max_records} per request")
            state = self.manager.state
            if state is None:
                raise NotReady("no model loaded yet")
            pinned = self._pinned(request)
            items = (pinned or state.champion).validator.check(records, loc)
            return self._route(items, state, rid, loc, pinned)
        finally:
            self.batcher.arriving -= 1

    async def handle(self, request: Request, endpoint: str) -> Response:
        t0 = time.perf_counter()
        ts = time.time()
        rid = request.headers.get("x-request-id") or ""
        if not _RID.match(rid):
            rid = uuid.uuid4().hex
        headers = {"X-Request-ID": rid}
        status, kind, labels = 200, "", []
        tasks: list[Task] = []
        try:
            tasks = await self._admit(request, endpoint, rid)
            synthetic = request.headers.get(SYNTHETIC_HEADER, "").lower() == "synthetic"
            results = await self.batcher.submit(Job(tasks, ts, log=not synthetic))
            labels = list(dict.fromkeys((r[3].version, r[4]) for r in results))
            if endpoint == "predict":
                content = self._predict_body(rid, tasks, results)
            else:
                content = self._invocations_body(results)
                headers["X-Model-Name"] = self.name
                headers["X-Model-Version"] = ",".join(dict.fromkeys(v for v, _ in labels))
                headers["X-Model-Variant"] = ",".join(dict.fromkeys(k for _, k in labels))
            return Response(content, media_type="application/json", headers=headers)
        except Exception as exc:
            status, kind, errors, message = self._failure(exc, endpoint)
            labels = list(getattr(exc, "failed", ())) or list(
                dict.fromkeys((t.model.version, t.variant) for t in tasks)
            )
            return self._error(status, errors, message, headers, endpoint)
        finally:
            self._count(endpoint, status, kind, labels, time.perf_counter() - t0)

    @staticmethod
    def _failure(exc: Exception, endpoint: str) -> tuple[int, str, list[dict[str, Any]], str]:
        """(HTTP status, error kind for the metrics, field errors, message) of a failed request."""
        msg = str(exc)
        if isinstance(exc, ValidationFailed):
            return 422, exc.errors[0]["type"] if exc.errors else "validation", exc.errors, msg
        if isinstance(exc, RequestTooLarge):
            return 413, "too_large", [error(("body",), msg, "value_error.too_large")], msg
        if isinstance(exc, UnsupportedMediaType):
            return 415, "media_type", [error(("header", "content-type"), msg, "value_error.media_type")], msg
        if isinstance(exc, PinRefused):
            return exc.status, "pinned_version", [], msg
        if isinstance(exc, NotReady | FeatureStoreUnavailable):
            return 503, "not_ready" if isinstance(exc, NotReady) else "feature_store", [], msg
        if isinstance(exc, TimeoutError):
            return 504, "timeout", [], "scoring timed out"
        if isinstance(exc, ModelError):
            return 500, "model_error", [], msg
        log.error("unexpected error on %s", endpoint, exc_info=exc)  # a bug: say so, keep serving
        return 500, "internal", [], f"internal error: {type(exc).__name__}"

    def _count(self, endpoint: str, status: int, kind: str, labels: list[tuple[str, str]], elapsed: float) -> None:
        """Requests and latency per (version, variant) that answered, or was routed and failed;
        a request that failed before routing counts with empty labels."""
        m = self.metrics
        for version, variant in labels or ([("", "")] if status != 200 else []):  # 200 unrouted: cancelled
            m.requests.labels(endpoint=endpoint, status=str(status), model_version=version, variant=variant).inc()
            m.latency.labels(endpoint=endpoint, model_version=version, variant=variant).observe(elapsed)
        if status != 200:
            m.errors.labels(endpoint=endpoint, kind=kind).inc()

    def _predict_body(self, rid: str, tasks: list[Task], results: list[tuple[Any, ...]]) -> bytes:
        """Per record: `prediction` (a class value such as "yes", 1 or True, or the regression
        value), `score` (positive-class probability for binary, the predicted class's for
        multiclass: `include.mlops.scores`) and `probabilities` ({class as text: probability})."""
        key = self.spec.entity_key
        preds = []
        for t, (p, s, pr, model, variant) in zip(tasks, results, strict=True):
            probs = None
            if pr is not None and model.classes is not None:
                probs = {str(c): v for c, v in zip(model.classes, pr, strict=True)}
            preds.append(
                {
                    "request_id": t.request_id,
                    key: t.entity,
                    "prediction": p,
                    "score": s,
                    "probabilities": probs,
                    "model_name": self.name,
                    "model_version": model.version,
                    "variant": variant,
                }
            )
        return dumps({"request_id": rid, "model_name": self.name, "predictions": preds})

    @staticmethod
    def _invocations_body(results: list[tuple[Any, ...]]) -> bytes:
        # what `mlflow models serve` answers for the same model: class probabilities
        # (pyfunc_predict_fn="predict_proba") or the regression values
        return dumps({"predictions": [r[2] if r[2] is not None else r[0] for r in results]})

    def _error(
        self, status: int, errors: list[dict[str, Any]], message: str, headers: dict[str, str], endpoint: str
    ) -> Response:
        body: dict[str, Any] = {"detail": errors or message, "message": message}
        if endpoint == "invocations":  # what MLflow clients look for
            body["error_code"] = "BAD_REQUEST" if status < 500 else "INTERNAL_ERROR"
        return Response(dumps(body), status_code=status, media_type="application/json", headers=headers)
