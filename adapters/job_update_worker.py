"""The job-update worker: follows announcements and task progress, runs drains and stops.

A follower of its own (position `job_update_worker`) next to the snapshot
worker, on the claiming skeleton (adapters/log_worker.py): drains can take
minutes, so claimed instances run in a pool and the follower moves on once
the claims are durable. The clean snapshots an instance requests are executed
by the snapshot worker like any other snapshot; their outcomes
(`Task.OperationFinished` on a job-update task) bring us back here to mark the
instance ready and start the next one.

The recovery sweep finds instances held (draining, stopping) by a worker that
has not beaten for a whole lease, or by this worker with no thread running
them: each is recorded failed (`JobUpdate.WorkerLost`), and the update goes
on as after any failed step. The drain is not run again.
"""

from __future__ import annotations

from functools import partial
from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic
from snapledger.domain.job_update import JobUpdate, job_update_id
from snapledger.domain.job_update_runner import JobUpdateRunner
from snapledger.domain.task import Task
from snapledger.projections.database import Row
from snapledger.projections.job_updates import claimed_instances

from .log_worker import ClaimingLogWorker


class JobUpdateWorker(ClaimingLogWorker):
    component = "job-updates"
    position_name = "job_update_worker"  # not "job_updates": that is the view's tracking row
    topics = (get_topic(JobUpdate.Announced), get_topic(Task.OperationFinished))  # type: ignore[attr-defined]
    thread_prefix = "drain"
    pool_size = 16
    runner: JobUpdateRunner

    def subject_of(self, event: Any) -> UUID | None:
        if isinstance(event, JobUpdate.Announced):  # type: ignore[attr-defined]
            return UUID(str(event.originator_id))
        if self.runner.is_job_update_task(str(event.originator_id)):
            return job_update_id(event.originator_id)
        return None  # a snapshot or deletion task: not ours

    def claim(self, subject: UUID) -> None:
        for instance_id in self.runner.advance(subject):
            self.run_claimed((subject, instance_id), partial(self.runner.execute, subject, instance_id),
                             job_update=str(subject), instance_id=instance_id)

    def claims(self, stale: str) -> list[Row]:
        return list(claimed_instances(self.db, older_than=stale))

    def is_running(self, claim: Row) -> bool:
        return (UUID(claim["update_id"]), claim["instance_id"]) in self.running

    def recover(self, claim: Row) -> tuple[str, str, str | None]:
        """(task id, instance id, what was done)."""
        update_id, instance_id, worker = UUID(claim["update_id"]), claim["instance_id"], claim["worker"]
        result = self.runner.recover(update_id, instance_id, dead_worker=worker)
        if result is not None:
            self.log.warning("abandoned job update step failed", task_id=claim["task_id"],
                             instance=claim["instance"], dead_worker=worker, state=claim["state"],
                             since=claim["updated_at"])
        return (claim["task_id"], instance_id, result)
