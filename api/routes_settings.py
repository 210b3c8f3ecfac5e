"""The service's settings over HTTP: snapshots on or off, the schedules and their fires."""

from __future__ import annotations

from datetime import UTC, datetime
from collections.abc import Mapping

from aiohttp import web

from snapledger.domain.cron import CronSchedule
from snapledger.domain.settings import SCHEDULE_NAMES, Settings
from snapledger.projections.events import iso

from . import schemas
from .auth import Access
from .executor import RUNTIME, run
from .openapi import ARRAY, OBJECT
from .requests import actor, body
from .routing import Doc, RouteTable
from snapledger.domain.json_types import JsonObject

routes = RouteTable()


def _snapshot_config(settings: Settings, managed: Mapping[str, str]) -> JsonObject:
    values = {"enable_snapshots": settings.enable_snapshots, **settings.schedules}
    # Which values the configuration sets (the file or variable): changing them here is refused.
    return {**values, "managed_by": {key: managed[key] for key in values if key in managed}}


@routes.get("/config/snapshots", Access.READ, Doc("enable_snapshots and the schedules", (200, OBJECT)))
async def get_snapshot_config(request: web.Request) -> web.Response:
    ledger = request.app[RUNTIME].ledger
    settings = await run(request, ledger.settings.current)
    return web.json_response(_snapshot_config(settings, ledger.settings.managed))


@routes.put("/config/snapshots", Access.ADMIN,
            Doc("Switch snapshots, set schedules", (200, OBJECT), body=schemas.SnapshotConfigSchema))
async def put_snapshot_config(request: web.Request) -> web.Response:
    data = await body(request, schemas.SnapshotConfigSchema())
    ledger = request.app[RUNTIME].ledger
    who = actor(request)

    def apply() -> Settings:
        # All or nothing: a managed key anywhere in the request refuses it before any change.
        ledger.settings.refuse_managed_changes({k: _schedule_value(v) if k in SCHEDULE_NAMES else v
                                       for k, v in data.items()}, actor=who)
        if "enable_snapshots" in data:
            ledger.settings.set_snapshots_enabled(data["enable_snapshots"], actor=who)
        for name in SCHEDULE_NAMES:
            if name in data:
                ledger.settings.set_schedule(name, _schedule_value(data[name]), actor=who)
        return ledger.settings.current()

    return web.json_response(_snapshot_config(await run(request, apply), ledger.settings.managed))


def _schedule_value(value: str | None) -> str | None:
    return None if value is None or value.strip().lower() == "off" else value


@routes.get("/schedules", Access.READ, Doc("Schedules, next fires, last fire", (200, ARRAY)))
async def list_schedules(request: web.Request) -> web.Response:
    """Each schedule, its next fire times and its last fire with the tasks it created."""
    runtime = request.app[RUNTIME]
    settings = await run(request, runtime.ledger.settings.current)
    now = datetime.now(UTC)
    result = []
    for name, expression in settings.schedules.items():
        next_fires = [iso(t) for t in CronSchedule.parse(expression).next_fires(now, 5)] if expression else []
        result.append({
            "name": name, "expression": expression,
            "active": bool(expression) and settings.enable_snapshots,
            "next_fires": next_fires if settings.enable_snapshots else [],
            "last_fire": await run(request, runtime.queries.last_fire, name),
            "last_missed": await run(request, runtime.queries.last_fire, name, "missed"),
            "managed_by": runtime.ledger.settings.managed.get(name),  # the file or variable that sets it, if any
        })
    return web.json_response(result)
