"""aiohttp app factory and handlers: validate, call the application, serialise.

The `eventsourcing` library is synchronous, so every call goes through the
runtime's bounded executor; the event loop never blocks on the database.
"""

from __future__ import annotations

import asyncio
import contextvars
import uuid
import functools
import json
from typing import Any, Awaitable, Callable

import sqlite3

import psycopg
import psycopg_pool
import structlog
from aiohttp import web
from eventsourcing import persistence as es_persistence
from marshmallow import ValidationError

from snapledger.adapters.wiring import Runtime
from snapledger.domain.errors import LedgerError
from snapledger.domain.ownership import OwnedElsewhere
from snapledger.domain.names import CID_PATTERN, NAME_PATTERN, SELF_DEPLOYMENT, TASK_ID_RE
from snapledger.domain.settings import SCHEDULE_NAMES
from snapledger.projections.events import iso

from . import auth, schemas
from .version import VERSION

MAX_BODY = 1024 * 1024
RUNTIME = web.AppKey("runtime", Runtime)

_PATH_RULES = {
    name: schemas.WholeRegexp(pattern) for name, pattern in [
        ("deployment", NAME_PATTERN), ("name", NAME_PATTERN), ("job", NAME_PATTERN), ("index_or_id", NAME_PATTERN),
        ("cid", CID_PATTERN)]
}


def error_response(status: int, message: str, code: str, headers: dict[str, str] | None = None,
                   **extra: Any) -> web.Response:
    return web.json_response({"error": message, "code": code, **extra}, status=status, headers=headers)


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
async def errors_middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    try:
        return await handler(request)
    except OwnedElsewhere as error:
        return owned_elsewhere(request, error)
    except LedgerError as error:
        extra = {"field": error.field} if error.field else {}
        return error_response(error.status, error.message, error.code, **extra)
    except ValidationError as error:
        fields = error.normalized_messages()
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
        if isinstance(error, STORE_UNAVAILABLE):
            request.app[RUNTIME].log.warning("event store unavailable", error=str(error))
            return error_response(503, "the event store is unavailable; retry later", "unavailable",
                                  headers={"Retry-After": "2"})
        request.app[RUNTIME].log.exception("unhandled error", path=request.path)
        return error_response(500, "internal error", "internal")


# The event store's and the views' database being away (down, restarting,
# pool exhausted while reconnecting): the client should retry, not report a bug.
STORE_UNAVAILABLE: tuple[type[BaseException], ...] = (
    es_persistence.OperationalError, es_persistence.InterfaceError, psycopg.OperationalError,
    psycopg.InterfaceError, psycopg_pool.PoolTimeout, sqlite3.OperationalError,
)


def _describe(fields: Any) -> str:
    if isinstance(fields, dict):
        return "; ".join(f"{k}: {_describe(v)}" for k, v in fields.items())
    if isinstance(fields, list):
        return ", ".join(_describe(v) for v in fields)
    return str(fields)


# Helpers -----------------------------------------------------------------------

class StoreDown(Exception):
    """The database is known to be unreachable: answer 503 at once."""


async def run(request: web.Request, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    runtime = request.app[RUNTIME]
    if not runtime.health.healthy:
        raise StoreDown(runtime.health.reason)
    loop = asyncio.get_running_loop()
    # Carry the request's log context (request id) into the executor thread.
    context = contextvars.copy_context()
    return await loop.run_in_executor(runtime.executor, functools.partial(context.run, fn, *args, **kwargs))


def task_id_of(request: web.Request) -> str:
    """The path's task id; one the document's pattern refuses names no task (404, as an unknown one)."""
    from snapledger.domain.errors import TaskNotFound

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


MAX_JSON_DEPTH = 32  # our deepest body is 4 levels; deeper is an attack on the parser, not a request


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


async def body(request: web.Request, schema: Any) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY, actual_size=request.content_length)
    data = parse_json(await request.read())
    if not isinstance(data, dict):
        raise ValidationError({"body": ["must be a JSON object"]})
    return schema.load(data)


