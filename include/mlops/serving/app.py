"""The HTTP surface of the scoring service.

| route | what |
|---|---|
| POST /predict | `{"records": [...]}` (feature rows, or `{"<entity key>": id}` for online-store features), `{"entity_ids": [...]}`, or one record |
| POST /invocations | MLflow's scoring protocol: `dataframe_split`, `dataframe_records`, `instances`, `inputs` (JSON) or CSV |
| GET /health, /ping, /ready | liveness; MLflow-style ping and readiness (200 only once a champion is loaded) |
| GET /ready while the registry fails or hangs | still 200 once a champion is loaded, with `"registry": {"status": "degraded", "error", "since", ...}` and `"degraded": true` (/health adds the same `registry` block) |
| GET /metrics | Prometheus |
| POST /admin/reload, /admin/flush | re-read the registry now / write the prediction log now (bearer MLOPS_ADMIN_TOKEN) |

With the admin token, header `X-MLOps-Model-Version: <v>` makes a version already in memory
(serving, standby or recently served) answer, variant "pinned" (409 if it is not in memory): the
deploy check measures the new and the current version side by side this way.

Entity ids come in the spec's key type: a JSON string for `entity.dtype: string`, a JSON integer
for int64 (a numeric string such as "42" is refused, not coerced); the wrong type is a 422 naming
the key. Bad input is a 422 with field-level errors (`{"detail": [{"loc", "msg", "type"}]}`), an
oversized body a 413, never a 500. Handlers are plain `Request` -> `Response` functions: at a
few milliseconds per model call, pydantic models per request would be a visible tax.

A registry that errors or hangs does not make the service unready: the models in memory keep
answering /predict, so /ready stays 200 (a load balancer keeps routing to it) and says what is
wrong instead: `registry.status` is `degraded` from the first failed or timed-out poll (each read
waits at most MLOPS_SERVE_REGISTRY_TIMEOUT seconds), with the last error, `since` (UTC) and the
last good read; alias moves are not followed until it answers again. A model version whose
artifact is refused (a format that can run code, or a type outside the allowlist:
`include.mlops.model_io`) is listed under `refused` with the reason, and never serves.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import json
import logging
import re
import time
import uuid
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response

from include.mlops.config import ServeConfig
from include.mlops.serving.batcher import Batcher, FeatureLookup, FeatureStoreUnavailable, Job, ModelError, Task
from include.mlops.serving.config import PINNED, SYNTHETIC_HEADER, VERSION_HEADER
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


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), default=str).encode()


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refusing more than `limit` bytes, announced or not."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise RequestTooLarge(f"body of {declared} bytes exceeds the limit of {limit}")
        except ValueError:
            raise ValidationFailed([error(("header", "content-length"), "not an integer", "value_error")]) from None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(body: bytes) -> Any:
    if not body:
        raise ValidationFailed([error(("body",), "empty body: expected JSON", "value_error.missing")])
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise ValidationFailed([error(("body",), f"invalid JSON: {exc}"[:300], "value_error.jsondecode")]) from None


def parse_csv(body: bytes, text_key: str | None = None) -> list[dict[str, Any]]:
    """CSV rows as records; `text_key` (a string entity key) is read as text, so "00123" stays
    "00123" and an empty cell means no id."""
    import io

    import pandas as pd

    try:
        df = pd.read_csv(io.BytesIO(body), dtype={text_key: str} if text_key else None)
    except Exception as exc:
        raise ValidationFailed([error(("body",), f"invalid CSV: {exc}"[:300], "value_error.csv")]) from None
    if text_key in df.columns:
        df[text_key] = df[text_key].astype(object).where(df[text_key].notna(), None)
    return df.to_dict("records")


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
        return _dumps({"request_id": rid, "model_name": self.name, "predictions": preds})

    @staticmethod
    def _invocations_body(results: list[tuple[Any, ...]]) -> bytes:
        # what `mlflow models serve` answers for the same model: class probabilities
        # (pyfunc_predict_fn="predict_proba") or the regression values
        return _dumps({"predictions": [r[2] if r[2] is not None else r[0] for r in results]})

    def _error(
        self, status: int, errors: list[dict[str, Any]], message: str, headers: dict[str, str], endpoint: str
    ) -> Response:
        body: dict[str, Any] = {"detail": errors or message, "message": message}
        if endpoint == "invocations":  # what MLflow clients look for
            body["error_code"] = "BAD_REQUEST" if status < 500 else "INTERNAL_ERROR"
        return Response(_dumps(body), status_code=status, media_type="application/json", headers=headers)


def create_app(cfg: ServeConfig | None = None) -> FastAPI:
    """The scoring service's app: scoring routes, probes and metrics, and the admin routes, around
    one `Service` started and stopped with the app."""
    cfg = cfg or ServeConfig.from_env()
    svc = Service(cfg)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        await svc.start()
        try:
            yield
        finally:
            await svc.stop()

    app = FastAPI(title="MLOps scoring service", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.svc = svc
    _add_scoring_routes(app, svc)
    _add_probe_routes(app, svc)
    _add_admin_routes(app, svc, cfg)
    return app


def _json(obj: Any, status: int = 200) -> Response:
    return Response(_dumps(obj), status_code=status, media_type="application/json")


def _add_scoring_routes(app: FastAPI, svc: Service) -> None:
    """/predict (the service's own protocol) and /invocations (MLflow's)."""

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        """Score feature rows or entity ids; each answer names its model version and variant."""
        return await svc.handle(request, "predict")

    @app.post("/invocations")
    async def invocations(request: Request) -> Response:
        """MLflow's scoring protocol, answered as `mlflow models serve` would."""
        return await svc.handle(request, "invocations")


