"""The worker role for restores: follows restore requests and task progress, runs the steps.

A follower of its own (position `restore_worker`), like the job-update
worker: a drain can take minutes, so claimed steps run in a pool and the
follower moves on once the claims are durable. The safety snapshot is
executed by the snapshot worker; its outcome (`Task.OperationFinished` on a
restore task) brings the restore back here for the CPI call.

A recovery sweep (every lease/3 s) finds restores held by a worker that has
not beaten for a whole lease (`worker_heartbeats`, written by the snapshot
worker of each process): an abandoned drain or stop fails the restore (the
disk was not touched); an abandoned restore call is repeated.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic

from snapledger.domain.restore import Restore, restore_id
from snapledger.domain.restore_runner import RestoreRunner
from snapledger.domain.task import Task
from snapledger.projections.events import iso
from snapledger.projections.restores import claimed_restores

from .follower import Batch, ChangeSignal, LogFollower, TrackedPosition

TOPICS = (get_topic(Restore.Requested), get_topic(Task.OperationFinished))
POSITION_NAME = "restore_worker"  # not "restores": that is the view's tracking row


class RestoreWorker:
    def __init__(self, ledger: Any, runner: RestoreRunner, db: Any, signal: ChangeSignal, log: Any,
                 lease_s: float = 30.0, max_restores: int = 8, poll_interval: float = 1.0) -> None:
        self.runner = runner
        self.db = db
        self.lease_s = lease_s
        self.log = log.bind(component="restores", worker=runner.worker)
        self.pool = ThreadPoolExecutor(max_workers=max_restores, thread_name_prefix="restore")
        self.follower = LogFollower("restores", ledger, signal, self._handle, self._load_position, self.log,
                                    topics=TOPICS, batch_size=200, poll_interval=poll_interval)
        self._stop = threading.Event()
        self._sweeper = threading.Thread(target=self._sweep_loop, name="restore-recovery", daemon=True)

    def _load_position(self) -> int:
        return TrackedPosition(self.db, POSITION_NAME).load()

    def _handle(self, batch: Batch) -> None:
        restores: list[UUID] = []
        for _, event in batch:
            if isinstance(event, Restore.Requested):
                rid = event.originator_id
            elif self.runner.is_restore_task(str(event.originator_id)):
                rid = restore_id(event.originator_id)
            else:
                continue  # another kind of task: not ours
            if rid not in restores:
                restores.append(rid)
        for rid in restores:
            step = self.runner.advance(rid)
            if step is not None:
                # Running from the claim on: a step queued behind busy threads is not abandoned.
                self.runner.running.add(rid)
                self.pool.submit(self._execute, rid, step)
        # Claims are durable: a replay after a crash finds them taken, never runs them twice.
        TrackedPosition(self.db, POSITION_NAME).save(batch[-1][0])

    def _execute(self, rid: UUID, step: str) -> None:
        try:
            self.runner.execute(rid, step)
        except Exception:  # logged; the sweep finds the restore abandoned (its thread is gone)
            self.log.exception("restore step failed", restore_id=str(rid), step=step)

    # Recovery -------------------------------------------------------------------------------

    def sweep(self) -> list[tuple[str, str | None]]:
        """One recovery pass; returns (task id, what was done) for the log and tests."""
        now = datetime.now(timezone.utc)
        stale = iso(now - timedelta(seconds=self.lease_s))
        alive = {r["worker"] for r in self.db.query("SELECT worker FROM worker_heartbeats WHERE beat_at >= %s",
                                                    (stale,))}
        done = []
        for row in claimed_restores(self.db, older_than=stale):
            rid, worker = UUID(row["restore_id"]), row["worker"]
            if worker == self.runner.worker:
                if rid in self.runner.running:
                    continue  # ours, in progress (a long drain, a big copy)
                # Ours but no thread runs it: its thread failed. Treated as abandoned.
            elif worker in alive:
                continue  # another live worker is on it
            result = self.runner.recover(rid, dead_worker=worker)
            if result is not None:
                self.log.warning("recovered abandoned restore", restore_id=str(rid), dead_worker=worker,
                                 state=row["state"], result=result)
            done.append((str(row["restore_id"]), result))
        return done

    def _sweep_loop(self) -> None:
        interval = max(self.lease_s / 3, 0.05)
        while not self._stop.wait(interval):
            try:
                self.sweep()
            except Exception as error:  # the database may be away: keep trying
                self.log.warning("restore recovery pass failed", error=str(error))

    def start(self) -> None:
        self.follower.start()
        self._sweeper.start()

    def stop(self) -> None:
        self._stop.set()
        self.follower.stop()
        # A running drain is ended by the agent's cancel (the job-update worker's
        # stop calls it: one agent per process); a running copy finishes.
        cancel = getattr(self.runner.agent, "cancel", None)
        if cancel is not None:
            cancel()
        if self._sweeper.is_alive():
            self._sweeper.join(timeout=5)
        self.pool.shutdown(wait=True, cancel_futures=True)


def start_restore_worker(runtime: Any, worker: str) -> RestoreWorker:
    """Called by the composition root for the worker role, after the job-update
    worker (which builds the agent) and the snapshot worker (heartbeats, disk locks)."""
    from .job_worker import build_agent

    if runtime.agent is None:
        runtime.agent = build_agent(runtime.config, runtime.log)
    from .metrics import observe_cpi_call

    runner = RestoreRunner(runtime.ledger, runtime.agent, runtime.cpis, worker=worker, disk_locks=runtime.locks,
                           log=runtime.log.bind(component="restores"), on_call=observe_cpi_call)
    restore_worker = RestoreWorker(runtime.ledger, runner, runtime.db, runtime.signal, runtime.log,
                                   lease_s=runtime.config.worker_lease_s,
                                   poll_interval=runtime.config.poll_interval_s)
    restore_worker.start()
    return restore_worker
