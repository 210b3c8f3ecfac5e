"""The audit log over HTTP: every event, filtered, paged by position; one snapshot's life."""

from __future__ import annotations

from aiohttp import web

from snapledger.domain.errors import SnapshotNotFound
from snapledger.projections.audit import snapshot_history
from snapledger.projections.database import Row
from snapledger.projections.events import iso
from snapledger.projections.queries import Queries

from . import schemas
from .auth import Access
from .executor import RUNTIME, run
from .openapi import ARRAY, OBJECT
from .requests import path, query
from .routing import Doc, RouteTable
from .task_numbers import resolve

routes = RouteTable()

PAGE = 5000


@routes.get("/events", Access.SCOPED,
            Doc("The event log in order, filtered; page with `after` = the last position seen", (200, ARRAY),
                query=schemas.EventQuerySchema))
async def events(request: web.Request) -> web.Response:
    params = query(request, schemas.EventQuerySchema())
    for bound in ("since", "until"):
        if bound in params:
            params[bound] = iso(params[bound])
    after, limit = params.pop("after"), params.pop("limit")
    if params.get("task_id"):  # a task's number or its id
        params["task_id"] = await resolve(request, str(params["task_id"]))
    rows = await run(request, request.app[RUNTIME].queries.events, params, after, limit)
    return web.json_response(rows)


@routes.get("/snapshots/{cid}/history", Access.SCOPED,
            Doc("One snapshot's life from request to deletion: its events and every CPI call with its answer",
                (200, OBJECT)))
async def history(request: web.Request) -> web.Response:
    cid = path(request, "cid")
    queries = request.app[RUNTIME].queries

    def load() -> list[Row]:
        rows: list[Row] = []
        while True:  # every event, however many retries it took
            page = queries.events({"snapshot_cid": cid}, rows[-1]["position"] if rows else 0, PAGE)
            rows.extend(page)
            if len(page) < PAGE:
                return rows

    life = snapshot_history(cid, await run(request, load))
    if life is None:
        raise SnapshotNotFound(f"no events for snapshot '{cid}'", field="cid")
    life["job_update"] = await run(request, _made_clean_by, queries, life)
    return web.json_response(life)


# A clean snapshot's trigger -> the events of the step that drained and stopped its jobs.
CLEANING_EVENTS = {"job_update": ("update_job", "JobUpdate"), "restore_safety": ("restore", "Restore")}


def _made_clean_by(queries: Queries, life: Row) -> Row | None:
    """The job update (or restore) whose drain and stop made the snapshot clean:
    its task and that instance's events of it (drain calls with argv and env)."""
    kind = CLEANING_EVENTS.get(life.get("trigger") or "")
    requested = life["events"][0] if life["events"] else None
    if kind is None or requested is None or not life.get("task_id"):
        return None
    filters = {"task_id": life["task_id"], "instance_id": requested["data"].get("instance_id"), "type": kind[1]}
    return {"task_id": life["task_id"], "kind": kind[0], "events": queries.events(filters, 0, PAGE)}
