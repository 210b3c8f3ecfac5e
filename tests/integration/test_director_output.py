"""`bosh task N` polls a task's event output by byte ranges every 0.5 s: each
poll must read only the audit rows that are new, not rebuild the output of a
running 10,000-operation task (issue 17: no per-request full scans), and the
bytes already sent must never change (the CLI asks from its byte offset)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from snapledger.adapters.bootstrap import bootstrap
from snapledger.api.director_output import task_output
from support.runtime import make_config, make_disk


class RowCounter:
    """The runtime's real database, counting the rows its queries return."""

    def __init__(self, db: Any) -> None:
        self.db, self.rows = db, 0

    def query(self, sql: str, params: Any = ()) -> list[dict[str, Any]]:
        rows = self.db.query(sql, params)
        self.rows += len(rows)
        return rows

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


def test_a_poll_of_a_running_task_reads_only_new_rows(tmp_path: Path, store_url: str) -> None:
    config = make_config(tmp_path, store_url, enable_snapshots=True)
    for i in range(3):
        make_disk(config, f"disk-{i}")
    runtime = bootstrap(config, {"api", "worker", "projector"})
    runtime.start()
    try:
        runtime.ledger.deployments.record("prod", {}, [{"job": "db", "index": i, "disks": [f"disk-{i}"]}
                                                      for i in range(3)], actor="op")
        task = runtime.ledger.snapshots.take("prod", actor="op")
        deadline = time.monotonic() + 20
        while (row := runtime.queries.task(str(task.id))) is None or row["state"] != "done":
            assert time.monotonic() < deadline, row
            time.sleep(0.05)
        counter = RowCounter(runtime.db)
        runtime.db = counter
        # As a poll saw it while it ran: the output is built from the rows there are.
        running = {**row, "state": "processing"}
        first = task_output(runtime, running, "event")
        read_first = counter.rows
        lines = [json.loads(line) for line in first.splitlines()]
        assert [(line["task"], line["state"]) for line in lines if line["index"] == 1] == [
            (lines[0]["task"], "started"), (lines[0]["task"], "finished")]
        assert sorted(line["task"] for line in lines if line["state"] == "finished") == [
            "db/0 disk-0", "db/1 disk-1", "db/2 disk-2"]
        assert read_first >= 6

        again = task_output(runtime, running, "event")
        assert again == first and counter.rows == read_first  # nothing new: no row read again
        assert task_output(runtime, row, "event") == first and counter.rows == read_first
        debug = task_output(runtime, running, "debug")
        assert task_output(runtime, running, "debug") == debug and b'"Task.Queued"' in debug

        # A later snapshot of the same deployment is another task; this one's output is unchanged.
        runtime.ledger.snapshots.take("prod", actor="op")
        assert task_output(runtime, running, "event") == first
    finally:
        runtime.db = getattr(runtime.db, "db", runtime.db)
        runtime.close()
