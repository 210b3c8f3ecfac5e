"""Starting each operation as soon as its CPI and its disk allow, not after a batch.

Why: the worker used to run a batch of operations and wait for all of them
before it read on, so one hung CPI call (up to its `timeout`, 300 s by
default) held up every snapshot behind it, of any disk, deployment or CPI.

Here an operation waits only for what it must wait for:
- its disk: calls for one disk never overlap, so an operation whose disk is
  busy waits in that disk's queue, holding no thread;
- its CPI's `max_in_flight` (an IaaS's rate limit);
- the worker's `max_in_flight`, the total of calls at once, except that a CPI
  with nothing running may always start one: a CPI whose calls all hang can
  use up its own slots, never the other CPIs' (so the total may exceed the
  limit by the number of other CPIs, at most).

Fairness: a free slot of a CPI goes to its tasks in turn (round robin), not
to the oldest operation. A scheduled fire over 10,000 disks is one task; a
manual snapshot of another deployment requested behind it is another, and
its operation starts at the next free slot instead of after the backlog
(behind a rate limit of 100 calls/s, 100 s later). Under a rate limit the
started call then waits only for the slots reserved before it, by calls
already started (adapters/rate_limit.py hands slots out in order).

The log position the worker may record is the low-water mark: every
operation at or before it has finished, whatever is still running after it.
So a crash replays only unfinished work (and replayed operations that were
handled are skipped, their state no longer pending).
"""

from __future__ import annotations

import heapq
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass
from collections.abc import Callable, Mapping
from uuid import UUID

import structlog
from snapledger.domain.log import Log


@dataclass(frozen=True)
class Work:
    position: int  # the log position of the request
    operation_id: UUID
    cpi: str
    disk: str | None  # None: no disk to serialise on (self-discovery)
    task: str = ""  # whose turn it is: slots go to tasks in turn


