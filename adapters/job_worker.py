"""The worker role for job updates: follows announcements and task progress, runs drains and stops.

A follower of its own (position `job_update_worker`) next to the snapshot worker:
drains can take minutes, so claimed instances run in a pool and the follower
moves on once the claims are durable. The clean snapshots an instance
requests are executed by the snapshot worker like any other snapshot; their
outcomes (`Task.OperationFinished` on a job-update task) bring us back here to
mark the instance ready and start the next one.

A recovery sweep (every lease/3 s) finds instances held (draining, stopping)
by a worker that has not beaten for a whole lease (`worker_heartbeats`,
written by the snapshot worker of each process), or by this worker with no
thread running them: each is recorded failed (`JobUpdate.WorkerLost`), and the
update goes on as after any failed step. The drain is not run again.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic

from snapledger.domain.job_update import JobUpdate, job_update_id
from snapledger.domain.job_update_runner import JobUpdateRunner
from snapledger.domain.task import Task
from snapledger.projections.events import iso
from snapledger.projections.job_updates import claimed_instances

from .follower import Batch, ChangeSignal, LogFollower, TrackedPosition

TOPICS = (get_topic(JobUpdate.Announced), get_topic(Task.OperationFinished))
POSITION_NAME = "job_update_worker"  # not "job_updates": that is the view's tracking row


class JobUpdateWorker:
    def __init__(self, ledger: Any, runner: JobUpdateRunner, db: Any, signal: ChangeSignal, log: Any,
                 max_instances: int = 16, poll_interval: float = 1.0, lease_s: float = 30.0) -> None:
        self.runner = runner
        self.db = db
        self.lease_s = lease_s
        self.log = log.bind(component="job-updates", worker=runner.worker)
        self.pool = ThreadPoolExecutor(max_workers=max_instances, thread_name_prefix="drain")
        self.follower = LogFollower("job-updates", ledger, signal, self._handle, self._load_position, self.log,
                                    topics=TOPICS, batch_size=200, poll_interval=poll_interval)
        self._stop = threading.Event()
        self._sweeper = threading.Thread(target=self._sweep_loop, name="job-update-recovery", daemon=True)

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
                # Running from the claim on: an instance queued behind busy threads is not abandoned.
                self.runner.running.add((update_id, instance_id))
                try:
                    self.pool.submit(self._execute, update_id, instance_id)
                except RuntimeError:  # the pool is shut down: no thread will run it, the sweep fails it
                    self.runner.running.discard((update_id, instance_id))
                    raise
        # Claims are durable: a replay after a crash finds them taken, never runs them twice.
        self._save_position(batch[-1][0])

    def _execute(self, update_id: UUID, instance_id: str) -> None:
        try:
            self.runner.execute(update_id, instance_id)
        except Exception:  # logged; the sweep finds the instance abandoned (its thread is gone)
            self.log.exception("job update step failed", job_update=str(update_id), instance_id=instance_id)

    # Recovery -------------------------------------------------------------------------------

    def sweep(self) -> list[tuple[str, str, str | None]]:
        """One recovery pass; returns (task id, instance id, what was done) for the log and tests."""
        now = datetime.now(timezone.utc)
        stale = iso(now - timedelta(seconds=self.lease_s))
        alive = {r["worker"] for r in self.db.query("SELECT worker FROM worker_heartbeats WHERE beat_at >= %s",
                                                    (stale,))}
        done = []
        for row in claimed_instances(self.db, older_than=stale):
            update_id, instance_id, worker = UUID(row["update_id"]), row["instance_id"], row["worker"]
            if worker == self.runner.worker:
                if (update_id, instance_id) in self.runner.running:
                    continue  # ours, in progress (a long drain)
                # Ours but no thread runs it: its thread failed. Treated as abandoned.
            elif worker in alive:
                continue  # another live worker is on it (a drain may take minutes)
            result = self.runner.recover(update_id, instance_id, dead_worker=worker)
            if result is not None:
                self.log.warning("abandoned job update step failed", task_id=row["task_id"], instance=row["instance"],
                                 dead_worker=worker, state=row["state"], since=row["updated_at"])
            done.append((row["task_id"], instance_id, result))
        return done

    def _sweep_loop(self) -> None:
        interval = max(self.lease_s / 3, 0.05)
        while not self._stop.wait(interval):
            try:
                self.sweep()
            except Exception as error:  # the database may be away: keep trying
                self.log.warning("job update recovery pass failed", error=str(error))

    def start(self) -> None:
        self.follower.start()
        self._sweeper.start()

    def stop(self) -> None:
        self._stop.set()
        self.follower.stop()
        if self._sweeper.is_alive():
            self._sweeper.join(timeout=5)
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
                                 poll_interval=runtime.config.poll_interval_s, lease_s=runtime.config.worker_lease_s)
    job_worker.start()
    return job_worker
