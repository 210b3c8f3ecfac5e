"""`Idempotency-Key` on every command: a retry returns the original task.

Same key, same request (method, path, query and JSON body): the original
answer (`202` and the original task, header `Idempotent-Replayed: true`);
no second snapshot. Same key, different request: `409`. Keys are per user and
live in the event store, so they hold across restarts and replicas.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Awaitable, Callable

from aiohttp import web
from marshmallow import ValidationError

from snapledger.domain.idempotency import Idempotency, KeyAlreadyUsed

from .errors import error_response
from .executor import RUNTIME, run
from .requests import IDEMPOTENCY, actor, parse_json

HEADER = "Idempotency-Key"
KEY_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,255}")
COMMANDS = frozenset({"POST", "PUT", "DELETE"})


async def fingerprint(request: web.Request) -> str:
    raw = await request.read()
    try:
        body = json.dumps(parse_json(raw), sort_keys=True, separators=(",", ":")) if raw else ""
    except ValidationError:
        body = raw.decode(errors="replace")  # invalid or hostile JSON: the handler will refuse it anyway
    canonical = "\n".join([request.method, request.path, request.query_string, body])
    return hashlib.sha256(canonical.encode()).hexdigest()


@web.middleware
async def idempotency_middleware(request: web.Request,
                                 handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                                 ) -> web.StreamResponse:
    key = request.headers.get(HEADER)
    if key is None or request.method not in COMMANDS:
        return await handler(request)
    if not KEY_PATTERN.fullmatch(key):
        return error_response(400, f"{HEADER} must be 1-255 characters of letters, digits, '.', '_', ':' or '-'",
                              "invalid", field=HEADER)
    ledger = request.app[RUNTIME].ledger
    who = actor(request)
    print_ = await fingerprint(request)
    replay = await _replay(request, who, key, print_)
    if replay is not None:
        return replay
    # Handed explicitly to the command the handler runs (`idempotency_of(request)`):
    # a command that creates a task saves the key with it, in the same transaction.
    claim = Idempotency(actor=who, key=key, fingerprint=print_, method=request.method, path=request.path)
    request[IDEMPOTENCY] = claim
    try:
        response = await handler(request)
    except KeyAlreadyUsed:
        # A concurrent request with this key committed first: answer as it did.
        replay = await _replay(request, who, key, print_)
        if replay is None:
            raise
        return replay
    if response.status < 300:
        # A command without a task (a PUT): record the key after it (nothing when its task
        # recorded it); replays re-run it (it is idempotent). Recorded by a racing request,
        # or the store went away: the PUT is idempotent anyway.
        with contextlib.suppress(Exception):
            await run(request, ledger.store.record_idempotency_key, claim)
    return response


async def _replay(request: web.Request, who: str, key: str, print_: str) -> web.StreamResponse | None:
    ledger = request.app[RUNTIME].ledger
    found = await run(request, ledger.store.find_idempotency_key, who, key)
    if found is None:
        return None
    if found.fingerprint != print_:
        return error_response(409, f"{HEADER} '{key}' was used for a different request "
                                   f"({found.method} {found.path}); use a new key", "idempotency_key_reused",
                              field=HEADER)
    if found.task_id is None:
        return None  # a PUT: run it again (same body, same result)
    task = await run(request, ledger.tasks.get, found.task_id)
    return web.json_response({"task_id": found.task_id, "state": task.state}, status=202,
                             headers={"Location": f"/tasks/{found.task_id}", "Idempotent-Replayed": "true"})
