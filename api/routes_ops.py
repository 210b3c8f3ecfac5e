"""Operations surface: liveness, readiness, metrics."""

from __future__ import annotations

import time
from typing import Any, Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from snapledger.adapters.metrics import HTTP_LATENCY, HTTP_REQUESTS, REGISTRY, LedgerCollector

from .access_log import route_of
from .app import RUNTIME, run
from .version import VERSION

routes = web.RouteTableDef()
COLLECTOR = web.AppKey("ledger_collector", LedgerCollector)


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    """The process is up and serving (no dependency checked)."""
    return web.json_response({"status": "ok"})


@routes.get("/ready")
async def ready(request: web.Request) -> web.Response:
    """Ready for traffic: the event store answers and the views are not too far behind."""
    runtime = request.app[RUNTIME]
    checks: dict[str, Any] = {}
    try:
        head = await run(request, runtime.ledger.store.recorder.max_notification_id) or 0
        positions = await run(request, runtime.projector.positions)
    except Exception as error:  # any failure here means: not ready
        return web.json_response({"status": "unavailable", "event_store": f"unreachable: {error}"}, status=503)
    checks["event_store"] = "ok"
    lag = {view: max(head - position, 0) for view, position in positions.items()}
    checks["projection_lag_events"] = lag
    behind = {v: n for v, n in lag.items() if n > runtime.config.ready_max_lag}
    if behind:
        return web.json_response({"status": "lagging", **checks, "max_lag": runtime.config.ready_max_lag},
                                 status=503)
    return web.json_response({"status": "ready", **checks})


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    body = await run(request, generate_latest, REGISTRY) if request.app[RUNTIME].health.healthy else \
        generate_latest(REGISTRY)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@web.middleware
async def metrics_middleware(request: web.Request,
                             handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    started = time.perf_counter()
    route = route_of(request)
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as error:
        status = error.status
        raise
    finally:
        HTTP_REQUESTS.labels(request.method, route, str(status)).inc()
        HTTP_LATENCY.labels(request.method, route).observe(time.perf_counter() - started)


def install(app: web.Application) -> None:
    """The ledger-wide collector, registered once per app (and removed with it)."""
    collector = LedgerCollector(app[RUNTIME])
    REGISTRY.register(collector)
    app[COLLECTOR] = collector

    async def unregister(app: web.Application) -> None:
        REGISTRY.unregister(app[COLLECTOR])

    app.on_cleanup.append(unregister)


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI 3 document of this API."""
    from .openapi import build_spec

    return web.json_response(build_spec(VERSION, cpis=sorted(request.app[RUNTIME].ledger.cpi_names)))
