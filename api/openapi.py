"""The OpenAPI 3 document, generated from the same marshmallow schemas that
validate requests (apispec), served at /openapi.json.

Each route is described in OPERATIONS (feature modules add theirs with
`document`); a test checks that every route of the app is documented, and a
schemathesis run in CI checks the server against this document.
"""

from __future__ import annotations

from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import Schema

from snapledger.domain.names import CID_PATTERN, NAME_PATTERN, RESERVED_DEPLOYMENT_NAMES, TASK_ID_PATTERN

from . import schemas
from .auth import ROUTE_ACCESS, Access

OBJECT: dict[str, Any] = {"type": "object"}
ARRAY: dict[str, Any] = {"type": "array", "items": {"type": "object"}}
ACCEPTED = {"type": "object", "required": ["task_id", "state"],
            "properties": {"task_id": {"type": "string", "format": "uuid"}, "state": {"type": "string"}}}
TASK = {"type": "object", "required": ["id", "state"],
        "properties": {"id": {"type": "string"}, "number": {"type": ["integer", "null"]},
                       "state": {"type": "string", "enum": ["queued", "processing", "cancelling", "done", "error",
                                                            "cancelled"]},
                       "kind": {"type": "string"}, "deployment": {"type": ["string", "null"]}}}
ERROR = {"type": "object", "required": ["error", "code"],
         "properties": {"error": {"type": "string"}, "code": {"type": "string"},
                        "field": {"type": ["string", "null"]}}}
SELF_OR_NAME = rf"^(_self|{NAME_PATTERN[1:-1]})$"
# A deployment's own name: any name but the reserved ones (PUT refuses them).
NEW_NAME = rf"^(?!({'|'.join(sorted(RESERVED_DEPLOYMENT_NAMES))})$){NAME_PATTERN[1:]}"
PATH_PARAMETERS = {
    "name": NEW_NAME, "deployment": SELF_OR_NAME, "job": NAME_PATTERN, "index_or_id": NAME_PATTERN,
    "cid": CID_PATTERN, "task_id": TASK_ID_PATTERN,
}

# (method, path) -> summary, success status and body, request body schema, query schema.
OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/health"): {"summary": "Liveness", "ok": (200, OBJECT)},
    ("GET", "/ready"): {"summary": "Readiness: event store reachable, views not lagging", "ok": (200, OBJECT)},
    ("GET", "/metrics"): {"summary": "Prometheus metrics", "ok": (200, None)},
    ("GET", "/openapi.json"): {"summary": "This document", "ok": (200, OBJECT)},
    ("GET", "/info"): {"summary": "Service name, uuid, version, snapshot feature", "ok": (200, OBJECT)},
    ("GET", "/config/snapshots"): {"summary": "enable_snapshots and the schedules", "ok": (200, OBJECT)},
    ("PUT", "/config/snapshots"): {"summary": "Switch snapshots, set schedules", "ok": (200, OBJECT),
                                   "body": schemas.SnapshotConfigSchema},
    ("GET", "/schedules"): {"summary": "Schedules, next fires, last fire", "ok": (200, ARRAY)},
    ("POST", "/self/snapshots"): {"summary": "Snapshot the service host's disks", "ok": (202, ACCEPTED)},
    ("GET", "/deployments"): {"summary": "Deployments", "ok": (200, ARRAY)},
    ("PUT", "/deployments/{name}"): {"summary": "Record a deployment's inventory", "ok": (200, OBJECT),
                                     "body": schemas.DeploymentSchema},
    ("GET", "/deployments/{name}"): {"summary": "One deployment", "ok": (200, OBJECT)},
    ("DELETE", "/deployments/{name}"): {"summary": "Delete a deployment (its snapshots stay listed)",
                                        "ok": (200, OBJECT)},
    ("GET", "/deployments/{deployment}/snapshots"): {"summary": "The snapshot listing", "ok": (200, ARRAY),
                                                     "query": schemas.ListQuerySchema},
    ("POST", "/deployments/{deployment}/snapshots"): {"summary": "Snapshot every instance", "ok": (202, ACCEPTED)},
    ("DELETE", "/deployments/{deployment}/snapshots"): {"summary": "Delete all of the deployment's snapshots",
                                                        "ok": (202, ACCEPTED)},
    ("DELETE", "/deployments/{deployment}/snapshots/{cid}"): {"summary": "Delete one snapshot",
                                                              "ok": (202, ACCEPTED)},
    ("GET", "/deployments/{deployment}/jobs/{job}/{index_or_id}/snapshots"): {
        "summary": "One instance's snapshots", "ok": (200, ARRAY), "query": schemas.ListQuerySchema},
    ("POST", "/deployments/{deployment}/jobs/{job}/{index_or_id}/snapshots"): {
        "summary": "Snapshot one instance", "ok": (202, ACCEPTED)},
    ("GET", "/tasks"): {"summary": "Tasks, newest first", "ok": (200, ARRAY), "query": schemas.TaskQuerySchema},
    ("GET", "/tasks/{task_id}"): {"summary": "One task; `wait` long-polls (at most 60 s) for its end or, for a "
                                             "job update, its next change after `after`", "ok": (200, TASK),
                                  "query": schemas.TaskWaitQuerySchema},
    ("GET", "/tasks/{task_id}/events"): {"summary": "A task's events in order", "ok": (200, ARRAY),
                                         "query": schemas.TaskEventsQuerySchema},
    ("GET", "/tasks/{task_id}/cpi-log"): {"summary": "A task's CPI calls with their logs", "ok": (200, ARRAY)},
}


