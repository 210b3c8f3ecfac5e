"""Three `snapledger scheduler` processes, a schedule firing every second, one PostgreSQL:
every fire is recorded exactly once, with exactly one task per deployment."""

from __future__ import annotations

import os
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

from snapledger.adapters.store import ledger_env, parse_store_url
from snapledger.domain.application import Ledger
from support.process import Server

SECONDS = int(os.environ.get("SNAPLEDGER_REPLICA_TEST_SECONDS", "60"))


def test_three_replicas_fire_each_second_exactly_once(tmp_path: Path, pg_url: str) -> None:
    ledger = Ledger(env=ledger_env(parse_store_url(pg_url)))
    ledger.deployments.record("alpha", {}, [{"job": "db", "index": 0, "disks": []}], actor="op")
    ledger.deployments.record("beta", {}, [{"job": "db", "index": 0, "disks": []}], actor="op")
    env = {"SNAPLEDGER_ENABLE_SNAPSHOTS": "true", "SNAPLEDGER_SNAPSHOT_SCHEDULE": "* * * * * * UTC",
           "SNAPLEDGER_SELF_SNAPSHOT_SCHEDULE": "off"}
    replicas = [Server(tmp_path / f"data{i}", pg_url, command="scheduler", env=env).start() for i in range(3)]
    try:
        time.sleep(SECONDS)
    finally:
        for replica in replicas:
            replica.stop()
    for replica in replicas:
        assert replica.proc is not None and replica.proc.returncode == 0, replica.log.read_text()[-2000:]

    events = [ledger.store.mapper.to_domain_event(n) for n in ledger.store.recorder.select_notifications(start=0, limit=100_000)]
    fires = [e for e in events if type(e).__qualname__ == "ScheduleFire.Recorded"]
    queued = {str(e.originator_id): e for e in events if type(e).__qualname__ == "Task.Queued"}
    ledger.close()

    times = [f.fire_time for f in fires]
    assert Counter(times).most_common(1)[0][1] == 1, "a fire was recorded twice"
    fired = sorted(f.fire_time for f in fires if f.outcome == "fired")
    assert len(fired) >= SECONDS - 5, f"only {len(fired)} fires in {SECONDS}s"
    # No gaps: every second from the first to the last fire is accounted for.
    span = int((max(times) - min(times)).total_seconds()) + 1
    assert span == len(times)
    # Exactly one task per deployment per fire, and no task outside a fire.
    per_fire = [sorted(queued[t].deployment for t in f.tasks) for f in fires if f.outcome == "fired"]
    assert all(deployments == ["alpha", "beta"] for deployments in per_fire)
    assert sum(len(f.tasks) for f in fires) == len(queued)
    # Each replica really took part (they raced; several won some fires).
    winners = sum(1 for r in replicas if '"schedule fired"' in r.log.read_text())
    assert winners >= 2, "the replicas did not compete"
    assert max(times) - min(times) >= timedelta(seconds=SECONDS - 5)
