"""The worker process: follows snapshot requests in the log and executes them."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
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
from .follower import Batch, ChangeSignal, LogFollower, TrackedPosition

HEARTBEAT_DDL = """CREATE TABLE IF NOT EXISTS worker_heartbeats (
    worker TEXT PRIMARY KEY,
    beat_at TEXT NOT NULL
)"""

WORK_TOPICS = (get_topic(Snapshot.Requested), get_topic(Snapshot.DeletionRequested),
               get_topic(SelfDiscovery.Requested))
POSITION_NAME = "worker"


class Worker:
    """Executes each batch's operations concurrently (bounded), then advances.

    The position only moves past a batch once every operation in it reached an
    outcome (or was found handled), so a crash replays at most one batch, and
    replayed operations are skipped because their state is no longer pending.
    """

    def __init__(self, ledger: Any, runner: OperationRunner, db: Any, signal: ChangeSignal, log: Any,
                 max_in_flight: int = 4, poll_interval: float = 1.0, lease_s: float = 30.0) -> None:
        self.runner = runner
        self.db = db
        self.log = log.bind(component="worker", worker=runner.worker)
        self.lease_s = lease_s
        self.queries = Queries(db)
        self._stop = threading.Event()
        self._recovery = threading.Thread(target=self._recovery_loop, name="worker-recovery", daemon=True)
        with db.transaction() as cur:
            cur.execute(HEARTBEAT_DDL)
        self.pool = ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix="cpi")
        self.follower = LogFollower(
            "worker", ledger, signal, self._handle, self._load_position, self.log,
            topics=WORK_TOPICS, batch_size=200, poll_interval=poll_interval,
        )

    def _load_position(self) -> int:
        return TrackedPosition(self.db, POSITION_NAME).load()

    def _save_position(self, position: int) -> None:
        TrackedPosition(self.db, POSITION_NAME).save(position)

    def _handle(self, batch: Batch) -> None:
        futures = [self.pool.submit(self.runner.execute, event.originator_id) for _, event in batch]
        errors = [f.exception() for f in futures if f.exception() is not None]
        if errors:
            raise errors[0]  # retry the batch: handled operations are skipped
        self._save_position(batch[-1][0])

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
            elif worker is not None or row["updated_at"] < iso(now - timedelta(seconds=5 * self.lease_s)):
                result = self.runner.execute(op)
            else:
                continue  # never claimed and recent: the workers following the log will get to it
            if result is not None:
                self.log.warning("recovered abandoned operation", operation_id=str(op), dead_worker=worker,
                                 state=row["state"], result=result)
            done.append((str(op), result))
        return done

    def _recovery_loop(self) -> None:
        interval = max(self.lease_s / 3, 0.05)
        while not self._stop.is_set():
            try:
                self.beat()
                self.sweep()
            except Exception as error:  # the database may be away: keep trying
                self.log.warning("recovery pass failed", error=str(error))
            self._stop.wait(interval)

    def start(self) -> None:
        self.follower.start()
        self._recovery.start()

    def stop(self) -> None:
        self._stop.set()
        self.follower.stop()
        if self._recovery.is_alive():
            self._recovery.join(timeout=5)
        self.pool.shutdown(wait=True)
