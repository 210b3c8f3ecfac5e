"""The snapshot worker runs the operations whose disk it owns (decision 41), and
its recovery sweep leaves an unclaimed operation to its live owner, taking it
when that owner died: on both event stores, a real SnapshotWorker (not
started: its follower's batches and its sweeps are driven by the test)."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest
import structlog

from support.fakes import FakeCpi
from snapledger.adapters.bootstrap import create_schema
from snapledger.adapters.disk_owners import owner
from snapledger.adapters.follower import ChangeSignal
from snapledger.adapters.snapshot_worker import SnapshotWorker
from snapledger.adapters.store import ledger_env, open_database, parse_store_url
from snapledger.domain.application import Ledger
from snapledger.domain.operations import OperationRunner
from snapledger.projections.events import iso
from snapledger.projections.projector import Projector
from snapledger.projections.queries import Queries

DISKS = 24
LEASE_S = 0.2
OTHER = "other-worker"


class Stack:
    def __init__(self, store_url: str) -> None:
        url = parse_store_url(store_url)
        self.ledger = Ledger(env=ledger_env(url))
        self.db = open_database(url)
        self.projector = Projector(self.db)
        create_schema(self.db, self.projector)
        self.cpi = FakeCpi({f"d{i}" for i in range(DISKS)})
        self.ledger.settings.set_snapshots_enabled(True, actor="alice")
        self.ledger.deployments.record("prod", {}, [{"job": "db", "index": i, "disks": [f"d{i}"]}
                                                    for i in range(DISKS)], actor="alice")
        runner = OperationRunner(self.ledger, {"local": self.cpi}, worker="me")
        self.worker = SnapshotWorker(self.ledger, runner, self.db, Queries(self.db), ChangeSignal(),
                                     structlog.get_logger(), lease_s=LEASE_S)

    def close(self) -> None:
        self.worker.dispatcher.stop()
        self.ledger.close()
        self.db.close()

    def beat(self, worker: str, at: datetime | None = None) -> None:
        with self.db.transaction() as cur:
            cur.execute("DELETE FROM worker_heartbeats WHERE worker = %s", (worker,))
            cur.execute("INSERT INTO worker_heartbeats (worker, beat_at) VALUES (%s, %s)",
                        (worker, iso(at or datetime.now(UTC))))

    def follow(self) -> int:
        """What the worker's follower does with the requests in the log, then its dispatcher's runs."""
        notes = self.ledger.store.recorder.select_notifications(start=1, limit=10_000,
                                                               topics=list(SnapshotWorker.topics))
        self.worker.handle([(n.id, self.ledger.store.mapper.to_domain_event(n)) for n in notes])
        deadline = time.monotonic() + 20
        while self.worker.dispatcher.unfinished():
            assert time.monotonic() < deadline, "the dispatcher did not finish"
            time.sleep(0.01)
        self.worker.dispatcher.stop()  # waits for the runs' threads, their own position saves included
        self.worker.recovery_pass()  # records the position (a run skips it while another one saves)
        return int(notes[-1].id)

    def project(self) -> None:
        position = self.projector.position()
        while notes := self.ledger.store.recorder.select_notifications(start=position, limit=500,
                                                                       inclusive_of_start=False):
            self.projector.apply([(n.id, self.ledger.store.mapper.to_domain_event(n)) for n in notes])
            position = notes[-1].id

    def taken(self) -> Counter[str]:
        """snapshot_disk calls by disk: the CPI's own count."""
        return Counter(args[0] for name, args in self.cpi.calls if name == "snapshot_disk")


@pytest.fixture
def stack(store_url: str) -> Any:
    s = Stack(store_url)
    yield s
    s.close()


def split(task: Any) -> tuple[set[str], set[str]]:
    """The disks of `me` and of OTHER, by rendezvous over the two."""
    disks = {f"d{i}" for i in range(DISKS)}
    mine = {d for d in disks if owner(d, ["me", OTHER]) == "me"}
    return mine, disks - mine


def test_a_worker_runs_only_the_operations_whose_disk_it_owns(stack: Stack) -> None:
    stack.beat(OTHER)
    stack.worker.owners.update({"me", OTHER})
    task = stack.ledger.snapshots.take("prod", actor="alice")
    mine, others = split(task)
    assert mine and others
    last_request = stack.follow()
    assert set(stack.taken()) == mine
    # The position moved past the other worker's requests: a restart does not replay them.
    assert stack.worker.tracked.load() == last_request


def test_the_sweep_leaves_an_unclaimed_operation_to_its_live_owner_and_takes_a_dead_owners(stack: Stack) -> None:
    """An operation owned by another worker when it was requested, that worker
    dying before it claimed it: the survivor runs it, once; while the owner
    beats, never (however old the request)."""
    stack.beat(OTHER)
    stack.worker.owners.update({"me", OTHER})
    task = stack.ledger.snapshots.take("prod", actor="alice")
    mine, others = split(task)
    stack.follow()
    stack.project()
    time.sleep(6 * LEASE_S)  # every request is older than 5 leases (when an unclaimed one used to be re-run)
    stack.beat(OTHER)  # alive
    assert stack.worker.sweep() == []
    assert set(stack.taken()) == mine

    stack.beat(OTHER, at=datetime(2000, 1, 1, tzinfo=UTC))  # silent: dead
    recovered = stack.worker.sweep()
    by_op = {op: disk for op, disk in ((str(o), stack.ledger.snapshots.get(UUID(o)).disk_cid)
                                       for o in task.operations)}
    assert sorted(by_op[op] for op, _ in recovered) == sorted(others)
    assert {result for _, result in recovered} == {"taken"}
    assert stack.taken() == Counter({d: 1 for d in mine | others})  # each disk's snapshot taken once
    stack.project()
    assert stack.worker.sweep() == []  # nothing left


def test_the_sweep_leaves_this_workers_own_recent_request_to_its_follower(stack: Stack) -> None:
    """Ours by the live set, never passed over and younger than 5 leases: the
    follower submits it to the dispatcher (the sweep running it inline blocked the sweep)."""
    stack.beat(OTHER)
    task = stack.ledger.snapshots.take("prod", actor="alice")
    mine, _ = split(task)
    stack.project()
    time.sleep(LEASE_S * 1.5)  # older than a lease, younger than 5
    stack.beat(OTHER)
    assert stack.worker.sweep() == []
    assert not stack.taken()
    time.sleep(LEASE_S * 4)  # older than 5 leases: the follower is stuck or gone, the sweep runs ours
    stack.beat(OTHER)
    recovered = stack.worker.sweep()
    assert len(recovered) == len(mine) and set(stack.taken()) == mine
