"""The ledger on the real event stores: claims, projections, rebuild, exactly-once."""

from __future__ import annotations

import threading
from typing import Any
from uuid import UUID

import pytest

from support.task_progress import settle_tasks
from snapledger.adapters.store import ledger_env, open_database, parse_store_url
from snapledger.domain.application import Ledger
from snapledger.domain.operations import OperationRunner
from snapledger.projections.projector import Projector
from snapledger.projections.queries import Queries
from support.fakes import FakeCpi


@pytest.fixture
def stack(store_url: str) -> Any:
    url = parse_store_url(store_url)
    ledger = Ledger(env=ledger_env(url))
    db = open_database(url)
    projector = Projector(db)
    projector.setup()
    yield ledger, db, projector
    ledger.close()
    db.close()


def project_all(ledger: Ledger, projector: Projector, batch_size: int = 7) -> None:
    position = projector.position()
    while True:
        notifications = ledger.store.recorder.select_notifications(start=position, limit=batch_size,
                                                             inclusive_of_start=False)
        if not notifications:
            return
        projector.apply([(n.id, ledger.store.mapper.to_domain_event(n)) for n in notifications])
        position = notifications[-1].id


def populate(ledger: Ledger, cpi: FakeCpi) -> None:
    ledger.settings.set_snapshots_enabled(True, actor="alice")
    ledger.deployments.record("prod", {"t": "1"}, [
        {"job": "db", "index": i, "disks": [f"d{i}"]} for i in range(5)], actor="alice")
    runner = OperationRunner(ledger, {"local": cpi}, worker="w")
    for _ in range(3):
        task = ledger.snapshots.take("prod", actor="alice")
        for op in task.operations:
            runner.execute(UUID(op))
    cid = next(iter(cpi.snapshots))
    task = ledger.snapshots.delete("prod", cid, actor="bob")
    runner.execute(UUID(task.operations[0]))
    settle_tasks(ledger)  # what the projector's task-progress follower does


def dump_views(db: Any) -> dict[str, list[dict[str, Any]]]:
    return {
        table: db.query(f"SELECT * FROM {table} ORDER BY {key}")
        for table, key in [("snapshots_view", "snapshot_id"), ("tasks_view", "task_id"),
                           ("task_events_view", "task_id, position"), ("deployments_view", "name")]
    }


def test_two_workers_racing_call_the_cpi_once(stack: Any) -> None:
    ledger, _, _ = stack
    cpi = FakeCpi({"d0"}, delay_s=0.05)
    ledger.settings.set_snapshots_enabled(True, actor="a")
    ledger.deployments.record("prod", {}, [{"job": "db", "index": 0, "disks": ["d0"]}], actor="a")
    outcomes: list[Any] = []
    for _ in range(5):
        op = UUID(ledger.snapshots.take("prod", actor="a").operations[0])
        # Separate runners: no shared in-process lock, only the event store decides.
        runners = [OperationRunner(ledger, {"local": cpi}, worker=f"w{i}") for i in range(3)]
        barrier = threading.Barrier(3)

        def go(runner: OperationRunner) -> None:
            barrier.wait()
            outcomes.append(runner.execute(op))

        threads = [threading.Thread(target=go, args=(r,)) for r in runners]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert cpi.count("snapshot_disk") == 5
    assert sorted(o for o in outcomes if o) == ["taken"] * 5


def test_projections_match_the_aggregates(stack: Any) -> None:
    ledger, db, projector = stack
    cpi = FakeCpi({f"d{i}" for i in range(5)})
    populate(ledger, cpi)
    project_all(ledger, projector)
    listing = Queries(db).snapshots("prod")
    assert len(listing) == 14  # 15 taken, 1 deleted
    assert {r["snapshot_cid"] for r in listing} == set(cpi.snapshots)
    tasks = Queries(db).tasks()
    assert len(tasks) == 4 and {t["state"] for t in tasks} == {"done"}
    assert Queries(db).deployment("prod")["tags"] == {"t": "1"}


def test_rebuilt_views_equal_live_views(stack: Any) -> None:
    ledger, db, projector = stack
    populate(ledger, FakeCpi({f"d{i}" for i in range(5)}))
    project_all(ledger, projector, batch_size=3)  # live: many small batches
    live = dump_views(db)
    projector.reset()
    assert dump_views(db)["snapshots_view"] == []
    project_all(ledger, projector, batch_size=1000)  # rebuild: one batch
    assert dump_views(db) == live


def test_a_batch_applied_twice_is_applied_once(stack: Any) -> None:
    ledger, db, projector = stack
    populate(ledger, FakeCpi({f"d{i}" for i in range(5)}))
    notifications = ledger.store.recorder.select_notifications(start=0, limit=1000, inclusive_of_start=False)
    batch = [(n.id, ledger.store.mapper.to_domain_event(n)) for n in notifications]
    projector.apply(batch[:10])
    projector.apply(batch)  # overlaps the first ten (a crash between commit and advance)
    once = dump_views(db)
    projector.apply(batch)
    assert dump_views(db) == once
    assert projector.position() == batch[-1][0]
    events = db.query("SELECT COUNT(*) AS n FROM task_events_view")[0]["n"]
    assert events == sum(1 for _, e in batch if type(e).__qualname__.startswith(("Task.", "Snapshot.")))


def test_one_view_can_be_rebuilt_while_others_keep_their_position(stack: Any) -> None:
    ledger, db, projector = stack
    populate(ledger, FakeCpi({f"d{i}" for i in range(5)}))
    project_all(ledger, projector)
    before = dump_views(db)
    top = projector.position()
    projector.reset(["snapshots"])
    positions = projector.positions()
    assert positions["snapshots"] == 0 and positions["tasks"] == top
    project_all(ledger, projector)
    assert dump_views(db) == before
