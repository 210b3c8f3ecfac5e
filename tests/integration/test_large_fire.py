"""A scheduled fire over thousands of instances is one transaction, and it commits.

The library writes saves in psycopg pipeline mode, which hung for good on a
~5 MB message while holding the events table's lock (every writer of the
ledger stalled). adapters/pg_recorder.py writes large saves outside the
pipeline; this is the operator's case that found it: one `snapshot_schedule`
fire over 6,000 instances, recorded exactly once.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from snapledger.adapters.store import ledger_env, parse_store_url
from snapledger.domain.application import Ledger

INSTANCES = 10000


@pytest.mark.timeout(120)
def test_fire_over_thousands_of_instances_commits_once(pg_url: str) -> None:
    ledger = Ledger(env=ledger_env(parse_store_url(pg_url)))
    instances = [{"job": "cell", "index": i, "id": f"cell-{i}", "disks": [f"disk-{i}"]} for i in range(INSTANCES)]
    ledger.record_deployment("big", {}, instances, actor="op")
    fire_time = datetime(2026, 11, 25, 7, tzinfo=timezone.utc)
    before = ledger.recorder.max_notification_id() or 0

    fire = ledger.fire_schedule("snapshot_schedule", "0 0 7 * * * UTC", fire_time)

    assert fire is not None
    written = (ledger.recorder.max_notification_id() or 0) - before
    assert written >= INSTANCES  # every request is in the log
    task = ledger.get_task(fire.tasks[0])
    assert task.deployment == "big"
    # A second replica firing the same moment records nothing more (the large
    # save's conflict is still the library's IntegrityError).
    assert ledger.fire_schedule("snapshot_schedule", "0 0 7 * * * UTC", fire_time) is None
    assert (ledger.recorder.max_notification_id() or 0) - before == written
