"""Snapshots over HTTP: a deployment's (or one instance's) listing, taking and deleting them,
and the service host's own (self) snapshots."""

from __future__ import annotations

from aiohttp import web

from snapledger.domain.names import SELF_DEPLOYMENT
from snapledger.projections.events import iso

from . import schemas
from .auth import Access
from .executor import RUNTIME, run
from .openapi import ACCEPTED, ARRAY
from .requests import accepted, actor, idempotency_of, path, query
from .routing import Doc, RouteTable

routes = RouteTable()
SNAPSHOTS = "/deployments/{deployment}/snapshots"
INSTANCE_SNAPSHOTS = "/deployments/{deployment}/jobs/{job}/{index_or_id}/snapshots"


@routes.post("/self/snapshots", Access.ADMIN, Doc("Snapshot the service host's disks", (202, ACCEPTED)))
async def take_self_snapshots(request: web.Request) -> web.Response:
    task = await run(request, request.app[RUNTIME].ledger.self_snapshots.take, actor=actor(request),
                     idempotency=idempotency_of(request))
    return accepted(task)


async def _list_snapshots(request: web.Request, job: str | None, index_or_id: str | None) -> web.Response:
    runtime = request.app[RUNTIME]
    deployment = path(request, "deployment")
    params = query(request, schemas.ListQuerySchema())
    if deployment != SELF_DEPLOYMENT:
        await run(request, runtime.ledger.deployments.get_or_history, deployment)
    rows = await run(request, runtime.queries.snapshots, deployment, job, index_or_id,
                     params.get("limit"), params.get("after"), iso(params["at"]) if "at" in params else None)
    return web.json_response(rows)


@routes.get(SNAPSHOTS, Access.DEPLOYMENT, Doc("The snapshot listing", (200, ARRAY), query=schemas.ListQuerySchema))
async def list_snapshots(request: web.Request) -> web.Response:
    return await _list_snapshots(request, None, None)


@routes.get(INSTANCE_SNAPSHOTS, Access.DEPLOYMENT,
            Doc("One instance's snapshots", (200, ARRAY), query=schemas.ListQuerySchema))
async def list_instance_snapshots(request: web.Request) -> web.Response:
    return await _list_snapshots(request, path(request, "job"), path(request, "index_or_id"))


@routes.post(SNAPSHOTS, Access.DEPLOYMENT, Doc("Snapshot every instance", (202, ACCEPTED)))
async def take_deployment_snapshots(request: web.Request) -> web.Response:
    task = await run(request, request.app[RUNTIME].ledger.snapshots.take, path(request, "deployment"),
                     actor=actor(request), idempotency=idempotency_of(request))
    return accepted(task)


@routes.post(INSTANCE_SNAPSHOTS, Access.DEPLOYMENT, Doc("Snapshot one instance", (202, ACCEPTED)))
async def take_instance_snapshots(request: web.Request) -> web.Response:
    task = await run(request, request.app[RUNTIME].ledger.snapshots.take, path(request, "deployment"),
                     actor=actor(request), job=path(request, "job"), index_or_id=path(request, "index_or_id"),
                     idempotency=idempotency_of(request))
    return accepted(task)


@routes.delete(SNAPSHOTS + "/{cid}", Access.DEPLOYMENT, Doc("Delete one snapshot", (202, ACCEPTED)))
async def delete_snapshot(request: web.Request) -> web.Response:
    task = await run(request, request.app[RUNTIME].ledger.snapshots.delete, path(request, "deployment"),
                     path(request, "cid"), actor=actor(request), idempotency=idempotency_of(request))
    return accepted(task)


@routes.delete(SNAPSHOTS, Access.DEPLOYMENT, Doc("Delete all of the deployment's snapshots", (202, ACCEPTED)))
async def delete_snapshots(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    deployment = path(request, "deployment")
    cids = await run(request, runtime.queries.deletable_cids, deployment)
    task = await run(request, runtime.ledger.snapshots.delete_many, deployment, cids, actor=actor(request),
                     idempotency=idempotency_of(request))
    return accepted(task)
