"""Which deployment a request is about, when its path does not name one:
a task's deployment (Access.TASK) and the one deployment a cross-deployment
read is confined to (Access.SCOPED). The auth middleware is given these."""

from __future__ import annotations

from aiohttp import web
from marshmallow import fields

from snapledger.domain.errors import LedgerError

from .executor import RUNTIME, run


async def task_deployment(request: web.Request, task_id: str) -> str | None:
    """Which deployment a task belongs to, for deployment-scoped access."""
    runtime = request.app[RUNTIME]
    row = await run(request, runtime.queries.task, task_id)
    if row is not None:
        deployment: str | None = row["deployment"]
        return deployment
    try:
        task = await run(request, runtime.ledger.tasks.get, task_id)
    except LedgerError:
        return None
    owner: str | None = task.deployment
    return owner


async def scoped_deployment(request: web.Request) -> str | None:
    """The one deployment a cross-deployment read is confined to, for its deployment's admin:
    a snapshot's (history) or `?deployment=` (tasks, audit). None: the read needs snapledger.read."""
    cid = request.match_info.get("cid")
    if cid is not None:
        queries = request.app[RUNTIME].queries
        first = await run(request, queries.events, {"snapshot_cid": cid}, 0, 1)
        return first[0]["deployment"] if first else None
    if request.query.get("in_doubt", "false") not in fields.Boolean.falsy:
        return None  # in-doubt calls are listed across deployments
    return request.query.get("deployment") or None