def query(request: web.Request, schema: Any) -> dict[str, Any]:
    return schema.load(dict(request.query))


def actor(request: web.Request) -> str:
    return request.get(auth.USER, "anonymous")


def accepted(task: Any) -> web.Response:
    from .task_numbers import log_accepted, number_of

    log_accepted(task)
    return web.json_response({"task_id": str(task.id), "number": number_of(task), "state": task.state}, status=202,
                             headers={"Location": f"/tasks/{task.id}"})


def task_from_aggregate(task: Any) -> dict[str, Any]:
    """Read-your-writes for a task the views have not caught up with yet.

    A task is reported finished only once the views show it: the projector
    writes the listing before the tasks view in one transaction, so a client
    that sees `done` also sees the snapshots in the listing."""
    state = "processing" if task.is_finished else task.state
    return {
        "id": str(task.id), "number": getattr(task, "number", None), "state": state, "kind": task.kind,
        "description": task.description,
        "deployment": task.deployment, "user": task.actor, "trigger": task.trigger, "result": None,
        "operations": len(task.operations), "finished_operations": len(task.outcomes),
        "queued_at": iso(task.created_on), "started_at": iso(task.started_at),
        "finished_at": None,
    }


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


# Handlers ----------------------------------------------------------------------

routes = web.RouteTableDef()


