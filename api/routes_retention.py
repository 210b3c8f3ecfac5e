"""Retention policies, retention runs (and their dry run), pins."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from snapledger.domain.retention import RetentionPolicy

from . import schemas
from .auth import Access
from .executor import RUNTIME, run
from .openapi import ACCEPTED, ARRAY, OBJECT
from .requests import accepted, actor, body, idempotency_of, path, query
from .routing import Doc, RouteTable
from snapledger.domain.json_types import JsonObject

routes = RouteTable()
DEPLOYMENT_RETENTION = "/deployments/{deployment}/retention"
PIN = "/deployments/{deployment}/snapshots/{cid}/pin"


def _policy_json(policy: RetentionPolicy, source: str, managed_by: str | None) -> JsonObject:
    """`source`: whose policy is in force (the deployment's or the default);
    `managed_by`: the configuration file that declares it (a PUT is refused), if any."""
    return {**policy.as_dict(), "source": source, "description": policy.describe(), "managed_by": managed_by}


def _managed_by(request: web.Request, deployment: str | None, source: str) -> str | None:
    managed = request.app[RUNTIME].ledger.settings.managed
    if deployment is not None and f"retention.deployments.{deployment}" in managed:
        return managed[f"retention.deployments.{deployment}"]
    return managed.get("retention.default") if source == "default" else None


def _policy(data: dict[str, Any]) -> RetentionPolicy:
    return RetentionPolicy(keep_last=data.get("keep_last"), keep_for=data.get("keep_for"),
                           keep_clean=data.get("keep_clean", False))


@routes.get("/config/retention", Access.READ, Doc("The default retention policy", (200, OBJECT)))
async def get_default_retention(request: web.Request) -> web.Response:
    policy, source = await run(request, request.app[RUNTIME].ledger.retention.policy, None)
    return web.json_response(_policy_json(policy, source, _managed_by(request, None, source)))


@routes.put("/config/retention", Access.ADMIN,
            Doc("Set the default retention policy", (200, OBJECT), body=schemas.RetentionSchema))
async def put_default_retention(request: web.Request) -> web.Response:
    data = await body(request, schemas.RetentionSchema())
    ledger = request.app[RUNTIME].ledger
    await run(request, ledger.retention.set_policy, None, _policy(data), actor=actor(request))
    policy, source = await run(request, ledger.retention.policy, None)
    return web.json_response(_policy_json(policy, source, _managed_by(request, None, source)))


@routes.get(DEPLOYMENT_RETENTION, Access.DEPLOYMENT, Doc("A deployment's retention policy", (200, OBJECT)))
async def get_retention(request: web.Request) -> web.Response:
    deployment = path(request, "deployment")
    policy, source = await run(request, request.app[RUNTIME].ledger.retention.policy, deployment)
    return web.json_response(_policy_json(policy, source, _managed_by(request, deployment, source)))


@routes.put(DEPLOYMENT_RETENTION, Access.DEPLOYMENT,
            Doc("Set a deployment's retention policy", (200, OBJECT), body=schemas.RetentionSchema))
async def put_retention(request: web.Request) -> web.Response:
    deployment = path(request, "deployment")
    data = await body(request, schemas.RetentionSchema())
    ledger = request.app[RUNTIME].ledger
    policy = None if data.get("inherit") else _policy(data)
    await run(request, ledger.retention.set_policy, deployment, policy, actor=actor(request))
    current, source = await run(request, ledger.retention.policy, deployment)
    return web.json_response(_policy_json(current, source, _managed_by(request, deployment, source)))


@routes.post(DEPLOYMENT_RETENTION + "/runs", Access.DEPLOYMENT,
             Doc("Apply retention now (202 + task), or show what it would expire (?dry_run=true, 200)",
                 (202, ACCEPTED), query=schemas.RetentionRunQuerySchema,
                 also={200: ARRAY}))  # ?dry_run=true: what a run would expire, nothing changed
async def run_retention(request: web.Request) -> web.Response:
    deployment = path(request, "deployment")
    params = query(request, schemas.RetentionRunQuerySchema())
    ledger = request.app[RUNTIME].ledger
    now = datetime.now(UTC)
    if params["dry_run"]:
        plan = await run(request, ledger.retention.plan, deployment, now)
        return web.json_response([{"snapshot_cid": e.snapshot_cid, "disk_cid": e.disk_cid, "reason": e.reason}
                                  for e in plan])
    task = await run(request, ledger.retention.run, deployment, actor(request), now,
                     idempotency=idempotency_of(request))
    return accepted(task)


async def _pin(request: web.Request, pin: bool) -> web.Response:
    deployment, cid = path(request, "deployment"), path(request, "cid")
    reason = (await body(request, schemas.PinSchema()))["reason"] if pin else "unpinned"
    snapshot = await run(request, request.app[RUNTIME].ledger.snapshots.pin, deployment, cid, reason,
                         actor(request), pin)
    return web.json_response({"snapshot_cid": cid, "pinned": snapshot.pinned})


@routes.put(PIN, Access.DEPLOYMENT,
            Doc("Pin a snapshot (never expired, never deleted) with a reason", (200, OBJECT),
                body=schemas.PinSchema))
async def pin(request: web.Request) -> web.Response:
    return await _pin(request, True)


@routes.delete(PIN, Access.DEPLOYMENT, Doc("Unpin a snapshot", (200, OBJECT)))
async def unpin(request: web.Request) -> web.Response:
    return await _pin(request, False)
