"""Tasks: one per accepted command, read by id; snapshot tasks may be cancelled."""

from __future__ import annotations

import threading
import time
from uuid import UUID

from eventsourcing.domain import Aggregate

from ..errors import InvalidState, TaskNotFound
from ..idempotency import Idempotency
from ..snapshot import Snapshot
from ..task import Task
from .base import LedgerStore

# The snapshot tasks `bosh cancel-task` may cancel: their operations are snapshots.
CANCELLABLE_KINDS = frozenset({"create_snapshot", "snapshot_deployment", "snapshot_deployments",
                               "delete_snapshot", "delete_deployment_snapshots"})


CANCEL_CHECK_AGE_S = 0.5  # how old a "not cancelled" answer may be (cancel_requested)


class TaskService:
    def __init__(self, store: LedgerStore) -> None:
        self.store = store
        self._cancel_checks: dict[str, float] = {}  # task id -> when it was last seen not cancelled
        self._cancelled: set[str] = set()
        self._guard = threading.Lock()

    def cancel_requested(self, task_id: str) -> bool:
        """Whether the task's cancel was requested, for a CPI call about to be
        made after it waited for a slot. Behind a backlog every call waits: a
        read of a 10,000-operation task per call made taking quadratic, so a
        "no" is reused for CANCEL_CHECK_AGE_S (a call started within that of a
        cancel is made, and ends with its outcome as a running call does)."""
        now = time.monotonic()
        with self._guard:
            if task_id in self._cancelled:
                return True
            if now - self._cancel_checks.get(task_id, -CANCEL_CHECK_AGE_S) < CANCEL_CHECK_AGE_S:
                return False
        task = self.store.read(UUID(task_id))
        cancelled = bool(getattr(task, "cancel_requested", False))
        with self._guard:
            if cancelled:
                if len(self._cancelled) > 10_000:
                    self._cancelled.clear()
                self._cancelled.add(task_id)
            self._cancel_checks[task_id] = now
            if len(self._cancel_checks) > 10_000:
                self._cancel_checks.clear()
        return cancelled

    def get(self, task_id: str) -> Task:
        try:
            task = self.store.load(UUID(task_id))
        except ValueError:
            task = None
        if not isinstance(task, Task):
            raise TaskNotFound(f"task '{task_id}' not found", field="task_id")
        return task

    def cancel(self, task_id: str, actor: str, idempotency: Idempotency | None = None) -> Task:
        """Cancel a queued or running snapshot task: its snapshots whose CPI call
        has not started are cancelled now; calls already running end with their
        outcome, and the last one ends the task `cancelled`."""
        result: list[Task] = []

        def decide() -> list[Aggregate]:
            task = self.get(task_id)
            if task.is_finished:
                raise InvalidState(f"task {getattr(task, 'number', None) or task_id} is already {task.state}",
                                   field="task_id")
            if task.kind not in CANCELLABLE_KINDS:
                raise InvalidState(f"a {task.kind} task cannot be cancelled", field="task_id")
            task.request_cancel(actor=actor)
            changed: list[Aggregate] = []
            for op in task.operations:
                if op in task.outcomes:
                    continue
                snapshot = self.store.load(UUID(op))
                if isinstance(snapshot, Snapshot) and snapshot.pending_method and snapshot.current_task_id == task_id:
                    # Its `Cancelled` ends the operation of the task (task_progress.py).
                    snapshot.cancel(reason="task cancelled", actor=actor)
                    changed.append(snapshot)
            result[:] = [task]
            return [task, *changed]

        self.store.save_with_retry(decide, idempotency=idempotency)
        return result[0]
