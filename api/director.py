"""The BOSH Director dialect, for the real `bosh` CLI (issue 17, decisions 22, 34).

On the API's own port (the bosh CLI's requests told apart by their
User-Agent), or a listener of its own (`--director-port`), over the same
runtime as the native API: the paths are the Director's and collide with the native ones, but the
contract differs (302 to an integer task instead of 202, `{"code": int,
"description"}` errors, epoch-second times, NDJSON task output by byte
ranges). Commands go through the same ledger calls as the native routes.
"""

from __future__ import annotations

from datetime import datetime
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.abc import AbstractView
from aiohttp.typedefs import Handler, Middleware

from snapledger.adapters.bootstrap import Runtime
from snapledger.domain.errors import (DeploymentNotFound, InstanceNotFound, InvalidState, LedgerError,
                                      SnapshotNotFound, SnapshotsDisabled, TaskNotFound)

from . import auth
from .errors import STORE_UNAVAILABLE
from .executor import RUNTIME, StoreDown, run
from .requests import idempotency_of, request_context_middleware
from .version import VERSION
from .access_log import access_log_middleware
from .director_output import task_output
from .director_events import events_page
from .task_numbers import resolve
from snapledger.projections.database import Row
from snapledger.domain.task import Task

# The Director's error codes (bosh-director errors.rb) and HTTP statuses.
DIRECTOR_CODES: dict[type[LedgerError], tuple[int, int]] = {
    DeploymentNotFound: (70000, 404), InstanceNotFound: (70001, 404), SnapshotNotFound: (70008, 400),
    TaskNotFound: (10000, 404), SnapshotsDisabled: (190000, 409),
}
UNAUTHORIZED_CODE = 600000
TASK_STATES = {"queued": "queued", "processing": "processing", "cancelling": "cancelling", "done": "done",
               "error": "error", "cancelled": "cancelled"}
STORE = web.AppKey("director_credentials", auth.CredentialStore)
TEAMS_PREFIX, TEAMS_SUFFIX = "bosh.teams.", ".admin"


def director_error(status: int, code: int, description: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"code": code, "description": description}, status=status, headers=headers)


# Middleware ------------------------------------------------------------------------

@web.middleware
async def errors_middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                            ) -> web.StreamResponse:
    try:
        return await handler(request)
    except LedgerError as error:
        code, status = next(((c, s) for kind, (c, s) in DIRECTOR_CODES.items() if isinstance(error, kind)),
                            (100, error.status))
        return director_error(status, code, error.message)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        if error.status == 404:
            return web.Response(status=404, text=f"Endpoint '{request.path}' not found.\n")
        return director_error(error.status, 100, error.reason)
    except StoreDown as error:
        return director_error(503, 100, f"the event store is unavailable ({error}); retry later")
    except Exception as error:
        if isinstance(error, STORE_UNAVAILABLE):
            return director_error(503, 100, "the event store is unavailable; retry later")
        request.app[RUNTIME].log.exception("unhandled error (director dialect)", path=request.path)
        return director_error(500, 100, "internal error")


class Need:
    """What a route needs, in the Director's terms (docs: README "Using the bosh CLI")."""
    PUBLIC, READ, DEPLOYMENT_READ, DEPLOYMENT_ADMIN, TASK = range(5)


def _team_admin(scopes: frozenset[str], tags: Row) -> bool:
    """`bosh.teams.T.admin` is admin of the deployments tagged `team: T` (or listing T in `teams`)."""
    teams = {str(tags.get("team", ""))} | {str(t) for t in tags.get("teams", []) or []}
    return any(s.startswith(TEAMS_PREFIX) and s.endswith(TEAMS_SUFFIX)
               and s[len(TEAMS_PREFIX):-len(TEAMS_SUFFIX)] in teams for s in scopes)


async def _allowed(request: web.Request, credential: auth.Credential, need: int, deployment: str | None) -> bool:
    method = "GET" if need in (Need.DEPLOYMENT_READ, Need.TASK) else "POST"
    access = auth.Access.READ if need == Need.READ else auth.Access.DEPLOYMENT
    if credential.allows(access, method, deployment):
        return True
    if deployment is None:
        return False
    row = await run(request, request.app[RUNTIME].queries.deployment, deployment)
    return row is not None and _team_admin(credential.scopes, row["tags"])


