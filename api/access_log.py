"""The access log: one structlog line per HTTP request.

Fields: method, route (the route's pattern, so lines group by endpoint; the
concrete path too), status, duration_ms, user (the authenticated name) and
request_id (bound by the request-context middleware). A refused request
(401/403) names the user it tried, from the Authorization header, never the
secret; 5xx lines are errors, 4xx warnings, the rest info."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from . import auth
from .task_numbers import TASK_ID

log = structlog.get_logger("snapledger.access")


def tried_user(request: web.Request) -> str | None:
    """The user name a request's credentials name (Basic user, or a token's name part)."""
    header = request.headers.get("Authorization")
    parsed = auth.parse_authorization(header) if header else None
    return parsed[0][:64] if parsed else None  # attacker-chosen: bounded


def route_of(request: web.Request) -> str:
    """The route's template (`/tasks/{task_id}`), as the access log and the
    metrics both name it: bounded, unlike the path."""
    resource = getattr(request.match_info.route, "resource", None)
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def access_log_middleware(request: web.Request,
                                handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                                ) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as error:
        status = error.status
        raise
    finally:
        fields = {
            "method": request.method, "route": route_of(request),
            "path": request.path, "status": status,
            "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            "user": request.get(auth.USER), "remote": request.remote,
        }
        if status in (401, 403):
            fields["user_tried"] = tried_user(request)
        if request.get(TASK_ID):  # /tasks/N and the like: the task's id (and, by the logging set-up, its number)
            fields["task_id"] = request[TASK_ID]
        emit = log.error if status >= 500 else log.warning if status >= 400 else log.info
        emit("request", **fields)
