"""The audit log over HTTP: every event, filtered, paged by position."""

from __future__ import annotations

from aiohttp import web

from snapledger.projections.events import iso

from . import schemas
from .app import RUNTIME, query, run
from .auth import Access, declare
from .openapi import ARRAY, document

routes = web.RouteTableDef()
declare("GET", "/events", Access.READ)
document("GET", "/events", "The event log in order, filtered; page with `after` = the last position seen",
         (200, ARRAY), query=schemas.EventQuerySchema)


@routes.get("/events")
async def events(request: web.Request) -> web.Response:
    params = query(request, schemas.EventQuerySchema())
    for bound in ("since", "until"):
        if bound in params:
            params[bound] = iso(params[bound])
    after, limit = params.pop("after"), params.pop("limit")
    rows = await run(request, request.app[RUNTIME].queries.events, params, after, limit)
    return web.json_response(rows)
