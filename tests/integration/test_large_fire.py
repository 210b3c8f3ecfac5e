"""A scheduled fire over thousands of instances is one transaction, and it commits.

The library writes saves in psycopg pipeline mode, which hung for good on a
~5 MB message while holding the events table's lock (every writer of the
ledger stalled). adapters/pg_recorder.py writes large saves outside the
pipeline, by binary COPY; this is the operator's case that found it: one
`snapshot_schedule` fire over 10,000 instances, recorded exactly once.
"""

from __future__ import annotations

from datetime import datetime, UTC

import pytest

from eventsourcing.persistence import IntegrityError

from snapledger.adapters.pg_recorder import COPY_MIN_EVENTS
from snapledger.adapters.store import ledger_env, parse_store_url
from snapledger.domain.application import Ledger
from snapledger.domain.settings import Settings
from snapledger.domain.snapshot import Refusal

INSTANCES = 10000


@pytest.mark.timeout(120)
def test_fire_over_thousands_of_instances_commits_once(pg_url: str) -> None:
    ledger = Ledger(env=ledger_env(parse_store_url(pg_url)))
    instances = [{"job": "cell", "index": i, "id": f"cell-{i}", "disks": [f"disk-{i}"]} for i in range(INSTANCES)]
    ledger.deployments.record("big", {}, instances, actor="op")
    fire_time = datetime(2026, 11, 25, 7, tzinfo=UTC)
    before = ledger.store.recorder.max_notification_id() or 0

    fire = ledger.schedules.fire("snapshot_schedule", "0 0 7 * * * UTC", fire_time)

    assert fire is not None
    written = (ledger.store.recorder.max_notification_id() or 0) - before
    assert written >= INSTANCES  # every request is in the log
    task = ledger.tasks.get(fire.tasks[0])
    assert task.deployment == "big"
    # A second replica firing the same moment records nothing more (the large
    # save's conflict is still the library's IntegrityError).
    assert ledger.schedules.fire("snapshot_schedule", "0 0 7 * * * UTC", fire_time) is None
    assert (ledger.store.recorder.max_notification_id() or 0) - before == written


def test_a_large_save_returns_each_event_its_log_position(pg_url: str) -> None:
    ledger = Ledger(env=ledger_env(parse_store_url(pg_url)))
    try:
        ledger.store.save(Settings(actor="op"))  # something in the log before
        refusals = [Refusal(command="c", reason=f"r{n}", deployment=None, details={}, actor="op")
                    for n in range(COPY_MIN_EVENTS + 5)]

        recordings = ledger.store.save(*refusals)

        positions = [r.notification.id for r in recordings]
        assert positions == sorted(positions) and len(set(positions)) == len(refusals)
        logged = ledger.store.recorder.select_notifications(start=positions[0], limit=len(refusals))
        assert [n.id for n in logged] == positions
        assert [n.originator_id for n in logged] == [r.id for r in refusals]  # each id names its own event
    finally:
        ledger.close()


def test_a_large_save_with_one_conflict_writes_nothing(pg_url: str) -> None:
    ledger = Ledger(env=ledger_env(parse_store_url(pg_url)))
    try:
        ledger.store.save(Settings(actor="op"))
        before = ledger.store.recorder.max_notification_id()
        others = [Refusal(command="c", reason=f"r{n}", deployment=None, details={}, actor="op")
                  for n in range(COPY_MIN_EVENTS)]

        with pytest.raises(IntegrityError):
            ledger.store.save(*others, Settings(actor="op"))  # settings created twice: a conflict

        assert ledger.store.recorder.max_notification_id() == before
        assert not any(r.id in ledger.store.repository for r in others)
    finally:
        ledger.close()
