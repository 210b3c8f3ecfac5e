"""A process that did not save a task (a worker of a split deployment, one
restarted) finds its number in the event store: the position of its first
event, the number the API handed out, on both stores."""

from __future__ import annotations

import uuid
from pathlib import Path

from snapledger.adapters.bootstrap import bootstrap
from snapledger.adapters.task_number_lookup import event_store_numbers
from snapledger.domain.task_numbers import TaskNumbers
from support.runtime import make_config, make_disk


def test_a_task_number_is_found_in_the_event_store(tmp_path: Path, store_url: str) -> None:
    config = make_config(tmp_path, store_url, enable_snapshots=True)
    make_disk(config, "disk-0")
    runtime = bootstrap(config, {"api"})
    try:
        runtime.ledger.deployments.record("prod", {}, [{"job": "db", "index": 0, "disks": ["disk-0"]}], actor="op")
        first = runtime.ledger.snapshots.take("prod", actor="op")
        second = runtime.ledger.snapshots.take("prod", actor="op")
        elsewhere = TaskNumbers()  # another process: it knows no number yet
        asked: list[str] = []
        lookup = event_store_numbers(runtime.db)
        elsewhere.add_resolver(lambda task_id: asked.append(task_id) or lookup(task_id))
        assert elsewhere.number(str(first.id)) == first.number and first.number is not None
        assert elsewhere.number(str(second.id)) == second.number > first.number
        assert elsewhere.number(str(first.id)) == first.number and asked == [str(first.id), str(second.id)]  # once
        assert elsewhere.number(str(uuid.uuid4())) is None and elsewhere.number("not-a-task") is None
    finally:
        runtime.close()
