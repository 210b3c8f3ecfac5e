"""Task references in paths: a task's number (issue 17) or its old UUID id.

A number is the position of the task's first event in the store. The tasks
view maps it to the task; a number the store already holds but the view has
not projected yet is waited for briefly (the projector trails by milliseconds),
so a client that just got the number never sees a 404.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import structlog
from aiohttp import web

from snapledger.domain.errors import TaskNotFound
from snapledger.domain.task_numbers import TASK_NUMBERS
from snapledger.domain.task import Task

if TYPE_CHECKING:
    from snapledger.adapters.bootstrap import Runtime

VIEW_CATCH_UP_S = 5.0
TASK_ID = web.RequestKey("task_id", str)  # the task a request names: its access line names it too
TASK_QUEUED = ":Task.Queued"  # the topic of a task's first event


async def resolve(request: web.Request, ref: str) -> str:
    """The task id (UUID) for `ref`, a number or an id; TaskNotFound otherwise."""
    from .executor import RUNTIME, run

    if not ref.isdigit():
        request[TASK_ID] = ref
        return ref
    runtime = request.app[RUNTIME]
    row = await run(request, runtime.queries.task, ref)
    if row is None and await run(request, _is_task_start, runtime, int(ref)):
        deadline = asyncio.get_running_loop().time() + VIEW_CATCH_UP_S
        while row is None and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
            row = await run(request, runtime.queries.task, ref)
    if row is None:
        raise TaskNotFound(f"task {ref} not found", field="task_id")
    request[TASK_ID] = str(row["id"])
    TASK_NUMBERS.remember(str(row["id"]), int(ref))
    return str(row["id"])


def _is_task_start(runtime: Runtime, number: int) -> bool:
    """Whether the store's event at `number` starts a task (only then is the view waited for;
    any other number is a 404 at once)."""
    if number <= 0:
        return False
    found = runtime.ledger.store.recorder.select_notifications(start=number, limit=1, stop=number)
    return bool(found) and found[0].id == number and found[0].topic.endswith(TASK_QUEUED)


def log_accepted(task: Task) -> None:
    """One log line ties the task's id to its number (the worker's lines carry the id)."""
    structlog.get_logger("snapledger.api").info("task accepted", task_id=str(task.id), task=number_of(task),
                                                kind=task.kind, deployment=task.deployment)


def number_of(task: Task) -> int | None:
    """The number a task was given when saved in this process (None if read back from the store)."""
    return getattr(task, "number", None)
