"""The aiohttp app factory: the native API over a built runtime.

Every route is declared with its access rule and its API docs in its
feature's module (api/routing.py); the factory collects the feature tables
listed in ROUTE_TABLES and gives the same declarations to the router, the
auth middleware and the OpenAPI document. A new feature's routes: a
`routes_<feature>.py` with a RouteTable, added to ROUTE_TABLES.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from snapledger.adapters.bootstrap import Runtime

from . import (auth, routes_audit, routes_deployments, routes_job_updates, routes_ops, routes_restores,
               routes_retention, routes_settings, routes_snapshots, routes_tasks)
from .access_log import access_log_middleware
from .access_scope import scoped_deployment, task_deployment
from .errors import errors_middleware
from .executor import RUNTIME
from .idempotency import idempotency_middleware
from .requests import MAX_BODY, input_guard_middleware, request_context_middleware
from .routing import ROUTES, Routes, RouteTable

ROUTE_TABLES: tuple[RouteTable, ...] = (
    routes_ops.routes, routes_settings.routes, routes_deployments.routes, routes_snapshots.routes,
    routes_tasks.routes, routes_retention.routes, routes_audit.routes, routes_job_updates.routes,
    routes_restores.routes,
)


def create_app(runtime: Runtime, start_background: bool = True) -> web.Application:
    """The aiohttp application over a built runtime. With `start_background`, the
    runtime's worker/projector roles run for the app's lifetime (cleanup_ctx)."""
    routes = Routes.collect(ROUTE_TABLES)
    app = web.Application(middlewares=[request_context_middleware, access_log_middleware,
                                       routes_ops.metrics_middleware, errors_middleware, input_guard_middleware,
                                       auth.auth_middleware(routes.access(), task_deployment, scoped_deployment),
                                       idempotency_middleware],
                          client_max_size=MAX_BODY)
    app[RUNTIME] = runtime
    app[ROUTES] = routes
    if runtime.config.auth_enabled:
        app[auth.AUTH] = auth.credential_store(runtime.config)
    routes.add_to(app)

    async def background(app: web.Application) -> AsyncIterator[None]:
        if start_background:
            runtime.start()
        yield
        await asyncio.get_running_loop().run_in_executor(None, runtime.close)

    app.cleanup_ctx.append(background)
    app.cleanup_ctx.append(routes_ops.ledger_collector)
    return app
