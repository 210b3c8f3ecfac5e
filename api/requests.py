"""What every handler does with a request: read its path, query and body,
answer an accepted command; the request id and the input guard every route has.

Kept apart from the app factory (api/app.py) so that route modules, the
idempotency middleware and the Director dialect import these helpers without
importing the factory that imports them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from marshmallow import Schema, ValidationError

from snapledger.domain.errors import TaskNotFound
from snapledger.domain.idempotency import Idempotency
from snapledger.domain.names import CID_PATTERN, NAME_PATTERN, SELF_DEPLOYMENT, TASK_ID_RE

from . import auth, schemas
from .task_numbers import log_accepted, number_of
from snapledger.domain.task import Task

MAX_BODY = 1024 * 1024
MAX_JSON_DEPTH = 32  # our deepest body is 4 levels; deeper is an attack on the parser, not a request

_PATH_RULES = {
    name: schemas.WholeRegexp(pattern) for name, pattern in [
        ("deployment", NAME_PATTERN), ("name", NAME_PATTERN), ("job", NAME_PATTERN), ("index_or_id", NAME_PATTERN),
        ("cid", CID_PATTERN)]
}


def task_id_of(request: web.Request) -> str:
    """The path's task id; one the document's pattern refuses names no task (404, as an unknown one)."""
    task_id = request.match_info["task_id"]
    if not TASK_ID_RE.match(task_id):
        raise TaskNotFound(f"task '{task_id}' not found", field="task_id")
    return task_id


def path(request: web.Request, name: str) -> str:
    value = request.match_info[name]
    if name == "deployment" and value == SELF_DEPLOYMENT:
        return value  # reserved: self snapshots are listed and deleted like any deployment's
    try:
        _PATH_RULES[name](value)
    except ValidationError:
        raise ValidationError({name: [f"invalid {name} {value!r}"]}) from None
    return value


def parse_json(raw: bytes) -> Any:
    """A request body as JSON, or a ValidationError naming where it is wrong.

    Python's parser recurses per level (RecursionError at ~1,000), and a NUL
    in a string cannot be stored in PostgreSQL text: both are refused here,
    at the one place bodies are parsed (the handlers and the idempotency
    fingerprint)."""
    try:
        data = json.loads(raw or b"null")
    except RecursionError:
        raise ValidationError({"body": [f"nested deeper than {MAX_JSON_DEPTH} levels"]}) from None
    except ValueError:
        raise ValidationError({"body": ["not valid JSON"]}) from None
    _check_json(data)
    return data


def _check_json(data: Any) -> None:
    # Iterative: a recursive walk would hit the recursion limit it guards against.
    stack: list[tuple[Any, str, int]] = [(data, "body", 0)]
    while stack:
        value, where, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise ValidationError({"body": [f"nested deeper than {MAX_JSON_DEPTH} levels"]})
        if isinstance(value, str):
            if "\x00" in value:
                raise ValidationError({where: ["must not contain NUL characters"]})
        elif isinstance(value, dict):
            for key, item in value.items():
                if "\x00" in key:
                    raise ValidationError({where: ["keys must not contain NUL characters"]})
                stack.append((item, key if depth == 0 else f"{where}.{key}", depth + 1))
        elif isinstance(value, list):
            stack.extend((item, where, depth + 1) for item in value)


async def body(request: web.Request, schema: Schema) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY, actual_size=request.content_length)
    data = parse_json(await request.read())
    if not isinstance(data, dict):
        raise ValidationError({"body": ["must be a JSON object"]})
    loaded: dict[str, Any] = schema.load(data)
    return loaded


def query(request: web.Request, schema: Schema) -> dict[str, Any]:
    loaded: dict[str, Any] = schema.load(dict(request.query))
    return loaded


def actor(request: web.Request) -> str:
    name: str = request.get(auth.USER, "anonymous")
    return name


# The request's Idempotency-Key, as the middleware (api/idempotency.py) accepted it.
IDEMPOTENCY = web.RequestKey("idempotency", Idempotency)


def idempotency_of(request: web.Request) -> Idempotency | None:
    """What a task-creating command is given: the key is saved with its task, in one transaction."""
    return request.get(IDEMPOTENCY)


def accepted(task: Task) -> web.Response:
    log_accepted(task)
    return web.json_response({"task_id": str(task.id), "number": number_of(task), "state": task.state}, status=202,
                             headers={"Location": f"/tasks/{task.id}"})


@web.middleware
async def request_context_middleware(request: web.Request,
                                     handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                                     ) -> web.StreamResponse:
    """A request id on every log line of the request (taken from X-Request-Id when sane)."""
    incoming = request.headers.get("X-Request-Id", "")
    request_id = incoming if 0 < len(incoming) <= 64 and incoming.replace("-", "").isalnum() else uuid.uuid4().hex
    with structlog.contextvars.bound_contextvars(request_id=request_id):
        response = await handler(request)
    response.headers["X-Request-Id"] = request_id
    return response


@web.middleware
async def input_guard_middleware(request: web.Request,
                                 handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                                 ) -> web.StreamResponse:
    """No NUL in the path or the query, whatever the route: PostgreSQL text
    cannot hold it (psycopg.DataError, a 500) and no name, id or filter has one."""
    if "\x00" in request.path:
        field = next((name for name, value in request.match_info.items() if "\x00" in value), "path")
        raise ValidationError({field: ["must not contain NUL characters"]})
    for name, value in request.query.items():
        if "\x00" in name or "\x00" in value:
            raise ValidationError({name.replace("\x00", "") or "query": ["must not contain NUL characters"]})
    return await handler(request)
