"""Two worker processes, one PostgreSQL, one CPI rate limit, a 2,000-call run.

The CPI (tests/support/paced_cpi.py) logs the start of every call itself: the
IaaS's count, not snapledger's. Asserted over the one run:
- together the workers never start more calls in any 1-s window than the limit
  plus its burst, while they offer more (the run lasts as long as the limit says);
- no call of a worker that is alive is recorded in doubt, nor anything of it
  recovered as abandoned (the defect: a backlog queued behind the limit aged
  past 5 leases, each worker's sweep took it for abandoned and ran it inline,
  and while it did the worker did not beat, so the other worker recorded its
  claimed calls in doubt);
- each task's end is recorded exactly once though its outcomes race across workers;
- fairness: a one-instance snapshot of another deployment, requested while the
  backlog waits for the limit, starts within the calls already in flight (counted
  in the CPI's own log), not after the backlog.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path

import pytest

from snapledger.adapters.store import ledger_env, parse_store_url
from snapledger.domain.application import Ledger
from support.paced_cpi import call_starts, most_in_window, write_paced_cpi
from support.process import Server

CALLS = int(os.environ.get("SNAPLEDGER_TEST_RATE_CALLS", "2000"))
DEPLOYMENTS = 20
LIMIT, BURST = 100, 5  # calls/s: the workers offer more (2 x 16 at once, each call a few ms)
# The backlog (CALLS / LIMIT = 20 s) outlives 5 leases (when the sweep used to
# take a queued operation for abandoned); heartbeats every lease / 3.
LEASE_S = 2.0
IN_FLIGHT = 16  # per worker process


def write_config(tmp_path: Path, executable: Path) -> Path:
    config = {"cpis": {"iaas": {"type": "external", "executable": str(executable), "max_in_flight": IN_FLIGHT,
                                "rate_limit": {"calls": LIMIT, "per": "1s", "burst": BURST}}},
              "worker": {"max_in_flight": 32, "lease": LEASE_S}, "enable_snapshots": True,
              "snapshot_schedule": "off", "self_snapshot_schedule": "off", "log": {"level": "warning"}}
    path = tmp_path / "config.json"  # JSON is YAML
    path.write_text(json.dumps(config))
    return path


def task_ends(pg_url: str) -> Counter[str]:
    ledger = Ledger(env=ledger_env(parse_store_url(pg_url)))
    try:
        notifications = ledger.store.recorder.select_notifications(start=1, limit=1_000_000,
                                                             topics=["snapledger.domain.task:Task.Finished"])
        return Counter(str(n.originator_id) for n in notifications)
    finally:
        ledger.close()


@pytest.mark.timeout(600)  # 20 s at the limit on a quiet machine; several times that on a loaded one
def test_two_workers_share_the_limit_and_a_live_workers_calls_are_never_in_doubt(
        tmp_path: Path, pg_url: str) -> None:
    executable, calls_log = write_paced_cpi(tmp_path / "cpi")
    config = write_config(tmp_path, executable)
    data_dir = tmp_path / "data"
    api = Server(data_dir, pg_url, command="api", config=config).start()
    workers = [Server(data_dir, pg_url, command="worker", config=config).start() for _ in range(2)]
    projector = Server(data_dir, pg_url, command="projector", config=config).start()
    try:
        for d in range(DEPLOYMENTS):
            api.api("PUT", f"/deployments/d{d}", {"instances": [
                {"job": "db", "index": i, "disks": [f"disk-{d}-{i}"]} for i in range(CALLS // DEPLOYMENTS)]})
        api.api("PUT", "/deployments/manual", {"instances": [{"job": "db", "index": 0, "disks": ["disk-manual"]}]})
        tasks = [api.api("POST", f"/deployments/d{d}/snapshots")["task_id"] for d in range(DEPLOYMENTS)]
        while len(call_starts(calls_log)) < CALLS // 10:
            time.sleep(0.05)
        before_manual = len(call_starts(calls_log))
        tasks.append(api.api("POST", "/deployments/manual/snapshots")["task_id"])
        ended = {task_id: api.wait_task(task_id, timeout=60 + 2 * CALLS / LIMIT) for task_id in tasks}
        for process in (*workers, projector):  # alive throughout: nothing died
            assert process.proc is not None and process.proc.poll() is None, process.log.read_text()[-2000:]
    finally:
        for process in (api, *workers, projector):
            process.kill()

    failed = {t: task["result"] for t, task in ended.items() if task["state"] != "done"}
    assert not failed, f"tasks ended in error (in doubt though no worker died?): {failed}"
    for worker in workers:
        recovered = worker.log.read_text().count("recovered abandoned operation")
        assert recovered == 0, f"{recovered} operations of live workers recovered as abandoned"
    calls = call_starts(calls_log)
    starts = [start for start, _ in calls]
    assert len(starts) == CALLS + 1
    assert most_in_window(starts) <= LIMIT + BURST
    # The limit was the bound: the calls took as long as it allows.
    assert starts[-1] - starts[0] >= (len(starts) - BURST) / LIMIT * 0.95
    manual_at = [disk for _, disk in calls].index("disk-manual")
    # Ahead of it: calls started meanwhile, at most those of the slots in flight
    # of both workers (and their follower's latency), far fewer than the backlog.
    assert manual_at - before_manual <= 4 * IN_FLIGHT, (manual_at, before_manual)
    ends = task_ends(pg_url)
    assert sorted(ends) == sorted(tasks) and set(ends.values()) == {1}, ends
