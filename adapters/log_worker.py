"""The one worker skeleton: follow the log, claim, beat, sweep.

Every worker of a process (snapshot_worker.py, job_update_worker.py,
restore_worker.py) is a `LogWorker`: a follower of the log's topics it cares
about, from a position of its own in `projection_tracking`, and a recovery
loop that every lease/3 s finds the work a silent worker left behind.

The crash guarantees this skeleton keeps (docs/decisions.md #5, #10, #12, #26):
- the position moves only past work that is finished or durably claimed, so a
  crash replays unfinished work only;
- claims are optimistic-concurrency checked by the runners (domain/), so a
  replayed claim is found taken and nothing runs twice;
- a claim is abandoned only when its worker is this one with no thread on it,
  or a worker that has not beaten for a whole lease (`worker_heartbeats`,
  written by the snapshot worker of each process).

`ClaimingLogWorker` adds what the job-update and restore workers share:
claimed steps run in a thread pool (a drain can take minutes), the follower
moves on once the claims are durable, and stopping cancels the agent's drains.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

from snapledger.domain.agent import Agent
from snapledger.projections.database import Row
from snapledger.projections.events import iso

from .follower import Batch, ChangeSignal, LogFollower, TrackedPosition
from .store import Database
from snapledger.domain.log import Log

if TYPE_CHECKING:
    from snapledger.domain.application import Ledger

HEARTBEAT_DDL = """CREATE TABLE IF NOT EXISTS worker_heartbeats (
    worker TEXT PRIMARY KEY,
    beat_at TEXT NOT NULL
)"""


def stale_before(lease_s: float, now: datetime | None = None) -> str:
    """The moment before which a claim or a beat is older than a lease."""
    moment = iso((now or datetime.now(UTC)) - timedelta(seconds=lease_s))
    assert moment is not None  # iso() of a datetime
    return moment


class LogWorker:
    """A follower of `topics` from its tracked position, and a recovery loop.

    Subclasses name themselves (`component`, `position_name`, `topics`) and
    provide `handle` (a batch of events) and `recovery_pass`."""

    component: str  # the log's `component` and the follower's name
    position_name: str  # its row in projection_tracking: never renamed (it is data)
    topics: Sequence[str]
    recover_at_start = False  # the first recovery pass at start, or a lease/3 later

    def __init__(self, ledger: Ledger, db: Database, signal: ChangeSignal, log: Log, worker: str,
                 lease_s: float = 30.0, poll_interval: float = 1.0, batch_size: int = 200) -> None:
        self.ledger = ledger
        self.db = db
        self.worker = worker
        self.lease_s = lease_s
        self.log = log.bind(component=self.component, worker=worker)
        self.tracked = TrackedPosition(db, self.position_name)
        self.follower = LogFollower(self.component, ledger, signal, self.handle, self.load_position, self.log,
                                    topics=self.topics, batch_size=batch_size, poll_interval=poll_interval)
        self._stop = threading.Event()
        self._recovery = threading.Thread(target=self._recovery_loop, name=f"{self.component}-recovery",
                                          daemon=True)

    def load_position(self) -> int:
        return self.tracked.load()

    def handle(self, batch: Batch) -> None:
        raise NotImplementedError

    def recovery_pass(self) -> None:
        raise NotImplementedError

    # Liveness ---------------------------------------------------------------------------

    def live_workers(self, stale: str, db: Database | None = None) -> set[str]:
        """Workers that beat since `stale` (this one included: it is running)."""
        rows = (db or self.db).query("SELECT worker FROM worker_heartbeats WHERE beat_at >= %s", (stale,))
        return {row["worker"] for row in rows} | {self.worker}

    def abandoned(self, claimant: str | None, running_here: bool, alive: set[str]) -> bool:
        """Whether a claim older than a lease is left to recovery: ours with no
        thread on it (its thread failed), or a worker that stopped beating."""
        if claimant == self.worker:
            return not running_here
        return claimant not in alive

    def _recovery_loop(self) -> None:
        interval = max(self.lease_s / 3, 0.05)
        if not self.recover_at_start and self._stop.wait(interval):
            return
        while not self._stop.is_set():
            try:
                self.recovery_pass()
            except Exception as error:  # the database may be away: keep trying
                self.log.warning("recovery pass failed", error=str(error))
            self._stop.wait(interval)

    # Life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        self.follower.start()
        self._recovery.start()

    def stop_following(self) -> None:
        """Stop taking new work and end the recovery loop; work under way goes on."""
        self._stop.set()
        self.follower.stop()

    def join_recovery(self) -> None:
        if self._recovery.is_alive():
            self._recovery.join(timeout=5)

    def stop(self) -> None:
        self.stop_following()
        self.join_recovery()


class StepRunner(Protocol):
    """What a claiming worker needs of its runner (domain/): who claims, the agent
    that drains, and the set of what this process executes now."""

    worker: str
    agent: Agent
    running: set[Any]


class ClaimingLogWorker(LogWorker):
    """Claims the steps of its aggregates as events arrive and runs them in a pool.

    A subclass says which aggregate an event concerns (`subject_of`), claims
    its next step (`claim`, which calls `run_claimed`), lists the claims older
    than a lease (`claims`) and recovers an abandoned one (`recover`)."""

    thread_prefix: str
    pool_size: int  # threads for claimed steps (each may be a drain of minutes)

    def __init__(self, ledger: Ledger, runner: StepRunner, db: Database, signal: ChangeSignal, log: Log,
                 lease_s: float = 30.0, poll_interval: float = 1.0) -> None:
        super().__init__(ledger, db, signal, log, runner.worker, lease_s=lease_s, poll_interval=poll_interval)
        self.runner = runner
        self.agent = runner.agent
        self.running = runner.running
        self.pool = ThreadPoolExecutor(max_workers=self.pool_size, thread_name_prefix=self.thread_prefix)

    def subject_of(self, event: Any) -> UUID | None:
        raise NotImplementedError

    def claim(self, subject: UUID) -> None:
        raise NotImplementedError

    def claims(self, stale: str) -> list[Row]:
        raise NotImplementedError

    def is_running(self, claim: Row) -> bool:
        raise NotImplementedError

    def recover(self, claim: Row) -> tuple[object, ...]:
        raise NotImplementedError

    def _subjects(self, batch: Batch) -> Iterator[UUID]:
        seen: set[UUID] = set()
        for _, event in batch:
            subject = self.subject_of(event)
            if subject is not None and subject not in seen:
                seen.add(subject)
                yield subject

    def handle(self, batch: Batch) -> None:
        for subject in self._subjects(batch):
            self.claim(subject)
        # Claims are durable: a replay after a crash finds them taken, never runs them twice.
        self.tracked.save(batch[-1][0])

    def run_claimed(self, key: Hashable, run: Callable[[], object], **context: object) -> None:
        """Run a claimed step on a pool thread; it counts as running from the claim
        on, so one queued behind busy threads is not taken for abandoned."""
        self.running.add(key)
        try:
            self.pool.submit(self._run, run, context)
        except RuntimeError:  # the pool is shut down: no thread will run it, the sweep recovers it
            self.running.discard(key)
            raise

    def _run(self, run: Callable[[], object], context: dict[str, object]) -> None:
        try:
            run()
        except Exception:  # logged; the sweep finds the claim abandoned (its thread is gone)
            self.log.exception("step failed", **context)

    def sweep(self) -> list[tuple[object, ...]]:
        """One recovery pass; returns what `recover` did with each abandoned claim (for the log and tests)."""
        stale = stale_before(self.lease_s)
        alive = self.live_workers(stale)
        return [self.recover(claim) for claim in self.claims(stale)
                if self.abandoned(claim["worker"], self.is_running(claim), alive)]

    def recovery_pass(self) -> None:
        self.sweep()

    def stop(self) -> None:
        self.stop_following()
        # A drain may run for minutes (or forever, without a time-out): end it
        # rather than hang the shutdown; its step fails as cancelled. One agent
        # per process: cancelling twice is harmless.
        cancel = getattr(self.agent, "cancel", None)
        if cancel is not None:
            cancel()
        self.join_recovery()
        self.pool.shutdown(wait=True, cancel_futures=True)
