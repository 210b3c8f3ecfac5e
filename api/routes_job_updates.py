"""Job updates over HTTP: a deploy tool announces an update and polls for readiness.

`POST /deployments/{d}/jobs/{job}/updates` (every instance of the job, in
order, `max_in_flight` at a time) and `POST .../jobs/{job}/{index_or_id}/updates`
(one instance) answer 202 with a task. Each instance is drained, stopped and
snapshotted (clean) and then reported `ready` in `GET /tasks/{id}` (`instances`);
`GET /tasks/{id}?wait=S` long-polls for the next change.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from marshmallow import fields
from marshmallow.validate import OneOf, Range

from snapledger.domain.agent import DRAIN_TYPES

from .auth import Access
from .executor import RUNTIME, run
from .openapi import ACCEPTED
from .requests import accepted, actor, body, idempotency_of, path
from .routing import Doc, RouteTable
from .schemas import JsonInteger, StrictSchema

routes = RouteTable()

JOB_UPDATES = "/deployments/{deployment}/jobs/{job}/updates"
INSTANCE_UPDATES = "/deployments/{deployment}/jobs/{job}/{index_or_id}/updates"


class JobStateSchema(StrictSchema):
    """BOSH_JOB_STATE / BOSH_JOB_NEXT_STATE as the drain scripts see them."""

    persistent_disk = JsonInteger(required=True, validate=Range(min=0, max=2**40))


class JobUpdateSchema(StrictSchema):
    drain_type = fields.String(validate=OneOf(DRAIN_TYPES), load_default="update")
    next_state = fields.Nested(JobStateSchema)
    current_state = fields.Nested(JobStateSchema)  # default: next_state (no change)
    max_in_flight = JsonInteger(validate=Range(min=1, max=1000), load_default=1)


async def _announce(request: web.Request, index_or_id: str | None) -> web.Response:
    deployment, job = path(request, "deployment"), path(request, "job")
    # No body at all means every default (drain_type update, one at a time). Read, not
    # `can_read_body`: the idempotency middleware may have read the body already
    # (the read is cached), and then the body must not be taken for absent.
    data: dict[str, Any] = (await body(request, JobUpdateSchema()) if await request.read()
                            else JobUpdateSchema().load({}))
    task = await run(request, request.app[RUNTIME].ledger.job_updates.announce, deployment, job, index_or_id,
                     data["drain_type"], actor=actor(request), next_state=data.get("next_state"),
                     current_state=data.get("current_state"), max_in_flight=data["max_in_flight"],
                     idempotency=idempotency_of(request))
    return accepted(task)


# Announcing an update drains and stops jobs: the deployment's admins only.
@routes.post(JOB_UPDATES, Access.DEPLOYMENT,
             Doc("Announce an update of every instance of a job: drain, stop, clean snapshot, ready, one instance "
                 "after another", (202, ACCEPTED), body=JobUpdateSchema))
async def announce_job(request: web.Request) -> web.Response:
    return await _announce(request, None)


@routes.post(INSTANCE_UPDATES, Access.DEPLOYMENT,
             Doc("Announce an update of one instance: drain, stop, clean snapshot, ready", (202, ACCEPTED),
                 body=JobUpdateSchema))
async def announce_instance(request: web.Request) -> web.Response:
    return await _announce(request, path(request, "index_or_id"))
