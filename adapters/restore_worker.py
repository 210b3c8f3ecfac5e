"""The restore worker: follows restore requests and task progress, runs the steps.

A follower of its own (position `restore_worker`) on the claiming skeleton
(adapters/log_worker.py), like the job-update worker: a drain can take
minutes, so claimed steps run in a pool and the follower moves on once the
claims are durable. The safety snapshot is executed by the snapshot worker;
its outcome (`Task.OperationFinished` on a restore task) brings the restore
back here for the CPI call.

The recovery sweep finds restores held by a worker that has not beaten for a
whole lease: an abandoned drain or stop fails the restore (the disk was not
touched); an abandoned restore call is repeated.
"""

from __future__ import annotations

from functools import partial
from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic
from snapledger.domain.restore import Restore, restore_id
from snapledger.domain.restore_runner import RestoreRunner
from snapledger.domain.task import Task
from snapledger.projections.database import Row
from snapledger.projections.restores import claimed_restores

from .log_worker import ClaimingLogWorker


class RestoreWorker(ClaimingLogWorker):
    component = "restores"
    position_name = "restore_worker"  # not "restores": that is the view's tracking row
    topics = (get_topic(Restore.Requested), get_topic(Task.OperationFinished))  # type: ignore[attr-defined]
    thread_prefix = "restore"
    pool_size = 8
    runner: RestoreRunner

    def subject_of(self, event: Any) -> UUID | None:
        if isinstance(event, Restore.Requested):  # type: ignore[attr-defined]
            return UUID(str(event.originator_id))
        if self.runner.is_restore_task(str(event.originator_id)):
            return restore_id(event.originator_id)
        return None  # another kind of task: not ours

    def claim(self, subject: UUID) -> None:
        step = self.runner.advance(subject)
        if step is not None:
            self.run_claimed(subject, partial(self.runner.execute, subject, step),
                             restore_id=str(subject), step=step)

    def claims(self, stale: str) -> list[Row]:
        return list(claimed_restores(self.db, older_than=stale))

    def is_running(self, claim: Row) -> bool:
        return UUID(claim["restore_id"]) in self.running

    def recover(self, claim: Row) -> tuple[str, str | None]:
        """(restore id, what was done)."""
        rid, worker = UUID(claim["restore_id"]), claim["worker"]
        result = self.runner.recover(rid, dead_worker=worker)
        if result is not None:
            self.log.warning("recovered abandoned restore", restore_id=str(rid), task_id=claim["task_id"],
                             dead_worker=worker, state=claim["state"], result=result)
        return (str(claim["restore_id"]), result)
