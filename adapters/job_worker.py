"""The worker role for job updates: follows announcements and task progress, runs drains and stops.

A follower of its own (position `job_update_worker`) next to the snapshot worker:
drains can take minutes, so claimed instances run in a pool and the follower
moves on once the claims are durable. The clean snapshots an instance
requests are executed by the snapshot worker like any other snapshot; their
outcomes (`Task.OperationFinished` on a job-update task) bring us back here to
mark the instance ready and start the next one.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic

from snapledger.domain.job_update import JobUpdate, JobUpdateRunner, job_update_id
from snapledger.domain.task import Task

from .follower import Batch, ChangeSignal, LogFollower, TrackedPosition

TOPICS = (get_topic(JobUpdate.Announced), get_topic(Task.OperationFinished))
POSITION_NAME = "job_update_worker"  # not "job_updates": that is the view's tracking row


class JobUpdateWorker:
    def __init__(self, ledger: Any, runner: JobUpdateRunner, db: Any, signal: ChangeSignal, log: Any,
                 max_instances: int = 16, poll_interval: float = 1.0) -> None:
        self.runner = runner
        self.db = db
        self.log = log.bind(component="job-updates", worker=runner.worker)
        self.pool = ThreadPoolExecutor(max_workers=max_instances, thread_name_prefix="drain")
        self.follower = LogFollower("job-updates", ledger, signal, self._handle, self._load_position, self.log,
                                    topics=TOPICS, batch_size=200, poll_interval=poll_interval)

    def _load_position(self) -> int:
        return TrackedPosition(self.db, POSITION_NAME).load()

    def _save_position(self, position: int) -> None:
        TrackedPosition(self.db, POSITION_NAME).save(position)

    def _handle(self, batch: Batch) -> None:
        updates: list[UUID] = []
        for _, event in batch:
            if isinstance(event, JobUpdate.Announced):
                update_id = event.originator_id
            elif self.runner.is_job_update_task(str(event.originator_id)):
                update_id = job_update_id(event.originator_id)
            else:
                continue  # a snapshot or deletion task: not ours
            if update_id not in updates:
                updates.append(update_id)
        for update_id in updates:
            for instance_id in self.runner.advance(update_id):
                self.pool.submit(self._execute, update_id, instance_id)
        # Claims are durable: a replay after a crash finds them taken, never runs them twice.
        self._save_position(batch[-1][0])

    def _execute(self, update_id: UUID, instance_id: str) -> None:
        try:
            self.runner.execute(update_id, instance_id)
        except Exception:  # logged; the instance stays claimed for an operator to see
            self.log.exception("job update step failed", job_update=str(update_id), instance_id=instance_id)

    def start(self) -> None:
        self.follower.start()

    def stop(self) -> None:
        self.follower.stop()
        # A drain may run for minutes (or forever, without a time-out): end it
        # rather than hang the shutdown; the instance fails as cancelled.
        cancel = getattr(self.runner.agent, "cancel", None)
        if cancel is not None:
            cancel()
        self.pool.shutdown(wait=True, cancel_futures=True)


def build_agent(config: Any, log: Any = None) -> Any:
    """The local agent from configuration (`jobs_dir`, `drain_timeout`, `stop_command`, ...)."""
    from .agent_local import LocalAgent

    jobs_dir = config.jobs_dir or config.data_dir / "jobs"
    return LocalAgent(jobs_dir, drain_timeout_s=config.drain_timeout_s, stop_command=config.stop_command or None,
                      stop_timeout_s=config.stop_timeout_s, wait_scale=config.drain_wait_scale, log=log)


def start_job_worker(runtime: Any, worker: str) -> JobUpdateWorker:
    """Called by the composition root for the worker role; `runtime.agent` may be preset (tests)."""
    if runtime.agent is None:
        runtime.agent = build_agent(runtime.config, runtime.log)
    runner = JobUpdateRunner(runtime.ledger, runtime.agent, worker=worker, log=runtime.log.bind(component="job-updates"))
    job_worker = JobUpdateWorker(runtime.ledger, runner, runtime.db, runtime.signal, runtime.log,
                                 poll_interval=runtime.config.poll_interval_s)
    job_worker.start()
    return job_worker