def auth_middleware(needs: dict[tuple[str, str], int]) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                         ) -> web.StreamResponse:
        key = auth.route_key(request)
        if key is None:
            return await handler(request)
        need = needs.get(key)
        if need is None:  # every route declares what it needs (route()); refuse one that does not
            return director_error(403, 100, f"route {key[0]} {key[1]} declares no access; refused")
        store = request.app.get(STORE)
        if need == Need.PUBLIC or store is None:
            return await handler(request)
        parsed = auth.parse_authorization(request.headers.get("Authorization", ""))
        credential = await auth.verify_in_pool(request, store, *parsed) if parsed else None
        if credential is None:  # the Director's plain-text 401
            return web.Response(status=401, text=f"Not authorized: '{request.path}'\n",
                                headers={"WWW-Authenticate": 'Basic realm="BOSH Director"'})
        deployment = request.match_info.get("deployment")
        if need == Need.TASK:
            deployment = await _task_deployment(request, request.match_info["task_id"])
        if not await _allowed(request, credential, need, deployment):
            uuid = request.app[RUNTIME].config.uuid
            return director_error(401, UNAUTHORIZED_CODE,
                                  f"Require one of the scopes: bosh.admin, bosh.{uuid}.admin, "
                                  f"bosh.teams.<team of {deployment or 'the deployment'}>.admin "
                                  f"(or {auth.ADMIN}, {auth.deployment_admin(deployment or '<deployment>')})"
                                  + ("; bosh.read / snapledger.read may read" if need != Need.DEPLOYMENT_ADMIN
                                     else ""))
        request[auth.USER] = credential.name
        return await handler(request)

    return middleware


TASK_ROW = web.RequestKey("director_task_row", dict)  # read once for auth, used again by the route


async def _task_deployment(request: web.Request, ref: str) -> str | None:
    # A number just handed out may not be projected yet: resolve() waits for it.
    row = await run(request, request.app[RUNTIME].queries.task, await resolve(request, ref))
    if row is not None:
        request[TASK_ROW] = row
    return row["deployment"] if row else None


# Shapes --------------------------------------------------------------------------------

def _epoch(iso_time: str | None) -> int | None:
    return int(datetime.fromisoformat(iso_time.replace("Z", "+00:00")).timestamp()) if iso_time else None


def task_json(row: Row) -> Row:
    """A task as the Director shows it: integer id and epoch-second times."""
    result = row.get("result")
    if result is not None and len(result) > 128:
        result = result[:125] + "..."
    finished = row["state"] in ("done", "error", "cancelled")
    return {"id": row["number"], "state": TASK_STATES.get(row["state"], row["state"]),
            "description": row["description"], "timestamp": _epoch(row.get("finished_at")) if finished else None,
            "started_at": _epoch(row.get("started_at")), "result": result, "user": row.get("user") or "admin",
            "deployment": row.get("deployment"), "context_id": ""}


def snapshot_json(row: Row) -> Row:
    return {"job": row["job"], "index": row["index"], "uuid": row["instance_id"], "snapshot_cid": row["snapshot_cid"],
            "created_at": row["created_at"] or "", "clean": bool(row["clean"])}


def actor(request: web.Request) -> str:
    return str(request.get(auth.USER, "admin"))


async def _redirect_to_task(request: web.Request, task: Task) -> web.Response:
    """302 to the task's number (the CLI follows it with a GET and polls that number)."""
    from .task_numbers import log_accepted

    log_accepted(task)
    number = getattr(task, "number", None)
    where = f"/tasks/{number}" if number is not None else f"/tasks/{task.id}"
    return web.Response(status=302, headers={"Location": where})


async def _known_deployment(request: web.Request, name: str) -> None:
    try:
        await run(request, request.app[RUNTIME].ledger.deployments.get_or_history, name)
    except DeploymentNotFound:
        raise DeploymentNotFound(f"Deployment '{name}' doesn't exist") from None


# Routes ------------------------------------------------------------------------------------

routes = web.RouteTableDef()
NEEDS: dict[tuple[str, str], int] = {}


# What aiohttp's RouteTableDef decorates: a handler or a class-based view.
RouteHandler = Handler | type[AbstractView]


def route(method: str, path: str, need: int) -> Callable[[RouteHandler], RouteHandler]:
    NEEDS[(method, path)] = need
    return routes.route(method, path)


