"""The worker process: follows snapshot requests in the log and executes them."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic

from snapledger.domain.operations import OperationRunner
from snapledger.domain.discovery import SelfDiscovery
from snapledger.domain.snapshot import Snapshot
from snapledger.projections.events import iso
from snapledger.projections.queries import Queries
from snapledger.projections.views import CALLING, RESOLVING
from .dispatch import Dispatcher, Work
from .follower import Batch, ChangeSignal, LogFollower, TrackedPosition

HEARTBEAT_DDL = """CREATE TABLE IF NOT EXISTS worker_heartbeats (
    worker TEXT PRIMARY KEY,
    beat_at TEXT NOT NULL
)"""

WORK_TOPICS = (get_topic(Snapshot.Requested), get_topic(Snapshot.DeletionRequested),
               get_topic(SelfDiscovery.Requested))
POSITION_NAME = "worker"


class Worker:
    """Starts each requested operation as soon as its disk and CPI allow
    (adapters/dispatch.py), so a slow CPI call holds up only its own disk.

    The position only moves past an operation once it reached an outcome (or
    was found handled), and then only up to the first one still running: a
    crash replays unfinished work only, and replayed operations are skipped
    because their state is no longer pending.
    """

    def __init__(self, ledger: Any, runner: OperationRunner, db: Any, signal: ChangeSignal, log: Any,
                 max_in_flight: int = 4, poll_interval: float = 1.0, lease_s: float = 30.0) -> None:
        self.runner = runner
        self.ledger = ledger
        self.db = db
        self.log = log.bind(component="worker", worker=runner.worker)
        self.lease_s = lease_s
        self.queries = Queries(db)
        self._stop = threading.Event()
        self._recovery = threading.Thread(target=self._recovery_loop, name="worker-recovery", daemon=True)
        # Beats on a thread of their own: a sweep that waits (a disk lock behind a hung
        # call, a slow database) must not make this live worker look dead to the others.
        self._heartbeat = threading.Thread(target=self._heartbeat_loop, name="worker-heartbeat", daemon=True)
        with db.transaction() as cur:
            cur.execute(HEARTBEAT_DDL)
        self.dispatcher = Dispatcher(runner.execute, self.log, total=max_in_flight, per_cpi=runner.max_in_flight,
                                     on_finished=self._advance)
        self._saved: int | None = None
        self._saving = threading.Lock()
        self.follower = LogFollower(
            "worker", ledger, signal, self._handle, self._load_position, self.log,
            topics=WORK_TOPICS, batch_size=200, poll_interval=poll_interval,
        )

    def _load_position(self) -> int:
        self._saved = TrackedPosition(self.db, POSITION_NAME).load()
        return self._saved

    def _handle(self, batch: Batch) -> None:
        for position, event in batch:
            self.dispatcher.submit(self._work(position, event))
        self._advance()

    def _work(self, position: int, event: Any) -> Work:
        if isinstance(event, Snapshot.Requested):
            return Work(position, event.originator_id, event.cpi, event.disk_cid)
        if isinstance(event, SelfDiscovery.Requested):
            return Work(position, event.originator_id, event.cpi, None)
        snapshot = self.ledger.get_aggregate(event.originator_id)  # a deletion names neither
        return Work(position, event.originator_id, snapshot.cpi, snapshot.disk_cid)

    def _advance(self) -> None:
        """Record the low-water mark if it moved (skipped when a save is under way:
        the next finished operation, or the recovery loop, records it)."""
        if not self._saving.acquire(blocking=False):
            return
        try:
            position = self.dispatcher.low_water()
            if self._saved is None or position > self._saved:
                TrackedPosition(self.db, POSITION_NAME).save(position)
                self._saved = position
        finally:
            self._saving.release()

    # Liveness and recovery ------------------------------------------------------------
    #
    # Each worker beats every lease/3 s. A claimed call whose worker has not beaten
    # for a whole lease is abandoned: it is recorded in doubt and resolved as far
    # as is safe (OperationRunner.recover). A pending operation nobody is working
    # on (its worker died while waiting to retry) is executed again: claims are
    # optimistic-concurrency checked, so two workers never both run it.

    def beat(self) -> None:
        with self.db.transaction() as cur:
            cur.execute(
                "INSERT INTO worker_heartbeats (worker, beat_at) VALUES (%s, %s) "
                "ON CONFLICT (worker) DO UPDATE SET beat_at = excluded.beat_at",
                (self.runner.worker, iso(datetime.now(timezone.utc))))

    def sweep(self) -> list[tuple[str, str | None]]:
        """One recovery pass; returns (operation id, what was done) for the log and tests."""
        now = datetime.now(timezone.utc)
        stale = iso(now - timedelta(seconds=self.lease_s))
        alive = {r["worker"] for r in self.db.query("SELECT worker FROM worker_heartbeats WHERE beat_at >= %s",
                                                    (stale,))}
        alive.add(self.runner.worker)
        done = []
        for row in self.queries.in_flight(older_than=stale):
            worker = row["worker"]
            op = UUID(row["operation_id"])
            if worker == self.runner.worker:
                if self.runner.is_running(op):
                    continue  # ours, in progress (a long CPI call, a retry wait)
                # Ours but no thread runs it: its thread failed. Treated as abandoned.
            elif worker is not None and worker in alive:
                continue  # another live worker is on it
            if row["state"] == CALLING:
                result = self.runner.recover(op, dead_worker=worker)
            elif row["state"] == RESOLVING:
                result = self.runner.resume_in_doubt(op, dead_resolver=worker)
            elif worker is None and self.dispatcher.holds(op):
                continue  # queued here behind its disk or a limit: our dispatcher will run it
            elif worker is not None or row["updated_at"] < iso(now - timedelta(seconds=5 * self.lease_s)):
                result = self.runner.execute(op)
            else:
                continue  # never claimed and recent: the workers following the log will get to it
            if result is not None:
                self.log.warning("recovered abandoned operation", operation_id=str(op), dead_worker=worker,
                                 state=row["state"], result=result)
            done.append((str(op), result))
        return done

    def _heartbeat_loop(self) -> None:
        self._every_third_of_a_lease(self.beat, "heartbeat failed")

    def _recovery_loop(self) -> None:
        def recovery_pass() -> None:
            self.sweep()
            self._advance()

        self._every_third_of_a_lease(recovery_pass, "recovery pass failed")

    def _every_third_of_a_lease(self, step: Any, failed: str) -> None:
        interval = max(self.lease_s / 3, 0.05)
        while not self._stop.is_set():
            try:
                step()
            except Exception as error:  # the database may be away: keep trying
                self.log.warning(failed, error=str(error))
            self._stop.wait(interval)

    def start(self) -> None:
        self.follower.start()
        self._heartbeat.start()
        self._recovery.start()

    def stop(self) -> None:
        self._stop.set()
        self.follower.stop()
        for thread in (self._recovery, self._heartbeat):
            if thread.is_alive():
                thread.join(timeout=5)
        self.dispatcher.stop()
        self._advance()