class Dispatcher:
    """Runs `run(operation_id)` for each submitted operation on a thread of its own,
    within the limits above; retries an operation whose run raised (the
    database may be away) after a back-off, never skipping it."""

    def __init__(self, run: Callable[[UUID], object], log: Log, total: int,
                 per_cpi: Mapping[str, int] | None = None, max_queued: int = 10_000,
                 on_finished: Callable[[], None] = lambda: None) -> None:
        self.run = run
        self.on_finished = on_finished  # called after each operation finished (outside the lock)
        self.log = log
        self.total = total
        self.per_cpi = dict(per_cpi or {})
        self.max_queued = max_queued
        self._cond = threading.Condition()
        # Submitted, not finished. By request, not operation: a snapshot's deletion
        # may be requested the moment its taking was recorded, before that run returned.
        self._known: dict[tuple[UUID, int], Work] = {}
        self._operations: dict[UUID, int] = {}  # operation -> its requests in `_known`
        # Ready to start but for a limit: by CPI, then by task in turn order.
        self._ready: dict[str, OrderedDict[str, deque[Work]]] = {}
        self._by_disk: dict[str, deque[Work]] = {}  # disk -> queue; the head is running or waiting
        self._running_by_cpi: dict[str, int] = {}
        self._running = 0
        self._unfinished: list[int] = []  # heap of positions, lazily cleaned
        self._finished_positions: dict[int, int] = {}  # position -> finished count (lazy deletion)
        self._highest = 0  # the highest position submitted
        self._threads: set[threading.Thread] = set()
        self._stopping = threading.Event()

    # Submitting ----------------------------------------------------------------

    def submit(self, work: Work) -> None:
        """Queue one operation; blocks while `max_queued` are unfinished (back-pressure)."""
        with self._cond:
            while len(self._known) >= self.max_queued and not self._stopping.is_set():
                self._cond.wait(0.5)
            self._highest = max(self._highest, work.position)
            if (work.operation_id, work.position) in self._known:
                return  # read again (the follower re-read after an error): already on its way
            self._known[(work.operation_id, work.position)] = work
            self._operations[work.operation_id] = self._operations.get(work.operation_id, 0) + 1
            heapq.heappush(self._unfinished, work.position)
            if work.disk is None:
                self._make_ready(work)
            else:
                queue = self._by_disk.setdefault(work.disk, deque())
                queue.append(work)
                if len(queue) == 1:  # the disk is free: its turn now
                    self._make_ready(work)
            self._start_what_may()

    def pass_over(self, position: int) -> None:
        """A request another worker owns (adapters/disk_owners.py): nothing runs
        here, and for this worker's position it counts as finished. If its
        owner dies before running it, the recovery sweep finds it, not a replay."""
        with self._cond:
            self._highest = max(self._highest, position)

    def low_water(self) -> int:
        """The highest position such that every operation at or before it has finished."""
        with self._cond:
            while self._unfinished and self._finished_positions.get(self._unfinished[0], 0):
                position = heapq.heappop(self._unfinished)
                self._finished_positions[position] -= 1
                if not self._finished_positions[position]:
                    del self._finished_positions[position]
            return self._unfinished[0] - 1 if self._unfinished else self._highest

    def unfinished(self) -> int:
        with self._cond:
            return len(self._known)

    def has(self, operation_id: UUID) -> bool:
        """Whether the operation was submitted and has not finished: queued
        (behind its disk, a limit, or a rate-limited backlog) or running."""
        with self._cond:
            return self._operations.get(operation_id, 0) > 0

    # Starting and finishing ---------------------------------------------------------

    def _may_start(self, cpi: str) -> bool:
        running = self._running_by_cpi.get(cpi, 0)
        if running >= self.per_cpi.get(cpi, self.total):
            return False
        return self._running < self.total or running == 0  # every CPI always gets one slot

    def _make_ready(self, work: Work) -> None:
        tasks = self._ready.setdefault(work.cpi, OrderedDict())
        if work.task not in tasks:
            tasks[work.task] = deque()
            # A task with nothing waiting goes first: its operation waits only
            # for calls in flight, not for a turn of each task with a backlog.
            tasks.move_to_end(work.task, last=False)
        tasks[work.task].append(work)

    def _next_ready(self, cpi: str) -> Work:
        """The oldest ready operation of the task whose turn it is; that task goes last."""
        tasks = self._ready[cpi]
        task, works = next(iter(tasks.items()))
        work = works.popleft()
        if works:
            tasks.move_to_end(task)
        else:
            del tasks[task]
        if not tasks:
            del self._ready[cpi]
        return work

    def _start_what_may(self) -> None:
        """Start each ready operation its limits allow, CPIs and tasks in turn
        (called with the lock). Each start is O(1): a backlog of 10,000 is not
        scanned per finished call."""
        if self._stopping.is_set():
            return
        started = True
        while started:
            started = False
            for cpi in list(self._ready):
                if self._may_start(cpi):
                    self._start(self._next_ready(cpi))
                    started = True

    def _start(self, work: Work) -> None:
        self._running += 1
        self._running_by_cpi[work.cpi] = self._running_by_cpi.get(work.cpi, 0) + 1
        thread = threading.Thread(target=self._execute, args=(work,), name=f"cpi-{work.cpi}", daemon=True)
        self._threads.add(thread)
        thread.start()

    def _execute(self, work: Work) -> None:
        # Every line logged while the operation runs (its CPI calls, retries,
        # rate limits) names its task; the logging set-up adds the number.
        with structlog.contextvars.bound_contextvars(task_id=work.task or None):
            self._execute_bound(work)

    def _execute_bound(self, work: Work) -> None:
        delay = 0.1
        while not self._stopping.is_set():
            try:
                self.run(work.operation_id)
                break
            except Exception as error:  # e.g. the database is away: try again, never skip
                self.log.error("operation failed; retrying", operation_id=str(work.operation_id),
                               error=repr(error), retry_in_s=delay)
                self._stopping.wait(delay)
                delay = min(delay * 2, 5.0)
        else:
            self._release(work, finished=False)
            self._leave()
            return
        self._release(work, finished=True)
        try:
            self.on_finished()
        except Exception as error:  # recording the position can wait for the next one
            self.log.warning("could not record the worker position", error=repr(error))
        finally:
            self._leave()

    def _leave(self) -> None:
        """This thread is done, its position save included: only now may `stop`
        return (and the caller close the database under it; on SQLite a save
        on a closed connection crashed the process)."""
        with self._cond:
            self._threads.discard(threading.current_thread())
            self._cond.notify_all()

    def _release(self, work: Work, finished: bool) -> None:
        with self._cond:
            self._running -= 1
            self._running_by_cpi[work.cpi] -= 1
            if finished:
                del self._known[(work.operation_id, work.position)]
                self._operations[work.operation_id] -= 1
                if not self._operations[work.operation_id]:
                    del self._operations[work.operation_id]
                self._finished_positions[work.position] = self._finished_positions.get(work.position, 0) + 1
            if work.disk is not None:
                queue = self._by_disk[work.disk]
                queue.popleft()
                if queue:
                    self._make_ready(queue[0])  # the disk's next operation
                else:
                    del self._by_disk[work.disk]
            self._start_what_may()
            self._cond.notify_all()

    def stop(self, timeout: float | None = None) -> None:
        """Start nothing new; wait for the running operations (a CPI call is never abandoned)."""
        self._stopping.set()
        with self._cond:
            threads = list(self._threads)
            self._cond.notify_all()
        for thread in threads:
            thread.join(timeout)