def _add_probe_routes(app: FastAPI, svc: Service) -> None:
    """Liveness, readiness, MLflow's /ping and /version, and the Prometheus /metrics."""

    @app.get("/health")
    async def health() -> Response:
        """Liveness: the process answers (and says so when the registry is degraded)."""
        registry = svc.manager.registry.describe() if hasattr(svc, "manager") else None
        if registry and registry["status"] == "degraded":
            return _json({"status": "ok", "registry": registry})
        return _json({"status": "ok"})

    @app.get("/ready")
    async def ready() -> Response:
        """Readiness: 200 only once a champion is loaded (and says which versions serve); a
        degraded registry keeps it 200 and is reported in `registry`/`degraded`."""
        st = svc.status()
        return _json(st, 200 if st["status"] == "ready" else 503)

    @app.get("/ping")
    async def ping() -> Response:
        """MLflow's health check: 200 once the model is loaded."""
        return Response("\n", status_code=200 if svc.manager.state is not None else 503, media_type="application/json")

    @app.get("/version")
    async def version() -> Response:
        from importlib.metadata import version as v

        return Response(v("mlflow"), media_type="application/json")

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus exposition."""
        content, ctype = svc.metrics.render()
        return Response(content, media_type=ctype)


def _add_admin_routes(app: FastAPI, svc: Service, cfg: ServeConfig) -> None:
    """/admin/reload and /admin/flush, both behind the admin token."""

    def refused() -> Response:
        return _json({"detail": "admin token required (MLOPS_ADMIN_TOKEN)"}, 401 if cfg.admin_token else 403)

    @app.post("/admin/reload")
    async def reload(request: Request, wait: bool = True, timeout: float = 120.0) -> Response:
        """Re-read the registry now (instead of at the next poll); with wait, return once done."""
        if not svc.authorized(request):
            return refused()
        ticket = svc.manager.request_refresh()
        if wait and not await asyncio.to_thread(svc.manager.wait_refresh, ticket, timeout):
            return _json({"detail": f"registry refresh not finished within {timeout}s", **svc.status()}, 504)
        return _json(svc.status())

    @app.post("/admin/flush")
    async def flush(request: Request) -> Response:
        """Write the prediction log's buffer now."""
        if not svc.authorized(request):
            return refused()
        if svc.predlog is None:
            return _json({"flushed": False, "detail": "prediction log is off"})
        await svc.batcher.run_on_scorer(lambda: None)  # shadow scoring queued before this call logs first
        ok = await asyncio.to_thread(svc.predlog.flush)
        return _json({"flushed": ok, "objects": len(svc.predlog.written)}, 200 if ok else 504)
