"""Routes declared with what they need: each handler's access rule and API docs.

A feature module builds one `RouteTable` and declares every handler on it
with its access (`api/auth.py` Access) and its OpenAPI description; the app
factory collects the tables it is given (`api/app.py` ROUTE_TABLES) and hands
the same declarations to the auth middleware and to the OpenAPI document. A
handler cannot be declared without an access rule, and a test compares the
app's router with the declarations (tests/e2e/test_auth.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from aiohttp import web
from marshmallow import Schema

from snapledger.domain.json_types import JsonObject

from .auth import Access, Handler

RouteKey = tuple[str, str]  # (method, the route's canonical path)
JsonSchema = JsonObject


@dataclass(frozen=True)
class Doc:
    """A route's OpenAPI description: summary, success status and body, request
    body and query schemas; `also`: further success answers (a dry run's 200 next to a 202)."""

    summary: str
    ok: tuple[int, JsonSchema | None]  # None: a text body (the metrics)
    body: type[Schema] | None = None
    query: type[Schema] | None = None
    also: dict[int, JsonSchema] = field(default_factory=dict)


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    access: Access
    doc: Doc

    @property
    def key(self) -> RouteKey:
        return (self.method, self.path)


class RouteTable:
    """One feature's routes, declared next to their handlers:

        @routes.get("/deployments", Access.READ, Doc("Deployments", (200, ARRAY)))
        async def list_deployments(request): ...
    """

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def route(self, method: str, path: str, access: Access, doc: Doc) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.routes.append(Route(method, path, handler, access, doc))
            return handler

        return register

    def get(self, path: str, access: Access, doc: Doc) -> Callable[[Handler], Handler]:
        return self.route("GET", path, access, doc)

    def post(self, path: str, access: Access, doc: Doc) -> Callable[[Handler], Handler]:
        return self.route("POST", path, access, doc)

    def put(self, path: str, access: Access, doc: Doc) -> Callable[[Handler], Handler]:
        return self.route("PUT", path, access, doc)

    def delete(self, path: str, access: Access, doc: Doc) -> Callable[[Handler], Handler]:
        return self.route("DELETE", path, access, doc)


@dataclass(frozen=True)
class Routes:
    """Every route of an app, collected from its tables by the app factory."""

    all: tuple[Route, ...]

    @classmethod
    def collect(cls, tables: Iterable[RouteTable]) -> Routes:
        routes = tuple(route for table in tables for route in table.routes)
        keys = [route.key for route in routes]
        twice = sorted({key for key in keys if keys.count(key) > 1})
        if twice:
            raise ValueError(f"routes declared twice: {twice}")
        return cls(routes)

    def access(self) -> dict[RouteKey, Access]:
        return {route.key: route.access for route in self.all}

    def add_to(self, app: web.Application) -> None:
        app.add_routes([web.route(route.method, route.path, route.handler) for route in self.all])


ROUTES = web.AppKey("routes", Routes)