@routes.get("/info")
async def info(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    enabled = await run(request, runtime.ledger.snapshots_enabled)
    return web.json_response({
        "name": runtime.config.director_name, "uuid": runtime.config.uuid, "version": VERSION,
        "user": actor(request), "cpi": runtime.ledger.default_cpi, "cpis": sorted(runtime.ledger.cpi_names),
        "features": {"snapshots": {"status": enabled}},
        "event_store": runtime.url.kind,
    })


def _snapshot_config(settings: Any, managed: dict[str, str]) -> dict[str, Any]:
    values = {"enable_snapshots": settings.enable_snapshots, **settings.schedules}
    # Which values the configuration sets (the file or variable): changing them here is refused.
    return {**values, "managed_by": {key: managed[key] for key in values if key in managed}}


@routes.get("/config/snapshots")
async def get_snapshot_config(request: web.Request) -> web.Response:
    ledger = request.app[RUNTIME].ledger
    settings = await run(request, ledger.settings)
    return web.json_response(_snapshot_config(settings, ledger.managed))


@routes.put("/config/snapshots")
async def put_snapshot_config(request: web.Request) -> web.Response:
    data = await body(request, schemas.SnapshotConfigSchema())
    ledger = request.app[RUNTIME].ledger
    who = actor(request)

    def apply() -> Any:
        # All or nothing: a managed key anywhere in the request refuses it before any change.
        ledger.refuse_managed_changes({k: _schedule_value(v) if k in SCHEDULE_NAMES else v
                                       for k, v in data.items()}, actor=who)
        if "enable_snapshots" in data:
            ledger.set_snapshots_enabled(data["enable_snapshots"], actor=who)
        for name in SCHEDULE_NAMES:
            if name in data:
                ledger.set_schedule(name, _schedule_value(data[name]), actor=who)
        return ledger.settings()

    return web.json_response(_snapshot_config(await run(request, apply), ledger.managed))


def _schedule_value(value: str | None) -> str | None:
    return None if value is None or value.strip().lower() == "off" else value


@routes.get("/schedules")
async def list_schedules(request: web.Request) -> web.Response:
    """Each schedule, its next fire times and its last fire with the tasks it created."""
    from datetime import datetime, timezone

    from snapledger.domain.cron import CronSchedule

    runtime = request.app[RUNTIME]
    settings = await run(request, runtime.ledger.settings)
    now = datetime.now(timezone.utc)
    result = []
    for name, expression in settings.schedules.items():
        next_fires = [iso(t) for t in CronSchedule.parse(expression).next_fires(now, 5)] if expression else []
        result.append({
            "name": name, "expression": expression,
            "active": bool(expression) and settings.enable_snapshots,
            "next_fires": next_fires if settings.enable_snapshots else [],
            "last_fire": await run(request, runtime.queries.last_fire, name),
            "last_missed": await run(request, runtime.queries.last_fire, name, "missed"),
            "managed_by": runtime.ledger.managed.get(name),  # the file or variable that sets it, if any
        })
    return web.json_response(result)


@routes.post("/self/snapshots")
async def take_self_snapshots(request: web.Request) -> web.Response:
    task = await run(request, request.app[RUNTIME].ledger.take_self_snapshots, actor=actor(request))
    return accepted(task)


@routes.get("/deployments")
async def list_deployments(request: web.Request) -> web.Response:
    queries = request.app[RUNTIME].queries
    deployments, counts = await asyncio.gather(run(request, queries.deployments), run(request, queries.snapshot_counts))
    return web.json_response([{**d, "snapshots": counts.get(d["name"], 0)} for d in deployments])


def _deployment_json(dep: Any) -> dict[str, Any]:
    attached = set(dep.disk_cids())
    # Disks restores created: not part of any instance until the inventory lists them.
    restored = [{**d, "attached": d["disk_cid"] in attached} for d in dep.restored_disks]
    return {"name": dep.name, "tags": dep.tags, "instances": dep.instances, "deleted": dep.deleted,
            "cpi": dep.cpi, "restored_disks": restored}


@routes.put("/deployments/{name}")
async def put_deployment(request: web.Request) -> web.Response:
    name = path(request, "name")
    schemas.validate_deployment_name(name, creating=True)
    data = await body(request, schemas.DeploymentSchema())

    def may_move_from(owner: str) -> bool:  # a move takes a disk away from `owner`: be its admin too
        return auth.may(request, auth.Access.DEPLOYMENT, "PUT", owner)

    dep = await run(request, request.app[RUNTIME].ledger.record_deployment, name, data["tags"],
                    data["instances"], actor=actor(request), cpi=data.get("cpi"),
                    move_disks=data["move_disks"], move_jobs=data["move_jobs"], may_move_from=may_move_from)
    return web.json_response(_deployment_json(dep))


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


@routes.get("/deployments/{name}")
async def get_deployment(request: web.Request) -> web.Response:
    dep = await run(request, request.app[RUNTIME].ledger.get_deployment, path(request, "name"))
    return web.json_response(_deployment_json(dep))


@routes.delete("/deployments/{name}")
async def delete_deployment(request: web.Request) -> web.Response:
    await run(request, request.app[RUNTIME].ledger.delete_deployment, path(request, "name"), actor=actor(request))
    return web.json_response({"deleted": True})


async def _list_snapshots(request: web.Request, job: str | None, index_or_id: str | None) -> web.Response:
    runtime = request.app[RUNTIME]
    deployment = path(request, "deployment")
    params = query(request, schemas.ListQuerySchema())
    if deployment != SELF_DEPLOYMENT:
        await run(request, runtime.ledger.get_deployment_or_history, deployment)
    rows = await run(request, runtime.queries.snapshots, deployment, job, index_or_id,
                     params.get("limit"), params.get("after"), iso(params["at"]) if "at" in params else None)
    return web.json_response(rows)


@routes.get("/deployments/{deployment}/snapshots")
async def list_snapshots(request: web.Request) -> web.Response:
    return await _list_snapshots(request, None, None)


@routes.get("/deployments/{deployment}/jobs/{job}/{index_or_id}/snapshots")
async def list_instance_snapshots(request: web.Request) -> web.Response:
    return await _list_snapshots(request, path(request, "job"), path(request, "index_or_id"))


@routes.post("/deployments/{deployment}/snapshots")
async def take_deployment_snapshots(request: web.Request) -> web.Response:
    task = await run(request, request.app[RUNTIME].ledger.take_snapshots, path(request, "deployment"),
                     actor=actor(request))
    return accepted(task)


@routes.post("/deployments/{deployment}/jobs/{job}/{index_or_id}/snapshots")
async def take_instance_snapshots(request: web.Request) -> web.Response:
    task = await run(request, request.app[RUNTIME].ledger.take_snapshots, path(request, "deployment"),
                     actor=actor(request), job=path(request, "job"), index_or_id=path(request, "index_or_id"))
    return accepted(task)


@routes.delete("/deployments/{deployment}/snapshots/{cid}")
async def delete_snapshot(request: web.Request) -> web.Response:
    task = await run(request, request.app[RUNTIME].ledger.delete_snapshot, path(request, "deployment"),
                     path(request, "cid"), actor=actor(request))
    return accepted(task)


@routes.delete("/deployments/{deployment}/snapshots")
async def delete_snapshots(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    deployment = path(request, "deployment")
    cids = await run(request, runtime.queries.deletable_cids, deployment)
    task = await run(request, runtime.ledger.delete_snapshots, deployment, cids, actor=actor(request))
    return accepted(task)


@routes.get("/tasks")
async def list_tasks(request: web.Request) -> web.Response:
    params = query(request, schemas.TaskQuerySchema())
    queries = request.app[RUNTIME].queries
    if params["in_doubt"]:
        return web.json_response(await run(request, queries.in_doubt_tasks))
    rows = await run(request, queries.tasks, params.get("deployment"), params.get("state"), params["limit"])
    return web.json_response(rows)


MAX_TASK_WAIT_S = 60.0  # a long poll answers at least this often (proxies, idle time-outs)
TASK_WAIT_POLL_S = 0.1


async def _read_task(request: web.Request, task_id: str) -> dict[str, Any]:
    from snapledger.projections.job_updates import instance_updates, last_event_position

    runtime = request.app[RUNTIME]
    # A change counter for long polls: pass it back as `after` to wait for the next change.
    # Read first: the views read after it are at least as new, so a client never skips a change.
    last_event = await run(request, last_event_position, runtime.db, task_id)
    row = await run(request, runtime.queries.task, task_id)
    if row is None:
        row = task_from_aggregate(await run(request, runtime.ledger.get_task, task_id))
    row["last_event"] = last_event
    if row["kind"] == "update_job":  # per-instance readiness, for a deploy tool going instance by instance
        row["instances"] = await run(request, instance_updates, runtime.db, task_id)
    elif row["kind"] == "restore":  # where it stands, the disk written (new or not), the safety snapshot
        from snapledger.projections.restores import restore_of_task

        row["restore"] = await run(request, restore_of_task, runtime.db, task_id)
    return row


@routes.get("/tasks/{task_id}")
async def get_task(request: web.Request) -> web.Response:
    """One task. `?wait=S` long-polls (capped at 60 s) until the task ends or its log
    moves past `after` (the CLI follows any task so). Without `after`, a job update
    answers at its next change, any other task at its end."""
    from .task_numbers import resolve

    task_id = await resolve(request, task_id_of(request))
    params = query(request, schemas.TaskWaitQuerySchema())
    row = await _read_task(request, task_id)
    wait = min(params.get("wait", 0.0), MAX_TASK_WAIT_S)
    if wait > 0:
        after = params.get("after", row["last_event"] if row["kind"] == "update_job" else None)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait

        def settled(r: dict[str, Any]) -> bool:
            return r["state"] in ("done", "error", "cancelled") or (after is not None and r["last_event"] > after)

        while not settled(row) and loop.time() < deadline:
            await asyncio.sleep(TASK_WAIT_POLL_S)
            row = await _read_task(request, task_id)
    return web.json_response(row)


@routes.get("/tasks/{task_id}/events")
async def get_task_events(request: web.Request) -> web.Response:
    from .task_numbers import resolve

    runtime = request.app[RUNTIME]
    task_id = await resolve(request, task_id_of(request))
    params = query(request, schemas.TaskEventsQuerySchema())
    events = await run(request, runtime.queries.task_events, task_id, params["after"])
    if not events and params["after"] == 0:
        await run(request, runtime.ledger.get_task, task_id)  # 404 for an unknown task
    return web.json_response(events)


@routes.get("/tasks/{task_id}/cpi-log")
async def get_task_cpi_log(request: web.Request) -> web.Response:
    """Each CPI call of the task with its log and stderr (BOSH `task --cpi`)."""
    from .task_numbers import resolve

    runtime = request.app[RUNTIME]
    task_id = await resolve(request, task_id_of(request))
    await run(request, runtime.ledger.get_task, task_id)  # 404 for an unknown task
    return web.json_response(await run(request, runtime.queries.cpi_log, task_id))


# Factory -------------------------------------------------------------------------

def _credential_store(runtime: Runtime) -> auth.CredentialStore:
    config = runtime.config
    if not config.users:
        path, created = auth.ensure_admin(config.data_dir)
        if created:
            runtime.log.warning("created an admin credential; the CLI reads it from there",
                                credentials=str(path.resolve()))
        else:
            runtime.log.info("admin credential", credentials=str(path.resolve()))
    store = auth.CredentialStore(auth.load_credentials(config.users, config.data_dir))
    store.failures = auth.FailureBudget(config.auth_failure_burst, config.auth_failure_rate_per_s)
    return store


async def _task_deployment(request: web.Request, task_id: str) -> str | None:
    """Which deployment a task belongs to, for deployment-scoped access."""
    runtime = request.app[RUNTIME]
    row = await run(request, runtime.queries.task, task_id)
    if row is not None:
        return row["deployment"]
    try:
        return (await run(request, runtime.ledger.get_task, task_id)).deployment
    except LedgerError:
        return None


async def _scoped_deployment(request: web.Request) -> str | None:
    """The one deployment a cross-deployment read is confined to, for its deployment's admin:
    a snapshot's (history) or `?deployment=` (tasks, audit). None: the read needs snapledger.read."""
    cid = request.match_info.get("cid")
    if cid is not None:
        queries = request.app[RUNTIME].queries
        first = await run(request, queries.events, {"snapshot_cid": cid}, 0, 1)
        return first[0]["deployment"] if first else None
    from marshmallow import fields

    if request.query.get("in_doubt", "false") not in fields.Boolean.falsy:
        return None  # in-doubt calls are listed across deployments
    return request.query.get("deployment") or None


def route_tables() -> list[web.RouteTableDef]:
    """Every route module's table. A feature adds its own module here, so
    feature work does not pile up in this file."""
    from . import routes_audit, routes_cancel, routes_jobs, routes_ops, routes_restore, routes_retention

    return [routes, routes_ops.routes, routes_retention.routes, routes_audit.routes, routes_jobs.routes,
            routes_restore.routes, routes_cancel.routes]


def create_app(runtime: Runtime, start_background: bool = True) -> web.Application:
    """The aiohttp application over a built runtime. With `start_background`, the
    runtime's worker/projector roles run for the app's lifetime (cleanup_ctx)."""
    from . import routes_ops
    from .access_log import access_log_middleware
    from .idempotency import idempotency_middleware

    app = web.Application(middlewares=[request_context_middleware, access_log_middleware,
                                       routes_ops.metrics_middleware, errors_middleware, input_guard_middleware,
                                       auth.auth_middleware(_task_deployment, _scoped_deployment),
                                       idempotency_middleware],
                          client_max_size=MAX_BODY)
    app[RUNTIME] = runtime
    if runtime.config.auth_enabled:
        app[auth.AUTH] = _credential_store(runtime)
    for table in route_tables():
        app.add_routes(table)
    routes_ops.install(app)

    async def background(app: web.Application) -> Any:
        if start_background:
            runtime.start()
        yield
        await asyncio.get_running_loop().run_in_executor(None, runtime.close)

    app.cleanup_ctx.append(background)
    return app
