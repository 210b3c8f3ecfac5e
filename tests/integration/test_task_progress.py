"""A snapshot task's progress and end come from its snapshots' outcomes in the log
(domain/services/task_progress.py, decision 39), on both event stores."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any
from uuid import UUID

import pytest

from support.fakes import FakeCpi
from support.task_progress import TOPICS, settle_tasks
from snapledger.adapters.store import ledger_env, parse_store_url
from snapledger.domain.application import Ledger
from snapledger.domain.cpi import CLOUD_ERROR, CpiError
from snapledger.domain.operations import OperationRunner
from snapledger.domain.task import Task

DISKS = 30


@pytest.fixture
def ledger(store_url: str) -> Any:
    ledger = Ledger(env=ledger_env(parse_store_url(store_url)))
    ledger.settings.set_snapshots_enabled(True, actor="alice")
    ledger.deployments.record("prod", {}, [{"job": "db", "index": i, "disks": [f"d{i}"]} for i in range(DISKS)],
                              actor="alice")
    yield ledger
    ledger.close()


def task_events(ledger: Ledger, task_id: UUID) -> list[Any]:
    return list(ledger.store.events.get(task_id))


def run_every_operation(ledger: Ledger, cpi: FakeCpi, task: Task, threads: int = 8) -> None:
    runner = OperationRunner(ledger, {"local": cpi}, worker="w", max_in_flight={"local": threads})
    ops = [UUID(op) for op in task.operations]
    run_together([threading.Thread(target=lambda chunk=ops[i::threads]: [runner.execute(op) for op in chunk])
                  for i in range(threads)])


def run_together(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_claims_and_outcomes_leave_the_task_alone(ledger: Ledger) -> None:
    """The CPI threads write snapshots only: the task is not one more aggregate
    they all queue and conflict on (before: one claim read and one outcome
    event on the task per operation)."""
    cpi = FakeCpi({f"d{i}" for i in range(DISKS)}, delay_s=0.01)
    cpi.failures["d3"] = CpiError(CLOUD_ERROR, "quota exceeded")
    task = ledger.snapshots.take("prod", actor="alice")
    run_every_operation(ledger, cpi, task)
    assert [type(e).__name__ for e in task_events(ledger, task.id)] == ["Queued"]

    assert settle_tasks(ledger) == DISKS
    events = task_events(ledger, task.id)
    names = Counter(type(e).__name__ for e in events)
    assert names == {"Queued": 1, "Started": 1, "OperationFinished": DISKS, "Finished": 1}
    finished = ledger.tasks.get(str(task.id))
    assert finished.state == "error"
    assert f"db/3 disk d3: {CLOUD_ERROR}: quota exceeded" in (finished.result or "")
    taken = [o for o in finished.outcomes.values() if o["outcome"] == "taken"]
    assert len(taken) == DISKS - 1 and all(o["snapshot_cid"] and o["disk_cid"] and o["instance"] for o in taken)
    # Each outcome line follows from the snapshot event that recorded it (the audit's chain).
    for op, outcome in finished.outcomes.items():
        snapshot_events = list(ledger.store.events.get(UUID(op)))
        assert outcome["caused_by"] == f"{op}/{snapshot_events[-1].originator_version}"

    # Following the same log again (a follower that crashed before saving its position) changes nothing.
    assert settle_tasks(ledger) == 0
    assert len(task_events(ledger, task.id)) == len(events)


def test_two_followers_racing_end_each_task_exactly_once(store_url: str, ledger: Ledger) -> None:
    """Two followers (two projectors, each with its own connections) apply the
    same outcomes at once, in batches of different sizes: every operation is
    recorded once and every task ends once."""
    cpi = FakeCpi({f"d{i}" for i in range(DISKS)})
    tasks = [ledger.snapshots.take("prod", actor="alice") for _ in range(3)]
    for task in tasks:
        run_every_operation(ledger, cpi, task, threads=4)
    others = [Ledger(env=ledger_env(parse_store_url(store_url))) for _ in range(2)]
    barrier = threading.Barrier(len(others))
    errors: list[BaseException] = []

    def follow(follower: Ledger, batch: int) -> None:
        notes = follower.store.recorder.select_notifications(start=0, limit=100_000, topics=TOPICS,
                                                             inclusive_of_start=False)
        events = [follower.store.mapper.to_domain_event(n) for n in notes]
        barrier.wait()
        try:
            for i in range(0, len(events), batch):
                follower.task_progress.follow(events[i:i + batch])
        except BaseException as error:  # reported below, not lost in the thread
            errors.append(error)

    run_together([threading.Thread(target=follow, args=(f, size)) for f, size in zip(others, (7, 13))])
    for other in others:
        other.close()
    assert errors == []
    for task in tasks:
        names = Counter(type(e).__name__ for e in task_events(ledger, task.id))
        assert names == {"Queued": 1, "Started": 1, "OperationFinished": DISKS, "Finished": 1}
        ops = Counter(e.operation_id for e in task_events(ledger, task.id) if type(e).__name__ == "OperationFinished")
        assert set(ops.values()) == {1} and len(ops) == DISKS
        assert ledger.tasks.get(str(task.id)).state == "done"


def test_a_cancelled_task_ends_cancelled_from_its_snapshots(ledger: Ledger) -> None:
    task = ledger.snapshots.take("prod", actor="alice")
    runner = OperationRunner(ledger, {"local": FakeCpi({f"d{i}" for i in range(DISKS)})}, worker="w")
    for op in task.operations[:5]:
        runner.execute(UUID(op))
    ledger.tasks.cancel(str(task.id), actor="bob")
    settle_tasks(ledger)
    ended = ledger.tasks.get(str(task.id))
    assert ended.state == "cancelled"
    assert Counter(o["outcome"] for o in ended.outcomes.values()) == {"taken": 5, "cancelled": DISKS - 5}
    assert ended.result is not None and f"{DISKS - 5} not started" in ended.result