def document(method: str, path: str, summary: str, ok: tuple[int, Any], body: type[Schema] | None = None,
             query: type[Schema] | None = None, also: dict[int, Any] | None = None) -> None:
    """For feature route modules: describe a route next to the route. `also`:
    further success answers, status -> body schema (a dry run's 200 next to a 202)."""
    OPERATIONS[(method, path)] = {"summary": summary, "ok": ok, "body": body, "query": query, "also": also or {}}


def _errors(method: str, access: Access, has_path_params: bool, has_input: bool) -> dict[str, Any]:
    codes = {503: "The event store is unavailable; retry later"}
    if access is not Access.PUBLIC:
        codes.update({401: "Credentials missing or invalid", 403: "Authenticated, but lacking the scope",
                      429: "Too many failed authentications from this address; see Retry-After"})
    if has_path_params or has_input or method != "GET":
        codes.update({400: "Invalid input; `field` names it", 404: "Not found"})
    if method in ("POST", "PUT", "DELETE"):
        codes.update({409: "Conflict (snapshots disabled, already deleting, idempotency key reused, restore refused)",
                      413: "Request body too large"})
    return {str(code): {"description": text, "content": {"application/json": {"schema": ERROR}}}
            for code, text in codes.items()}


def _refine(document: dict[str, Any]) -> None:
    """What a field's metadata says that apispec cannot: `x-merge` (keywords
    added to the property) and `x-replace` (the property's whole schema)."""
    for schema in document.get("components", {}).get("schemas", {}).values():
        properties = schema.get("properties", {})
        for name, prop in list(properties.items()):
            if "x-replace" in prop:
                properties[name] = prop["x-replace"]
            elif "x-merge" in prop:
                properties[name] = {**{k: v for k, v in prop.items() if k != "x-merge"}, **prop["x-merge"]}


def _content(body: Any) -> dict[str, Any]:
    return {"text/plain": {"schema": {"type": "string"}}} if body is None else {"application/json": {"schema": body}}


def build_spec(version: str, cpis: list[str] | None = None) -> dict[str, Any]:
    """`cpis`: the configured CPI names, the only values a deployment's `cpi` may take."""
    spec = APISpec(title="snapledger", version=version, openapi_version="3.1.0",
                   plugins=[MarshmallowPlugin()],
                   info={"description": "An event-sourced ledger for persistent-disk snapshots."})
    spec.components.security_scheme("basic", {"type": "http", "scheme": "basic"})
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    paths: dict[str, dict[str, Any]] = {}
    for (method, path), op in sorted(OPERATIONS.items(), key=lambda kv: kv[0][1]):
        access = ROUTE_ACCESS.get((method, path), Access.ADMIN)
        params = [{"in": "path", "name": name, "required": True,
                   "schema": {"type": "string", "pattern": pattern}}
                  for name, pattern in PATH_PARAMETERS.items() if "{" + name + "}" in path]
        if op.get("query"):
            params.append({"in": "query", "schema": op["query"]})
        if method in ("POST", "PUT", "DELETE"):
            params.append({"in": "header", "name": "Idempotency-Key", "required": False,
                           "schema": {"type": "string", "pattern": r"^[A-Za-z0-9._:-]{1,255}$"}})
        successes = {op["ok"][0]: op["ok"][1], **op.get("also", {})}
        operation: dict[str, Any] = {
            "summary": op["summary"], "parameters": params,
            "responses": {**{str(status): {"description": "OK", "content": _content(body)}
                             for status, body in successes.items()},
                          **_errors(method, access, "{" in path, bool(op.get("query") or op.get("body")))},
        }
        if access is not Access.PUBLIC:
            operation["security"] = [{"basic": []}, {"bearer": []}]
        if op.get("body"):
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": op["body"]}}}
        paths.setdefault(path, {})[method.lower()] = operation
    for path, operations in paths.items():
        spec.path(path=path, operations=operations)
    document = spec.to_dict()
    _refine(document)
    if cpis:
        for schema in document.get("components", {}).get("schemas", {}).values():
            if "cpi" in schema.get("properties", {}):
                schema["properties"]["cpi"]["enum"] = list(cpis)
    return document
