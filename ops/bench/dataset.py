"""Realistic event logs, written fast: snapshot tasks through their whole life.

Events come from the real aggregates (Task, Snapshot, SnapshotCid) and the real
service-layer planning (`Ledger._plan_snapshots`), as the API and a worker
would produce them; they are stored with `EventStore.put` in large chunks
(hundreds of events per transaction) so that building a million-event log
takes a minute, not the hours one-command-per-save would.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Callable

from snapledger.domain.application import Ledger

SNAPSHOTS_PER_TASK = 4
EVENTS_PER_TASK = 1 + SNAPSHOTS_PER_TASK * 5 + 2  # queued, 4x(requested, started, taken, cid, finished), started, done
CHUNK_EVENTS = 5_000


def deployments(ledger: Ledger, count: int, instances: int = SNAPSHOTS_PER_TASK) -> list[Any]:
    deps = []
    for d in range(count):
        dep = ledger.deployments.record(
            f"dep-{d:04d}", {"team": "bench"},
            [{"job": "db", "index": i, "disks": [f"disk-{d}-{i}"]} for i in range(instances)], actor="bench")
        deps.append(dep)
    return deps


def one_task(ledger: Ledger, dep: Any, n: int) -> list[Any]:
    """The aggregates of one deployment-wide snapshot task, taken by a worker."""
    task, snapshots = ledger.snapshots.plan(dep, dep.instances, "snapshot_deployment", "snapshot deployment",
                                             "manual", False, "bench")
    extra = []
    for s, snapshot in enumerate(snapshots):
        snapshot.start_cpi_call(worker="bench-worker", actor="bench")
        task.start(worker="bench-worker", actor="bench")
        cid = f"snap-{n}-{s}-{snapshot.id.hex[:8]}"
        call = {"method": "snapshot_disk", "cpi": "local", "duration_s": 0.001, "request_id": f"r{n}-{s}"}
        snapshot.record_taken(snapshot_cid=cid, call=call, actor="bench")
        extra.append(ledger.snapshots.new_cid_index(cid, snapshot.id))
        task.operation_finished(snapshot.id, "taken", {"instance": snapshot.instance_label,
                                                       "disk_cid": snapshot.disk_cid, "snapshot_cid": cid},
                                actor="bench")
    return [task, *snapshots, *extra]


def fill(ledger: Ledger, events: int, deployment_count: int = 100,
         progress: Callable[[int], None] | None = None) -> int:
    """Append at least `events` events (plus the deployments'); returns how many were appended."""
    deps = deployments(ledger, deployment_count)
    written = 0
    pending: list[Any] = []
    n = 0
    while written + len(pending) < events:
        for aggregate in one_task(ledger, deps[n % len(deps)], n):
            pending.extend(aggregate.collect_events())
        n += 1
        if len(pending) >= CHUNK_EVENTS:
            ledger.store.events.put(pending)
            written += len(pending)
            pending = []
            if progress is not None:
                progress(written)
    if pending:
        ledger.store.events.put(pending)
        written += len(pending)
    return written
