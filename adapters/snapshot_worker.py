"""The snapshot worker: follows snapshot, deletion and self-discovery requests and executes them.

Starts each requested operation it owns (adapters/disk_owners.py: one owner
per disk among the live workers) as soon as its disk and CPI allow
(adapters/dispatch.py), so a slow CPI call holds up only its own disk. It
also beats for its process (`worker_heartbeats`): the job-update and restore
workers of the process are alive while it beats.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from itertools import islice
from typing import TYPE_CHECKING, Any
from uuid import UUID

import structlog

from eventsourcing.utils import get_topic
from snapledger.domain.discovery import SelfDiscovery
from snapledger.domain.operations import OperationRunner
from snapledger.domain.snapshot import Snapshot
from snapledger.projections.database import Row
from snapledger.projections.events import iso
from snapledger.projections.queries import Queries
from snapledger.projections.in_flight import CALLING, RESOLVING

from .disk_owners import DiskOwners, gone_before_me, owner, owner_key
from .dispatch import Dispatcher, Work
from .follower import Batch, ChangeSignal
from .log_worker import LogWorker, stale_before
from .store import Database
from snapledger.domain.log import Log

if TYPE_CHECKING:
    from snapledger.domain.application import Ledger


# How often the live set of the disks' owners is read (decision 41). At the
# heartbeat interval (lease/3, 10 s by default) two workers started together
# raced for one worker's disks for the first 10 s of a fire.
OWNERS_REFRESH_S = 1.0


class SnapshotWorker(LogWorker):
    """The position only moves past an operation once it reached an outcome (or
    was found handled), and then only up to the first one still running: a
    crash replays unfinished work only, and replayed operations are skipped
    because their state is no longer pending.
    """

    component = "worker"
    position_name = "worker"
    # The aggregates' event classes are made by eventsourcing's @event: invisible to mypy.
    topics = (get_topic(Snapshot.Requested), get_topic(Snapshot.DeletionRequested),  # type: ignore[attr-defined]
              get_topic(SelfDiscovery.Requested))  # type: ignore[attr-defined]
    recover_at_start = True  # a restarted worker resumes what it left at once (its heartbeat has a thread of its own)

    def __init__(self, ledger: Ledger, runner: OperationRunner, db: Database, queries: Queries, signal: ChangeSignal,
                 log: Log, max_in_flight: int = 4, poll_interval: float = 1.0, lease_s: float = 30.0,
                 beat_db: Database | None = None) -> None:
        super().__init__(ledger, db, signal, log, runner.worker, lease_s=lease_s, poll_interval=poll_interval)
        self.runner = runner
        self.queries = queries
        # Beating has a thread (and, on PostgreSQL, a connection: `beat_db`) of its own. A
        # sweep can wait long (it resolves calls through a rate-limited CPI, or waits for a
        # disk behind a hung call), and the CPI threads hold the shared pool's connections
        # while they queue for a rate-limit slot: a beat behind either made this live
        # worker look dead, and the others recorded its calls in doubt.
        self.beat_db = beat_db or db
        self._heartbeat = threading.Thread(target=self._heartbeat_loop, name="worker-heartbeat", daemon=True)
        self.dispatcher = Dispatcher(runner.execute, self.log, total=max_in_flight, per_cpi=runner.max_in_flight,
                                     on_finished=self._advance)
        self._saved: int | None = None
        self._saving = threading.Lock()
        self.owners = DiskOwners(self.worker)
        # Operations passed over to their owner lately (id -> monotonic time, oldest
        # first): when that owner dies before claiming one and the disk becomes
        # ours, the sweep runs it at once. Kept 5 leases: older unclaimed ones
        # are recovered by age anyway (see `_unclaimed_is_ours`).
        self._passed: dict[UUID, float] = {}
        self._passed_lock = threading.Lock()

    def load_position(self) -> int:
        self._saved = self.tracked.load()
        return self._saved

    def handle(self, batch: Batch) -> None:
        for position, event in batch:
            work = self._work(position, event)
            if self.owners.owns(owner_key(work.disk, work.operation_id)):
                self.dispatcher.submit(work)
            else:  # its owner's: trying it too only raced the owner for the claim (decision 41)
                self.dispatcher.pass_over(position)
                self._remember_passed(work.operation_id)
        self._advance()

    def _remember_passed(self, op: UUID) -> None:
        now = time.monotonic()
        with self._passed_lock:
            self._passed[op] = now
            for oldest, at in list(islice(self._passed.items(), 2)):  # amortised: 1 in, up to 2 out
                if at < now - 5 * self.lease_s:
                    del self._passed[oldest]

    def _passed_over(self, op: UUID) -> bool:
        with self._passed_lock:
            return op in self._passed

    def _work(self, position: int, event: Any) -> Work:
        if isinstance(event, Snapshot.Requested):  # type: ignore[attr-defined]
            return Work(position, event.originator_id, event.cpi, event.disk_cid, event.task_id)
        if isinstance(event, SelfDiscovery.Requested):  # type: ignore[attr-defined]
            return Work(position, event.originator_id, event.cpi, None, event.task_id)
        snapshot = self.ledger.store.get_aggregate(event.originator_id)  # a deletion names neither
        return Work(position, event.originator_id, snapshot.cpi, snapshot.disk_cid, event.task_id)

    def _advance(self) -> None:
        """Record the low-water mark if it moved (skipped when a save is under way:
        the next finished operation, or the recovery loop, records it)."""
        if not self._saving.acquire(blocking=False):
            return
        try:
            position = self.dispatcher.low_water()
            if self._saved is None or position > self._saved:
                self.tracked.save(position)
                self._saved = position
        finally:
            self._saving.release()

    # Liveness and recovery ------------------------------------------------------------
    #
    # Each worker beats every lease/3 s. A claimed call whose worker has not beaten
    # for a whole lease is abandoned: it is recorded in doubt and resolved as far
    # as is safe (OperationRunner.recover). A pending operation nobody is working
    # on (its worker died while waiting to retry) is executed again: claims are
    # optimistic-concurrency checked, so two workers never both run it. One
    # never claimed is its disk's owner's (decision 41): others leave it alone
    # while that owner is alive.

    def recovery_pass(self) -> None:
        self.sweep()
        self._advance()

    def _heartbeat_loop(self) -> None:
        interval = max(self.lease_s / 3, 0.05)
        next_beat = 0.0
        while not self._stop.is_set():
            try:
                if time.monotonic() >= next_beat:
                    self.beat()
                    next_beat = time.monotonic() + interval
                # The owners' live set: read here, not per operation; at most
                # OWNERS_REFRESH_S apart, as a worker that joined is raced for
                # its disks until every other worker has read its beat.
                self.owners.update(self.live_workers(stale_before(self.lease_s), db=self.beat_db))
            except Exception as error:  # the database may be away: keep trying
                self.log.warning("heartbeat failed", error=str(error))
            self._stop.wait(min(interval, OWNERS_REFRESH_S))

    def beat(self) -> None:
        with self.beat_db.transaction() as cur:
            cur.execute(
                "INSERT INTO worker_heartbeats (worker, beat_at) VALUES (%s, %s) "
                "ON CONFLICT (worker) DO UPDATE SET beat_at = excluded.beat_at",
                (self.worker, iso(datetime.now(UTC))))

    def sweep(self) -> list[tuple[str, str | None]]:
        """One recovery pass; returns (operation id, what was done) for the log and tests."""
        now = datetime.now(UTC)
        stale = stale_before(self.lease_s, now)
        alive = self.live_workers(stale)  # for claims: a forgotten earlier run's calls wait for its lease
        self.owners.update(alive)
        done = []
        for row in self.queries.in_flight(older_than=stale):
            op = UUID(row["operation_id"])
            if row["state"] not in (CALLING, RESOLVING) and self.dispatcher.has(op):
                # Queued here, not abandoned: behind a rate limit or a busy disk a backlog
                # ages past any lease; the dispatcher runs it (running it from the sweep
                # blocked the sweep).
                continue
            if not self.abandoned(row["worker"], self.runner.is_running(op), alive):
                continue  # ours, in progress (a long CPI call, a retry wait), or another live worker's
            if (row["state"] not in (CALLING, RESOLVING) and row["worker"] is None
                    and not self._unclaimed_is_ours(op, row, self.owners.live(), now)):
                continue  # never claimed: its live owner runs it
            done.append((str(op), self._recover(op, row)))
        return done

    def _unclaimed_is_ours(self, op: UUID, row: Row, alive: frozenset[str], now: datetime) -> bool:
        """Whether this worker runs an operation nobody claimed: its disk is ours
        by the live set now, and either we passed it over (to an owner since
        dead: only its disks moved, some to us) or it is older than 5 leases (a
        restarted worker forgot what it passed over; the follower lags)."""
        if owner(owner_key(row["disk_cid"], op), alive) != self.worker:
            return False  # a live worker's: it takes it from the log, or its own sweep does
        return self._passed_over(op) or row["updated_at"] < stale_before(5 * self.lease_s, now)

    def _recover(self, op: UUID, row: Row) -> str | None:
        with structlog.contextvars.bound_contextvars(task_id=row["task_id"]):  # its CPI calls' lines too
            return self._recover_bound(op, row)

    def _recover_bound(self, op: UUID, row: Row) -> str | None:
        worker = row["worker"]
        if row["state"] == CALLING:
            result = self.runner.recover(op, dead_worker=worker)
        elif row["state"] == RESOLVING:
            result = self.runner.resume_in_doubt(op, dead_resolver=worker)
        else:  # pending, its worker gone (or never claimed for long): execute it again
            result = self.runner.execute(op)
        if result is not None:
            self.log.warning("recovered abandoned operation", operation_id=str(op), dead_worker=worker,
                             state=row["state"], result=result)
        return result

    def forget_earlier_runs(self) -> None:
        """Leave this host's earlier runs whose process is gone out of the
        owners' live set: a restarted worker owns their disks at once (decision 41)."""
        rows = self.beat_db.query("SELECT worker FROM worker_heartbeats")
        gone = [row["worker"] for row in rows if gone_before_me(row["worker"], self.worker)]
        self.owners.forget(gone)
        if gone:
            self.log.info("earlier runs left out of the disks' owners", workers=gone)

    def start(self) -> None:
        try:
            self.forget_earlier_runs()
        except Exception as error:  # the database may be away: their beats go stale within a lease anyway
            self.log.warning("could not forget earlier runs", error=str(error))
        self._heartbeat.start()  # first: the process's other workers count as alive from now on
        super().start()

    def stop(self) -> None:
        super().stop()
        if self._heartbeat.is_alive():
            self._heartbeat.join(timeout=5)
        self.dispatcher.stop()
        self._advance()