@route("GET", "/info", Need.PUBLIC)
async def info(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    enabled = await run(request, runtime.ledger.settings.snapshots_enabled)
    return web.json_response({
        "name": runtime.config.director_name, "uuid": runtime.config.uuid, "version": f"{VERSION} (snapledger)",
        "user": None, "cpi": runtime.ledger.default_cpi, "stemcell_os": "", "stemcell_version": "",
        "user_authentication": {"type": "basic", "options": {}},
        "features": {"snapshots": {"status": enabled}, "local_dns": {"status": False, "extras": {}},
                     "config_server": {"status": False, "extras": {"urls": []}}},
    })


@route("GET", "/deployments", Need.READ)
async def deployments(request: web.Request) -> web.Response:
    rows = await run(request, request.app[RUNTIME].queries.deployments)
    return web.json_response([
        {"name": d["name"], "releases": [], "stemcells": [], "cloud_config": "none",
         "teams": [str(d["tags"]["team"])] if d["tags"].get("team") else []} for d in rows])


@route("GET", "/deployments/{deployment}/snapshots", Need.DEPLOYMENT_READ)
async def list_snapshots(request: web.Request) -> web.Response:
    deployment = request.match_info["deployment"]
    await _known_deployment(request, deployment)
    rows = await run(request, request.app[RUNTIME].queries.snapshots, deployment)
    return web.json_response([snapshot_json(r) for r in rows])


@route("GET", "/deployments/{deployment}/jobs/{job}/{index_or_id}/snapshots", Need.DEPLOYMENT_READ)
async def list_instance_snapshots(request: web.Request) -> web.Response:
    deployment = request.match_info["deployment"]
    await _known_deployment(request, deployment)
    rows = await run(request, request.app[RUNTIME].queries.snapshots, deployment, request.match_info["job"],
                     request.match_info["index_or_id"])
    return web.json_response([snapshot_json(r) for r in rows])


async def _take(request: web.Request, job: str | None, index_or_id: str | None) -> web.Response:
    deployment = request.match_info["deployment"]
    await _known_deployment(request, deployment)
    # Disabled snapshots are refused (409, with how to enable), not the Director's silent "Succeeded".
    task = await run(request, request.app[RUNTIME].ledger.snapshots.take, deployment, actor=actor(request),
                     job=job, index_or_id=index_or_id, idempotency=idempotency_of(request))
    return await _redirect_to_task(request, task)


@route("POST", "/deployments/{deployment}/snapshots", Need.DEPLOYMENT_ADMIN)
async def take_deployment_snapshots(request: web.Request) -> web.Response:
    return await _take(request, None, None)


@route("POST", "/deployments/{deployment}/jobs/{job}/{index_or_id}/snapshots", Need.DEPLOYMENT_ADMIN)
async def take_instance_snapshots(request: web.Request) -> web.Response:
    return await _take(request, request.match_info["job"], request.match_info["index_or_id"])


@route("DELETE", "/deployments/{deployment}/snapshots/{cid}", Need.DEPLOYMENT_ADMIN)
async def delete_snapshot(request: web.Request) -> web.Response:
    deployment, cid = request.match_info["deployment"], request.match_info["cid"]
    await _known_deployment(request, deployment)
    try:
        task = await run(request, request.app[RUNTIME].ledger.snapshots.delete, deployment, cid, actor=actor(request),
                         idempotency=idempotency_of(request))
    except SnapshotNotFound as error:  # the Director's words: "snapshot X not found[ in deployment D]"
        raise SnapshotNotFound(error.message.replace("'", "")) from None
    return await _redirect_to_task(request, task)


@route("DELETE", "/deployments/{deployment}/snapshots", Need.DEPLOYMENT_ADMIN)
async def delete_snapshots(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    deployment = request.match_info["deployment"]
    await _known_deployment(request, deployment)
    cids = await run(request, runtime.queries.deletable_cids, deployment)
    task = await run(request, runtime.ledger.snapshots.delete_many, deployment, cids, actor=actor(request),
                     idempotency=idempotency_of(request))
    return await _redirect_to_task(request, task)


def _int_param(request: web.Request, name: str, default: int | None = None) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit():
        raise web.HTTPBadRequest(reason=f"'{name}' must be a non-negative integer, got {raw!r}")
    return int(raw)


@route("GET", "/tasks", Need.READ)
async def list_tasks(request: web.Request) -> web.Response:
    """`bosh tasks` asks for `state=queued,processing,cancelling` (running ones); `--recent`, for none."""
    limit = min(_int_param(request, "limit", 30) or 30, 1000)
    states: list[str | None] = [s for s in (request.query.get("state") or "").split(",") if s] or [None]
    deployment = request.query.get("deployment") or None
    rows = [row for state in states
            for row in await run(request, request.app[RUNTIME].queries.tasks, deployment, state, limit)]
    rows.sort(key=lambda r: r["number"], reverse=True)
    return web.json_response([task_json(r) for r in rows[:limit]])


async def _task_row(request: web.Request) -> Row:
    row: Row | None = request.get(TASK_ROW)
    if row is None:
        task_id = await resolve(request, request.match_info["task_id"])
        row = await run(request, request.app[RUNTIME].queries.task, task_id)
    if row is None:
        raise TaskNotFound(f"Task {request.match_info['task_id']} not found")
    return row


@route("GET", "/tasks/{task_id}", Need.TASK)
async def get_task(request: web.Request) -> web.Response:
    return web.json_response(task_json(await _task_row(request)))


@route("GET", "/tasks/{task_id}/output", Need.TASK)
async def get_task_output(request: web.Request) -> web.Response:
    """NDJSON event lines, the result, the CPI calls or the debug log, by byte ranges as the Director serves them."""
    row = await _task_row(request)
    kind = request.query.get("type", "debug")
    if kind not in ("event", "result", "cpi", "debug", "none"):
        raise web.HTTPBadRequest(reason=f"'type' must be event, result, cpi, debug or none, got {kind!r}")
    if kind == "none":
        return web.Response(status=204)
    body = await run(request, task_output, request.app[RUNTIME], row, kind)
    return ranged(request, body)


def ranged(request: web.Request, body: bytes) -> web.Response:
    """`Range: bytes=N-` → 206 with the bytes from N, 416 when there is nothing from N; none → 200."""
    header = request.headers.get("Range")
    if header is None:
        return web.Response(body=body, content_type="text/plain")
    spec = header.removeprefix("bytes=").strip()
    start_text, _, end_text = spec.partition("-")
    if not start_text.isdigit() or (end_text and not end_text.isdigit()):
        return web.Response(status=416, headers={"Content-Range": f"bytes */{len(body)}"})
    start = int(start_text)
    end = min(int(end_text), len(body) - 1) if end_text else len(body) - 1
    if start >= len(body) or start > end:
        return web.Response(status=416, headers={"Content-Range": f"bytes */{len(body)}"})
    return web.Response(status=206, body=body[start:end + 1], content_type="text/plain",
                        headers={"Content-Range": f"bytes {start}-{end}/{len(body)}"})


@route("DELETE", "/task/{task_id}", Need.TASK)
async def cancel_task(request: web.Request) -> web.Response:
    row = await _task_row(request)
    try:
        await run(request, request.app[RUNTIME].ledger.tasks.cancel, row["id"], actor=actor(request),
                  idempotency=idempotency_of(request))
    except InvalidState as error:
        return director_error(400, 10001, f"Cannot cancel task {row['number']}: {error.message}")
    return web.Response(status=204)


@route("GET", "/events", Need.READ)
async def events(request: web.Request) -> web.Response:
    filters = {name: request.query[name] for name in
               ("deployment", "instance", "user", "action", "object_type", "object_name")
               if request.query.get(name)}
    task = request.query.get("task")
    if task:
        filters["task_id"] = await resolve(request, task)
    before_id = _int_param(request, "before_id")
    page = await run(request, events_page, request.app[RUNTIME], filters, before_id,
                     request.query.get("before_time"), request.query.get("after_time"))
    return web.json_response(page)


# The listener ------------------------------------------------------------------------------

def create_director_app(runtime: Runtime, credentials: auth.CredentialStore | None) -> web.Application:
    """The Director dialect over a runtime another app runs (it starts no background roles)."""
    app = web.Application(middlewares=[request_context_middleware, access_log_middleware, errors_middleware,
                                       auth_middleware(NEEDS)])
    app[RUNTIME] = runtime
    if credentials is not None:
        app[STORE] = credentials
    app.add_routes(routes)
    return app
