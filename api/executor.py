"""The runtime an app serves, and its calls run off the event loop.

The `eventsourcing` library is synchronous, so every call of the application
goes through the runtime's bounded executor (`run`); the event loop never
blocks on the database. A module of its own: the route modules, the request
helpers, task numbers and the Director dialect all need it, and it needs none
of them.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from aiohttp import web

from snapledger.adapters.bootstrap import Runtime

P = ParamSpec("P")
T = TypeVar("T")

RUNTIME = web.AppKey("runtime", Runtime)


class StoreDown(Exception):
    """The database is known to be unreachable: answer 503 at once."""


async def run(request: web.Request, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    runtime = request.app[RUNTIME]
    if not runtime.health.healthy:
        raise StoreDown(runtime.health.reason)
    loop = asyncio.get_running_loop()
    # Carry the request's log context (request id) into the executor thread.
    context = contextvars.copy_context()
    return await loop.run_in_executor(runtime.executor, functools.partial(context.run, fn, *args, **kwargs))
