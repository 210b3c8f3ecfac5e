"""At most N CPI calls in flight per CPI, whatever the worker's thread count."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import UUID

from support.task_progress import settle_tasks
from snapledger.adapters.store import ledger_env, parse_store_url
from snapledger.domain.application import Ledger
from snapledger.domain.operations import OperationRunner

from support.fakes import FakeCpi


class CountingCpi(FakeCpi):
    """Records the most calls it ever saw at once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.now = self.peak = 0
        self.guard = threading.Lock()

    def snapshot_disk(self, disk_cid: str, metadata: dict[str, Any]) -> str:
        with self.guard:
            self.now += 1
            self.peak = max(self.peak, self.now)
        try:
            return super().snapshot_disk(disk_cid, metadata)
        finally:
            with self.guard:
                self.now -= 1


def test_in_flight_calls_are_limited_per_cpi(sqlite_url: str) -> None:
    ledger = Ledger(env=ledger_env(parse_store_url(sqlite_url)))
    disks = [f"d{i}" for i in range(12)]
    ledger.deployments.record("prod", {}, [{"job": "db", "index": i, "disks": [d]} for i, d in enumerate(disks)],
                             actor="op")
    ledger.settings.set_snapshots_enabled(True, actor="op")
    task = ledger.snapshots.take("prod", actor="op")
    cpi = CountingCpi(set(disks), delay_s=0.05)
    runner = OperationRunner(ledger, {"local": cpi}, worker="w", max_in_flight={"local": 3})
    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(lambda op: runner.execute(op), [UUID(o) for o in task.operations]))
    assert outcomes == ["taken"] * 12
    assert cpi.peak == 3  # 8 threads wanted to call; 3 at once were allowed
    settle_tasks(ledger)  # what the projector's task-progress follower does
    assert ledger.tasks.get(str(task.id)).state == "done"
    ledger.close()
