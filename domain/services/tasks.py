"""Tasks: one per accepted command, read by id; snapshot tasks may be cancelled."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from ..errors import InvalidState, TaskNotFound
from ..idempotency import Idempotency
from ..snapshot import Snapshot
from ..task import Task
from .base import LedgerStore

# The snapshot tasks `bosh cancel-task` may cancel: their operations are snapshots.
CANCELLABLE_KINDS = frozenset({"create_snapshot", "snapshot_deployment", "snapshot_deployments",
                               "delete_snapshot", "delete_deployment_snapshots"})


class TaskService:
    def __init__(self, store: LedgerStore) -> None:
        self.store = store

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

        def decide() -> list[Any]:
            task = self.get(task_id)
            if task.is_finished:
                raise InvalidState(f"task {getattr(task, 'number', None) or task_id} is already {task.state}",
                                   field="task_id")
            if task.kind not in CANCELLABLE_KINDS:
                raise InvalidState(f"a {task.kind} task cannot be cancelled", field="task_id")
            task.request_cancel(actor=actor)
            changed: list[Any] = []
            for op in task.operations:
                if op in task.outcomes:
                    continue
                snapshot = self.store.load(UUID(op))
                if isinstance(snapshot, Snapshot) and snapshot.pending_method and snapshot.current_task_id == task_id:
                    snapshot.cancel(reason="task cancelled", actor=actor)
                    changed.append(snapshot)
                    task.operation_finished(op, "cancelled", {"instance": snapshot.instance_label,
                                                              "disk_cid": snapshot.disk_cid,
                                                              "reason": "task cancelled"}, actor=actor)
            result[:] = [task]
            return [task, *changed]

        self.store.save_with_retry(decide, idempotency=idempotency)
        return result[0]
