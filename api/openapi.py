"""The OpenAPI 3 document, generated from the same marshmallow schemas that
validate requests (apispec), served at /openapi.json.

Each route is described where its handler is declared (`api/routing.py`
Doc); the app factory collects them. A test checks that every route of the
app is documented, and a schemathesis run in CI checks the server against
this document.
"""

from __future__ import annotations

from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from snapledger.domain.names import CID_PATTERN, NAME_PATTERN, RESERVED_DEPLOYMENT_NAMES, TASK_ID_PATTERN

from .auth import Access
from snapledger.domain.json_types import JsonObject

from .routing import JsonSchema, Route, Routes

OBJECT: JsonSchema = {"type": "object"}
ARRAY: JsonSchema = {"type": "array", "items": {"type": "object"}}
ACCEPTED: JsonSchema = {"type": "object", "required": ["task_id", "state"],
            "properties": {"task_id": {"type": "string", "format": "uuid"}, "state": {"type": "string"}}}
TASK: JsonSchema = {"type": "object", "required": ["id", "state"],
        "properties": {"id": {"type": "string"}, "number": {"type": ["integer", "null"]},
                       "state": {"type": "string", "enum": ["queued", "processing", "cancelling", "done", "error",
                                                            "cancelled"]},
                       "kind": {"type": "string"}, "deployment": {"type": ["string", "null"]}}}
ERROR: JsonSchema = {"type": "object", "required": ["error", "code"],
         "properties": {"error": {"type": "string"}, "code": {"type": "string"},
                        "field": {"type": ["string", "null"]}}}
SELF_OR_NAME = rf"^(_self|{NAME_PATTERN[1:-1]})$"
# A deployment's own name: any name but the reserved ones (PUT refuses them).
NEW_NAME = rf"^(?!({'|'.join(sorted(RESERVED_DEPLOYMENT_NAMES))})$){NAME_PATTERN[1:]}"
PATH_PARAMETERS = {
    "name": NEW_NAME, "deployment": SELF_OR_NAME, "job": NAME_PATTERN, "index_or_id": NAME_PATTERN,
    "cid": CID_PATTERN, "task_id": TASK_ID_PATTERN,
}

def _errors(method: str, access: Access, has_path_params: bool, has_input: bool) -> JsonObject:
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


# Any: apispec's APISpec.to_dict() result, walked as it is.
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


def _content(body: JsonSchema | None) -> JsonObject:
    return {"text/plain": {"schema": {"type": "string"}}} if body is None else {"application/json": {"schema": body}}


def build_spec(version: str, routes: Routes, cpis: list[str] | None = None) -> JsonObject:
    """The document of `routes` (an app's, as its factory collected them).
    `cpis`: the configured CPI names, the only values a deployment's `cpi` may take."""
    spec = APISpec(title="snapledger", version=version, openapi_version="3.1.0",
                   plugins=[MarshmallowPlugin()],
                   info={"description": "An event-sourced ledger for persistent-disk snapshots."})
    spec.components.security_scheme("basic", {"type": "http", "scheme": "basic"})
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    paths: dict[str, dict[str, object]] = {}
    for route in sorted(routes.all, key=lambda r: r.path):
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    for path, operations in paths.items():
        spec.path(path=path, operations=operations)
    document = spec.to_dict()
    _refine(document)
    if cpis:
        for schema in document.get("components", {}).get("schemas", {}).values():
            if "cpi" in schema.get("properties", {}):
                schema["properties"]["cpi"]["enum"] = list(cpis)
    return document


def _operation(route: Route) -> dict[str, object]:
    """The path item's operation as apispec takes it: JSON, but for the marshmallow schema
    classes (query, body) it resolves."""
    method, path, doc = route.method, route.path, route.doc
    params: list[dict[str, object]] = [{"in": "path", "name": name, "required": True,
                                     "schema": {"type": "string", "pattern": pattern}}
                                    for name, pattern in PATH_PARAMETERS.items() if "{" + name + "}" in path]
    if doc.query:
        params.append({"in": "query", "schema": doc.query})
    if method in ("POST", "PUT", "DELETE"):
        params.append({"in": "header", "name": "Idempotency-Key", "required": False,
                       "schema": {"type": "string", "pattern": r"^[A-Za-z0-9._:-]{1,255}$"}})
    successes = {doc.ok[0]: doc.ok[1], **doc.also}
    responses: JsonObject = {str(status): {"description": "OK", "content": _content(body)}
                             for status, body in successes.items()}
    operation: dict[str, object] = {
        "summary": doc.summary, "parameters": params,
        "responses": {**responses, **_errors(method, route.access, "{" in path, bool(doc.query or doc.body))},
    }
    if route.access is not Access.PUBLIC:
        operation["security"] = [{"basic": []}, {"bearer": []}]
    if doc.body:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": doc.body}}}
    return operation
