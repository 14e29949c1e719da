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
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response

from include.mlops.config import ServeConfig
from include.mlops.serving.bodies import dumps
from include.mlops.serving.service import Service


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
    return Response(dumps(obj), status_code=status, media_type="application/json")


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
