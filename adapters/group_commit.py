"""Group commit: concurrent saves share ONE event-store transaction.

Every `Ledger.save()` still collects its own events (one command, one worker
step) and still returns only after they are durable. What changes is who
writes them: callers hand their events to one committer thread, which writes
everything that arrived while the previous transaction was committing (and,
under load, what arrives within `max_wait_s` more) with a single
`EventStore.put()`: one INSERT, one table lock, one fsync for the lot. The
PostgreSQL recorder takes an exclusive table lock per transaction, so writers
do not scale with threads; this is how throughput scales instead
(docs/decisions.md #16).

Semantics kept per caller:
- all-or-nothing: a caller's events are in exactly one transaction;
- durable before answered: a caller returns only after that commit;
- conflicts stay private: if the shared transaction fails on an optimistic
  concurrency conflict (IntegrityError), every caller's events are retried in
  a transaction of their own, so only the caller that really conflicts gets
  the IntegrityError (and its `save_with_retry` runs again as before);
- two callers writing the same aggregate are never in one batch (one of them
  would fail the batch for certain): the later one waits for the next batch;
- any other error (database down, lock timeout) fails every caller of that
  batch: none of them is acknowledged, none of their events is stored.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from uuid import UUID

from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import IntegrityError, Recording

from snapledger.domain.services.base import RecordEvents
from snapledger.domain.log import Log


class _Pending:
    __slots__ = ("done", "error", "events", "ids", "recordings")

    def __init__(self, events: list[DomainEventProtocol[UUID]]) -> None:
        self.events = events
        self.ids = {(e.originator_id, e.originator_version) for e in events}
        self.done = threading.Event()
        self.recordings: list[Recording[UUID]] = []
        self.error: BaseException | None = None


class GroupCommitter:
    """Install with `ledger.record_events = committer.record` (adapters/bootstrap.py `build_ledger`)."""

    def __init__(self, put: RecordEvents, log: Log | None = None, max_batch: int = 500,
                 max_wait_s: float = 0.002, start: bool = True) -> None:
        self.put = put  # EventStore.put: one transaction for the given events
        self.log = log
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._queue: deque[_Pending] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        # Observability (and what the tests check): sizes of committed batches.
        self.batches = 0
        self.committed = 0
        self.largest_batch = 0
        self.fallbacks = 0
        if start:
            self.start()

    # Caller side ------------------------------------------------------------

    def record(self, events: list[DomainEventProtocol[UUID]]) -> list[Recording[UUID]]:
        """Durably record one caller's events (in one transaction); returns their recordings."""
        if not events:
            return []
        item = _Pending(list(events))
        with self._cond:
            direct = self._stopping
            if not direct:
                # Queued even before start() (tests build a deterministic first batch).
                self._queue.append(item)
                self._cond.notify()
        if direct:
            return self.put(item.events)
        item.done.wait()
        if item.error is not None:
            raise item.error
        return item.recordings

    def pending(self) -> int:
        with self._cond:
            return len(self._queue)

    # Committer side -----------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Commit what is queued, then let later saves write directly."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        last_size = 0
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue and self._stopping:
                    return
                # Under load (the last batch was shared), linger a moment so the
                # next batch is fuller; an idle service commits at once.
                if last_size > 1 and self.max_wait_s > 0 and len(self._queue) < self.max_batch:
                    deadline = time.monotonic() + self.max_wait_s
                    while len(self._queue) < self.max_batch and not self._stopping:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        self._cond.wait(remaining)
                batch = self._take()
            last_size = len(batch)
            self._commit(batch)

    def _take(self) -> list[_Pending]:
        """Up to max_batch queued items, none writing an aggregate version another
        one in the batch writes (those stay queued, in order, for the next batch)."""
        batch: list[_Pending] = []
        deferred: list[_Pending] = []
        written: set[tuple[UUID, int]] = set()
        aggregates: set[UUID] = set()
        while self._queue and len(batch) < self.max_batch:
            item = self._queue.popleft()
            ids = {originator for originator, _ in item.ids}
            if ids & aggregates or item.ids & written:
                deferred.append(item)
                continue
            batch.append(item)
            aggregates |= ids
            written |= item.ids
        self._queue.extendleft(reversed(deferred))
        return batch

    def _commit(self, batch: list[_Pending]) -> None:
        events = [event for item in batch for event in item.events]
        try:
            recordings = self.put(events)
        except IntegrityError as conflict:
            # Somebody's events conflict with what is stored: find out whose,
            # one transaction each, so nobody else fails because of it.
            if len(batch) == 1:
                self._finish(batch[0], error=conflict)
                return
            self.fallbacks += 1
            for item in batch:
                try:
                    item.recordings = self.put(item.events)
                    self._count([item])
                except BaseException as error:
                    item.error = error
                item.done.set()
            return
        except BaseException as error:
            if self.log is not None:
                self.log.warning("group commit failed", callers=len(batch), error=repr(error))
            for item in batch:
                self._finish(item, error=error)
            return
        offset = 0
        for item in batch:
            item.recordings = recordings[offset:offset + len(item.events)]
            offset += len(item.events)
        self._count(batch)
        for item in batch:
            item.done.set()

    def _count(self, batch: list[_Pending]) -> None:
        self.batches += 1
        self.committed += len(batch)
        self.largest_batch = max(self.largest_batch, len(batch))

    @staticmethod
    def _finish(item: _Pending, error: BaseException) -> None:
        item.error = error
        item.done.set()

