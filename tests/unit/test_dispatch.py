"""The worker's dispatcher: an operation waits only for its own disk and its
CPI's limits, and the position it reports never passes unfinished work."""

from __future__ import annotations

import threading
import time
from uuid import UUID, uuid4

import structlog

from snapledger.adapters.dispatch import Dispatcher, Work


class Calls:
    """A stand-in for OperationRunner.execute: each call blocks until released."""

    def __init__(self) -> None:
        self.release: dict[UUID, threading.Event] = {}
        self.started: list[UUID] = []
        self.guard = threading.Lock()

    def gate(self, op: UUID) -> threading.Event:
        with self.guard:
            return self.release.setdefault(op, threading.Event())

    def run(self, op: UUID) -> None:
        with self.guard:
            self.started.append(op)
        self.gate(op).wait(10)

    def wait_started(self, *ops: UUID, timeout: float = 5) -> None:
        deadline = time.monotonic() + timeout
        while not all(op in self.started for op in ops):
            assert time.monotonic() < deadline, f"not started: {[op for op in ops if op not in self.started]}"
            time.sleep(0.005)


def wait_unfinished(d: Dispatcher, n: int = 0, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while d.unfinished() > n:
        assert time.monotonic() < deadline, d.unfinished()
        time.sleep(0.005)


def dispatcher(calls: Calls, total: int = 4, **per_cpi: int) -> Dispatcher:
    return Dispatcher(calls.run, structlog.get_logger(), total=total, per_cpi=per_cpi)


def test_other_disks_and_cpis_go_on_while_one_call_hangs() -> None:
    calls = Calls()
    d = dispatcher(calls, total=2, aws=2, local=2)
    hung, same_disk, other_disk, other_cpi = (uuid4() for _ in range(4))
    d.submit(Work(1, hung, "aws", "vol-1"))
    d.submit(Work(2, same_disk, "aws", "vol-1"))
    d.submit(Work(3, other_disk, "aws", "vol-2"))
    d.submit(Work(4, other_cpi, "local", "disk-0"))
    calls.wait_started(hung, other_disk, other_cpi)  # the total is 2, but `local` had nothing running
    assert same_disk not in calls.started  # calls for one disk never overlap
    calls.gate(other_disk).set()
    calls.gate(other_cpi).set()
    wait_unfinished(d, 2)
    assert d.low_water() == 0  # 2, 3 and 4 finished; 1 has not: the position stays before it
    calls.gate(hung).set()
    calls.wait_started(same_disk)  # the disk's next operation, once its call returned
    calls.gate(same_disk).set()
    wait_unfinished(d)
    assert d.low_water() == 4


def test_a_cpi_never_exceeds_its_limit() -> None:
    calls = Calls()
    d = dispatcher(calls, total=8, aws=2)
    ops = [uuid4() for _ in range(5)]
    for n, op in enumerate(ops, 1):
        d.submit(Work(n, op, "aws", f"vol-{n}"))
    calls.wait_started(*ops[:2])
    time.sleep(0.05)
    assert len(calls.started) == 2
    for op in ops:
        calls.gate(op).set()
    wait_unfinished(d)
    assert sorted(calls.started) == sorted(ops) and d.low_water() == 5


def test_a_failing_run_is_retried_not_skipped() -> None:
    attempts: list[UUID] = []

    def flaky(op: UUID) -> None:
        attempts.append(op)
        if len(attempts) < 3:
            raise ConnectionError("database away")

    d = Dispatcher(flaky, structlog.get_logger(), total=1)
    op = uuid4()
    d.submit(Work(7, op, "local", "disk-0"))
    wait_unfinished(d)
    assert attempts == [op, op, op] and d.low_water() == 7


def test_a_free_slot_goes_to_the_tasks_in_turn_not_to_the_oldest_backlog() -> None:
    """A one-instance task requested behind a 200-disk task starts at the next
    free slot (fairness, issue 19), and the big task's backlog keeps its order."""
    calls = Calls()
    d = dispatcher(calls, total=2, aws=2)
    big = [uuid4() for _ in range(200)]
    for n, op in enumerate(big, 1):
        d.submit(Work(n, op, "aws", f"vol-{n}", task="fire"))
    small = uuid4()
    d.submit(Work(201, small, "aws", "vol-other", task="manual"))
    calls.wait_started(*big[:2])
    calls.gate(big[0]).set()  # one call returns: its slot is the manual task's turn
    calls.wait_started(small)
    assert calls.started == [big[0], big[1], small]
    for op in (*big, small):
        calls.gate(op).set()
    wait_unfinished(d)
    assert [op for op in calls.started if op != small] == big and d.low_water() == 201


def test_has_answers_for_queued_and_running_operations_until_they_finish() -> None:
    """The recovery sweep leaves an operation alone while this is true (queued
    behind a limit is not abandoned)."""
    calls = Calls()
    d = dispatcher(calls, total=1, aws=1)
    running, queued = uuid4(), uuid4()
    d.submit(Work(1, running, "aws", "vol-1", task="t"))
    d.submit(Work(2, queued, "aws", "vol-2", task="t"))
    calls.wait_started(running)
    assert d.has(running) and d.has(queued) and not d.has(uuid4())
    calls.gate(running).set()
    calls.gate(queued).set()
    wait_unfinished(d)
    assert not d.has(running) and not d.has(queued)


def test_a_passed_over_request_counts_as_finished_for_the_position() -> None:
    """Another worker's operation (decision 41): the position moves past it,
    but never past one of ours still running before it."""
    calls = Calls()
    d = dispatcher(calls)
    ours = uuid4()
    d.pass_over(1)
    assert d.low_water() == 1
    d.submit(Work(2, ours, "local", "disk-0"))
    d.pass_over(3)
    calls.wait_started(ours)
    assert d.low_water() == 1 and not d.has(uuid4())
    calls.gate(ours).set()
    wait_unfinished(d)
    assert d.low_water() == 3
    d.stop()
