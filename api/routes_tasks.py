"""Tasks over HTTP: the list, one task (long-polled while it runs), its events, its CPI calls."""

from __future__ import annotations

import asyncio

from aiohttp import web

from snapledger.projections.database import Row
from snapledger.projections.events import iso
from snapledger.projections.job_updates import instance_updates, last_event_position
from snapledger.projections.restores import restore_of_task

from . import schemas
from .auth import Access
from .executor import RUNTIME, run
from .openapi import ARRAY, TASK
from .requests import actor, idempotency_of, query, task_id_of
from .routing import Doc, RouteTable
from .task_numbers import resolve
from snapledger.domain.task import Task

routes = RouteTable()

MAX_TASK_WAIT_S = 60.0  # a long poll answers at least this often (proxies, idle time-outs)
TASK_WAIT_POLL_S = 0.1
FINISHED = ("done", "error", "cancelled")


@routes.get("/tasks", Access.SCOPED, Doc("Tasks, newest first", (200, ARRAY), query=schemas.TaskQuerySchema))
async def list_tasks(request: web.Request) -> web.Response:
    params = query(request, schemas.TaskQuerySchema())
    queries = request.app[RUNTIME].queries
    if params["in_doubt"]:
        return web.json_response(await run(request, queries.in_doubt_tasks))
    rows = await run(request, queries.tasks, params.get("deployment"), params.get("state"), params["limit"])
    return web.json_response(rows)


def task_from_aggregate(task: Task) -> Row:
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


async def _read_task(request: web.Request, task_id: str) -> Row:
    runtime = request.app[RUNTIME]
    # A change counter for long polls: pass it back as `after` to wait for the next change.
    # Read first: the views read after it are at least as new, so a client never skips a change.
    last_event = await run(request, last_event_position, runtime.db, task_id)
    row: Row | None = await run(request, runtime.queries.task, task_id)
    if row is None:
        row = task_from_aggregate(await run(request, runtime.ledger.tasks.get, task_id))
    row["last_event"] = last_event
    if row["kind"] == "update_job":  # per-instance readiness, for a deploy tool going instance by instance
        row["instances"] = await run(request, instance_updates, runtime.db, task_id)
    elif row["kind"] == "restore":  # where it stands, the disk written (new or not), the safety snapshot
        row["restore"] = await run(request, restore_of_task, runtime.db, task_id)
    return row


@routes.get("/tasks/{task_id}", Access.TASK,
            Doc("One task; `wait` long-polls (at most 60 s) for its end or, for a job update, its next change "
                "after `after`", (200, TASK), query=schemas.TaskWaitQuerySchema))
async def get_task(request: web.Request) -> web.Response:
    """One task. `?wait=S` long-polls (capped at 60 s) until the task ends or its log
    moves past `after` (the CLI follows any task so). Without `after`, a job update
    answers at its next change, any other task at its end."""
    task_id = await resolve(request, task_id_of(request))
    params = query(request, schemas.TaskWaitQuerySchema())
    row = await _read_task(request, task_id)
    wait = min(params.get("wait", 0.0), MAX_TASK_WAIT_S)
    if wait > 0:
        after = params.get("after", row["last_event"] if row["kind"] == "update_job" else None)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait

        def settled(r: Row) -> bool:
            return r["state"] in FINISHED or (after is not None and r["last_event"] > after)

        while not settled(row) and loop.time() < deadline:
            await asyncio.sleep(TASK_WAIT_POLL_S)
            row = await _read_task(request, task_id)
    return web.json_response(row)


@routes.get("/tasks/{task_id}/events", Access.TASK,
            Doc("A task's events in order", (200, ARRAY), query=schemas.TaskEventsQuerySchema))
async def get_task_events(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    task_id = await resolve(request, task_id_of(request))
    params = query(request, schemas.TaskEventsQuerySchema())
    events = await run(request, runtime.queries.task_events, task_id, params["after"])
    if not events and params["after"] == 0:
        await run(request, runtime.ledger.tasks.get, task_id)  # 404 for an unknown task
    return web.json_response(events)


@routes.get("/tasks/{task_id}/cpi-log", Access.TASK, Doc("A task's CPI calls with their logs", (200, ARRAY)))
async def get_task_cpi_log(request: web.Request) -> web.Response:
    """Each CPI call of the task with its log and stderr (BOSH `task --cpi`)."""
    runtime = request.app[RUNTIME]
    task_id = await resolve(request, task_id_of(request))
    await run(request, runtime.ledger.tasks.get, task_id)  # 404 for an unknown task
    return web.json_response(await run(request, runtime.queries.cpi_log, task_id))


@routes.post("/tasks/{task_id}/cancel", Access.TASK,
             Doc("Cancel a queued or running snapshot task (its number or id): 409 invalid_state when it has ended",
                 (200, TASK)))
async def cancel_task(request: web.Request) -> web.Response:
    """The native side of `bosh cancel-task N`: calls not started are not made; a call
    already running ends with its outcome, and the last one ends the task `cancelled`."""
    task_id = await resolve(request, task_id_of(request))
    await run(request, request.app[RUNTIME].ledger.tasks.cancel, task_id, actor=actor(request),
              idempotency=idempotency_of(request))
    return web.json_response(await _read_task(request, task_id))
