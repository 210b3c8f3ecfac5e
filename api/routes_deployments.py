"""Deployments over HTTP: their inventories (instances, disks, tags, CPI)."""

from __future__ import annotations

import asyncio
from aiohttp import web

from . import auth, schemas
from .auth import Access
from .executor import RUNTIME, run
from .openapi import ARRAY, OBJECT
from .requests import actor, body, path
from .routing import Doc, RouteTable
from snapledger.domain.deployment import Deployment

routes = RouteTable()


@routes.get("/deployments", Access.READ, Doc("Deployments", (200, ARRAY)))
async def list_deployments(request: web.Request) -> web.Response:
    queries = request.app[RUNTIME].queries
    deployments, counts = await asyncio.gather(run(request, queries.deployments), run(request, queries.snapshot_counts))
    return web.json_response([{**d, "snapshots": counts.get(d["name"], 0)} for d in deployments])


def _deployment_json(dep: Deployment) -> dict[str, object]:
    attached = set(dep.disk_cids())
    # Disks restores created: not part of any instance until the inventory lists them.
    restored = [{**d, "attached": d["disk_cid"] in attached} for d in dep.restored_disks]
    return {"name": dep.name, "tags": dep.tags, "instances": dep.instances, "deleted": dep.deleted,
            "cpi": dep.cpi, "restored_disks": restored}


@routes.put("/deployments/{name}", Access.DEPLOYMENT,
            Doc("Record a deployment's inventory", (200, OBJECT), body=schemas.DeploymentSchema))
async def put_deployment(request: web.Request) -> web.Response:
    name = path(request, "name")
    schemas.validate_deployment_name(name, creating=True)
    data = await body(request, schemas.DeploymentSchema())

    def may_move_from(owner: str) -> bool:  # a move takes a disk away from `owner`: be its admin too
        return auth.may(request, auth.Access.DEPLOYMENT, "PUT", owner)

    dep = await run(request, request.app[RUNTIME].ledger.deployments.record, name, data["tags"],
                    data["instances"], actor=actor(request), cpi=data.get("cpi"),
                    move_disks=data["move_disks"], move_jobs=data["move_jobs"], may_move_from=may_move_from)
    return web.json_response(_deployment_json(dep))


@routes.get("/deployments/{name}", Access.DEPLOYMENT, Doc("One deployment", (200, OBJECT)))
async def get_deployment(request: web.Request) -> web.Response:
    dep = await run(request, request.app[RUNTIME].ledger.deployments.get, path(request, "name"))
    return web.json_response(_deployment_json(dep))


@routes.delete("/deployments/{name}", Access.DEPLOYMENT,
               Doc("Delete a deployment (its snapshots stay listed)", (200, OBJECT)))
async def delete_deployment(request: web.Request) -> web.Response:
    await run(request, request.app[RUNTIME].ledger.deployments.delete, path(request, "name"), actor=actor(request))
    return web.json_response({"deleted": True})
