"""Restore over HTTP: `POST /deployments/{d}/snapshots/{cid}/restore` answers 202 with a task.

Body (optional): `{"to_new_disk": "NAME"}` restores into a new disk instead of
the snapshot's own disk. The task's progress is in `GET /tasks/{id}` (`restore`)
and its events; refusals are 4xx naming the field (`cid`, `to_new_disk`,
`cpi`, `enable_snapshots`).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from marshmallow import fields


from .auth import Access
from .executor import RUNTIME, run
from .openapi import ACCEPTED
from .requests import accepted, actor, body, idempotency_of, path
from .routing import Doc, RouteTable
from .schemas import NAME, StrictSchema

routes = RouteTable()

RESTORE = "/deployments/{deployment}/snapshots/{cid}/restore"


class RestoreSchema(StrictSchema):
    # A new disk's name (a local CPI disk directory): the disk must not exist.
    to_new_disk = fields.String(validate=NAME)


# Restoring overwrites a disk (or creates one): the deployment's admins only, as deletion.
@routes.post(RESTORE, Access.DEPLOYMENT,
             Doc("Restore a snapshot into its own disk (drain, stop, safety snapshot, restore) or into a new disk "
                 "(`to_new_disk`); local CPI only", (202, ACCEPTED), body=RestoreSchema))
async def restore(request: web.Request) -> web.Response:
    deployment, cid = path(request, "deployment"), path(request, "cid")
    # No body (or an empty one): restore in place. Read, not `can_read_body`: the
    # idempotency middleware may have read the body already (the read is cached).
    data: dict[str, Any] = await body(request, RestoreSchema()) if await request.read() else {}
    task = await run(request, request.app[RUNTIME].ledger.restores.request, deployment, cid, actor(request),
                     to_new_disk=data.get("to_new_disk"), idempotency=idempotency_of(request))
    return accepted(task)
