"""A snapshot task's progress and end, from its snapshots' outcomes (decision 39).

A CPI thread records an outcome on its snapshot only. This service, fed the
snapshot events in log order by one follower (adapters/task_progress_worker.py,
in the projector role), is the one writer of those tasks' `Started`,
`OperationFinished` and `Finished`: it saves a batch of outcomes of a task in
one save, so the CPI threads of one and of several workers no longer queue
and conflict on the task aggregate (a 10,000-operation task was read whole by
every claim and written by every outcome).

Decision 4's guarantee holds: every outcome is in the log before its task
hears of it, the follower moves its position only past saved progress (a
replay finds the outcome recorded: `Task.operation_finished` ignores a
repeat), and the task's version check makes its end exactly once whoever
else writes the task (a cancel, a job update's own steps, a second follower).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from ..json_types import JsonObject
from ..snapshot import Snapshot
from ..task import GOOD_OUTCOMES, Task
from .base import LedgerStore

# Snapshot events that end one operation of its task, and the task's name for the outcome.
OUTCOME_OF: dict[type, str] = {
    Snapshot.Taken: "taken",  # type: ignore[attr-defined]
    Snapshot.Failed: "failed",  # type: ignore[attr-defined]
    Snapshot.Skipped: "skipped",  # type: ignore[attr-defined]
    Snapshot.Deleted: "deleted",  # type: ignore[attr-defined]
    Snapshot.DeletionFailed: "deletion_failed",  # type: ignore[attr-defined]
    Snapshot.Cancelled: "cancelled",  # type: ignore[attr-defined]
    Snapshot.InDoubtLeft: "in_doubt",  # type: ignore[attr-defined]
}
STARTED = Snapshot.CpiCallStarted  # type: ignore[attr-defined]
REQUESTED = Snapshot.Requested  # type: ignore[attr-defined]
# What the follower reads: the outcomes, the first call of a task, and the
# requests (they name the instance and disk an outcome's line shows).
FOLLOWED: tuple[type, ...] = (REQUESTED, STARTED, *OUTCOME_OF)
FACTS_SIZE = 200_000  # requests remembered until their outcome (a fire over 10,000 disks is 10,000)


def label(job: str, index: int | None, instance_id: str) -> str:
    return f"{job}/{index if index is not None else instance_id}"


class TaskProgressService:
    def __init__(self, store: LedgerStore) -> None:
        self.store = store
        # operation id -> what its outcome line names; filled from the requests
        # followed, else read from the snapshot (a deletion, or after a restart).
        self._facts: OrderedDict[str, dict[str, str | None]] = OrderedDict()

    def follow(self, events: Sequence[Any]) -> int:
        """Apply a batch of snapshot events (log order) to their tasks, in one
        save; returns how many operations ended. Re-runnable: a batch applied
        before is found recorded."""
        steps = []
        for event in events:
            if isinstance(event, REQUESTED):
                self._remember(str(event.originator_id), label(event.job, event.index, event.instance_id),
                               event.disk_cid)
            elif isinstance(event, Snapshot.Taken) and str(event.originator_id) in self._facts:  # type: ignore[attr-defined]
                # A deletion later in the same batch names this CID (facts go after the batch).
                self._facts[str(event.originator_id)]["snapshot_cid"] = event.snapshot_cid
            if isinstance(event, STARTED) or type(event) in OUTCOME_OF:
                steps.append(event)
        if not steps:
            return 0
        ended = 0

        def decide() -> list[Aggregate]:
            nonlocal ended
            tasks: dict[str, Task | None] = {}
            ended = 0  # a retried round counts again
            for event in steps:
                task_id = event.task_id
                if task_id not in tasks:
                    found = self.store.load(UUID(task_id))
                    tasks[task_id] = found if isinstance(found, Task) else None
                task = tasks[task_id]
                if task is None:
                    continue
                if isinstance(event, STARTED):
                    task.start(worker=event.worker, actor=task.actor)
                    continue
                op = str(event.originator_id)
                if op in task.outcomes or op not in task.operations:
                    continue
                task.operation_finished(op, OUTCOME_OF[type(event)], self._detail(event), actor=task.actor)
                ended += 1
            return [t for t in tasks.values() if t is not None and t.pending_events]

        self.store.save_with_retry(decide)
        for event in steps:
            if type(event) in OUTCOME_OF:
                self._facts.pop(str(event.originator_id), None)
        return ended

    def _remember(self, op: str, instance: str, disk_cid: str) -> None:
        self._facts[op] = {"instance": instance, "disk_cid": disk_cid, "snapshot_cid": None}
        if len(self._facts) > FACTS_SIZE:
            self._facts.popitem(last=False)

    def _facts_of(self, op: str) -> dict[str, str | None]:
        facts = self._facts.get(op)
        if facts is not None:
            return facts
        snapshot = self.store.load(UUID(op))
        if not isinstance(snapshot, Snapshot):
            return {"instance": "?", "disk_cid": None, "snapshot_cid": None}
        return {"instance": snapshot.instance_label, "disk_cid": snapshot.disk_cid,
                "snapshot_cid": snapshot.snapshot_cid}

    def _detail(self, event: Any) -> JsonObject:
        """The outcome as the task records it (the task's result and output lines read it)."""
        op = str(event.originator_id)
        outcome = OUTCOME_OF[type(event)]
        facts = self._facts_of(op)
        detail: JsonObject = {"instance": facts["instance"], "disk_cid": facts["disk_cid"],
                                  "snapshot_cid": getattr(event, "snapshot_cid", None) or facts["snapshot_cid"]}
        if outcome == "in_doubt":
            detail.update(snapshot_cid=None, error_type="Snapledger::InDoubt",
                          message=f"{event.method} may or may not have happened; look for IaaS "
                                  f"snapshots tagged snapledger_operation_id={op}")
        if getattr(event, "reason", None) is not None and outcome != "in_doubt":
            detail["reason"] = event.reason
        error = getattr(event, "error", None)
        if error is not None and outcome not in GOOD_OUTCOMES:
            detail.update(error_type=error["type"], message=error["message"])
        attempts = (getattr(event, "call", None) or {}).get("attempts", 1)
        if attempts > 1:
            detail["attempts"] = attempts
        detail["caused_by"] = f"{op}/{event.originator_version}"  # the outcome event
        return detail
