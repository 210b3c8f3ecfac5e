"""Task references in paths: a task's number (issue 17) or its old UUID id.

A number is the position of the task's first event in the store. The tasks
view maps it to the task; a number the store already holds but the view has
not projected yet is waited for briefly (the projector trails by milliseconds),
so a client that just got the number never sees a 404.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from snapledger.domain.errors import TaskNotFound

VIEW_CATCH_UP_S = 5.0


async def resolve(request: web.Request, ref: str) -> str:
    """The task id (UUID) for `ref`, a number or an id; TaskNotFound otherwise."""
    from .app import RUNTIME, run

    if not ref.isdigit():
        return ref
    runtime = request.app[RUNTIME]
    row = await run(request, runtime.queries.task, ref)
    if row is None and 0 < int(ref) <= (await run(request, runtime.ledger.recorder.max_notification_id) or 0):
        deadline = asyncio.get_running_loop().time() + VIEW_CATCH_UP_S
        while row is None and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
            row = await run(request, runtime.queries.task, ref)
    if row is None:
        raise TaskNotFound(f"task {ref} not found", field="task_id")
    return str(row["id"])


def number_of(task: Any) -> int | None:
    """The number a task was given when saved in this process (None if read back from the store)."""
    return getattr(task, "number", None)
