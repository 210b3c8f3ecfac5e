"""Route declarations (api/routing.py): collected per app, never twice for one route."""

from __future__ import annotations

import pytest
from aiohttp import web

from snapledger.api.app import ROUTE_TABLES
from snapledger.api.auth import Access
from snapledger.api.routing import Doc, Routes, RouteTable


async def _handler(request: web.Request) -> web.Response:
    return web.json_response({})


def test_a_route_declared_twice_is_refused() -> None:
    # aiohttp would serve the first and the second declaration's access rule would be the one checked.
    first, second = RouteTable(), RouteTable()
    first.get("/things", Access.READ, Doc("Things", (200, None)))(_handler)
    second.get("/things", Access.PUBLIC, Doc("Things, again", (200, None)))(_handler)
    with pytest.raises(ValueError, match="/things"):
        Routes.collect([first, second])


def test_the_apps_tables_declare_each_route_once_with_a_summary() -> None:
    routes = Routes.collect(ROUTE_TABLES)
    assert len(routes.access()) == len(routes.all) > 30
    assert [route.key for route in routes.all if not route.doc.summary] == []
