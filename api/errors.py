"""How a refused or failed request answers: a JSON body naming the field, never a traceback.

`errors_middleware` turns the application's refusals (LedgerError, a
marshmallow ValidationError, aiohttp's HTTP errors) into 4xx, the event
store being away into 503 with Retry-After, and anything else into a logged 500.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable

import psycopg
import psycopg_pool
from aiohttp import web
from eventsourcing import persistence as es_persistence
from marshmallow import ValidationError

from snapledger.domain.errors import LedgerError
from snapledger.domain.ownership import OwnedElsewhere

from . import auth
from .executor import RUNTIME, StoreDown

# The event store's and the views' database being away (down, restarting,
# pool exhausted while reconnecting): the client should retry, not report a bug.
STORE_UNAVAILABLE: tuple[type[BaseException], ...] = (
    es_persistence.OperationalError, es_persistence.InterfaceError, psycopg.OperationalError,
    psycopg.InterfaceError, psycopg_pool.PoolTimeout, sqlite3.OperationalError,
)


def error_response(status: int, message: str, code: str, headers: dict[str, str] | None = None,
                   **extra: object) -> web.Response:
    return web.json_response({"error": message, "code": code, **extra}, status=status, headers=headers)


@web.middleware
async def errors_middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                            ) -> web.StreamResponse:
    try:
        return await handler(request)
    except OwnedElsewhere as error:
        return owned_elsewhere(request, error)
    except LedgerError as error:
        if error.field:
            return error_response(error.status, error.message, error.code, field=error.field)
        return error_response(error.status, error.message, error.code)
    except ValidationError as error:
        fields = error.normalized_messages()  # type: ignore[no-untyped-call]  # marshmallow has no annotation
        first = next(iter(fields)) if isinstance(fields, dict) and fields else None
        return error_response(400, f"invalid request: {_describe(fields)}", "invalid", field=first,
                              fields=fields)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        # Keep what the exception says in headers (405's `Allow`, 413's limits), not its text body's type.
        headers = {k: v for k, v in error.headers.items() if k.lower() not in ("content-type", "content-length")}
        return error_response(error.status, error.reason, error.reason.lower().replace(" ", "_"), headers=headers)
    except ConnectionResetError:
        # The client went away mid-request (aiohttp cancels the read with this):
        # nothing is wrong with the server and nobody reads the answer. 499 as
        # nginx counts it, so /metrics and alerts on 5xx stay quiet.
        request.app[RUNTIME].log.info("client disconnected", path=request.path)
        return error_response(499, "client closed the request", "client_disconnected")
    except StoreDown as error:
        return error_response(503, f"the event store is unavailable ({error}); retry later", "unavailable",
                              headers={"Retry-After": "2"})
    except Exception as error:
        return _unexpected(request, error)


def _unexpected(request: web.Request, error: Exception) -> web.Response:
    if isinstance(error, STORE_UNAVAILABLE):
        request.app[RUNTIME].log.warning("event store unavailable", error=str(error))
        return error_response(503, "the event store is unavailable; retry later", "unavailable",
                              headers={"Retry-After": "2"})
    request.app[RUNTIME].log.exception("unhandled error", path=request.path)
    return error_response(500, "internal error", "internal")


def _describe(fields: object) -> str:
    if isinstance(fields, dict):
        return "; ".join(f"{k}: {_describe(v)}" for k, v in fields.items())
    if isinstance(fields, list):
        return ", ".join(_describe(v) for v in fields)
    return str(fields)


def owned_elsewhere(request: web.Request, error: OwnedElsewhere) -> web.Response:
    """409 naming each item's owner only to a caller who may read that deployment."""
    parts, owners = [], {}
    for item, owner in sorted(error.owners.items()):
        if auth.may(request, auth.Access.DEPLOYMENT, "GET", owner):
            parts.append(f"{error.kind} {item} belongs to deployment '{owner}'")
            owners[item] = owner
        else:
            parts.append(f"{error.kind} {item} belongs to another deployment")
    hint = ("; to move it, list it in move_disks or move_jobs of PUT /deployments/NAME "
            "(you must be allowed on both deployments)" if owners else "")
    return error_response(409, f"{'; '.join(parts)}{hint}", error.code, field=error.field, owners=owners)
