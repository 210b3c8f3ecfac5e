"""Operations surface: liveness, readiness, metrics, the API document, the service's identity."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from snapledger.adapters.metrics import HTTP_LATENCY, HTTP_REQUESTS, REGISTRY, LedgerCollector

from .access_log import route_of
from .auth import Access
from .executor import RUNTIME, run
from .openapi import OBJECT, build_spec
from .requests import actor
from .routing import ROUTES, Doc, RouteTable
from .version import VERSION

routes = RouteTable()


@routes.get("/health", Access.PUBLIC, Doc("Liveness", (200, OBJECT)))
async def health(request: web.Request) -> web.Response:
    """The process is up and serving (no dependency checked)."""
    return web.json_response({"status": "ok"})


@routes.get("/ready", Access.PUBLIC, Doc("Readiness: event store reachable, views not lagging", (200, OBJECT)))
async def ready(request: web.Request) -> web.Response:
    """Ready for traffic: the event store answers and the views are not too far behind."""
    runtime = request.app[RUNTIME]
    checks: dict[str, object] = {}
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


@routes.get("/metrics", Access.PUBLIC, Doc("Prometheus metrics", (200, None)))
async def metrics(request: web.Request) -> web.Response:
    body = await run(request, generate_latest, REGISTRY) if request.app[RUNTIME].health.healthy else \
        generate_latest(REGISTRY)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@routes.get("/openapi.json", Access.PUBLIC, Doc("This document", (200, OBJECT)))
async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI 3 document of this API."""
    runtime = request.app[RUNTIME]
    return web.json_response(build_spec(VERSION, request.app[ROUTES], cpis=sorted(runtime.ledger.cpi_names)))


@routes.get("/info", Access.READ, Doc("Service name, uuid, version, snapshot feature", (200, OBJECT)))
async def info(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    enabled = await run(request, runtime.ledger.settings.snapshots_enabled)
    return web.json_response({
        "name": runtime.config.director_name, "uuid": runtime.config.uuid, "version": VERSION,
        "user": actor(request), "cpi": runtime.ledger.default_cpi, "cpis": sorted(runtime.ledger.cpi_names),
        "features": {"snapshots": {"status": enabled}},
        "event_store": runtime.url.kind,
    })


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


async def ledger_collector(app: web.Application) -> AsyncIterator[None]:
    """The ledger-wide collector, registered for the app's lifetime (a cleanup context)."""
    collector = LedgerCollector(app[RUNTIME])
    REGISTRY.register(collector)
    yield
    REGISTRY.unregister(collector)
