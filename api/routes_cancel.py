"""Cancelling a task: `POST /tasks/N/cancel`, the native side of `bosh cancel-task N`
(issue 17). Calls not started are not made; a call already running ends with
its outcome, and the last one ends the task `cancelled`."""

from __future__ import annotations

from aiohttp import web

from .app import RUNTIME, _read_task, actor, run, task_id_of
from .auth import Access, declare
from .openapi import OBJECT, document
from .task_numbers import resolve

routes = web.RouteTableDef()

declare("POST", "/tasks/{task_id}/cancel", Access.TASK)
document("POST", "/tasks/{task_id}/cancel", "Cancel a queued or running snapshot task (its number or id): "
         "409 invalid_state when it has ended", (200, OBJECT))


@routes.post("/tasks/{task_id}/cancel")
async def cancel_task(request: web.Request) -> web.Response:
    task_id = await resolve(request, task_id_of(request))
    await run(request, request.app[RUNTIME].ledger.cancel_task, task_id, actor=actor(request))
    return web.json_response(await _read_task(request, task_id))
