"""Two `snapledger worker` processes over one PostgreSQL split the disks between
them (decision 41): each operation is run by its disk's owner, once; when a
worker dies before running its share, the other runs it.

Real processes, the real local CPI (its snapshots are directories: one per
operation run), the worker's own log lines for what the sweep recovered."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from snapledger.adapters.disk_owners import owner
from snapledger.adapters.store import ledger_env, open_database, parse_store_url
from snapledger.domain.application import Ledger
from snapledger.projections.events import iso
from support.process import Server, wait_for

DISKS = 40
LEASE_S = "1"  # seconds of silence before a worker is dead; views refresh every lease/3
ENV = {"SNAPLEDGER_WORKER_LEASE": LEASE_S}
STARTED_TOPIC = "snapledger.domain.snapshot:Snapshot.CpiCallStarted"
REQUESTED_TOPIC = "snapledger.domain.snapshot:Snapshot.Requested"


def disks(data_dir: Path) -> list[str]:
    names = [f"disk-{i}" for i in range(DISKS)]
    for cid in names:
        (data_dir / "disks" / cid).mkdir(parents=True)
        (data_dir / "disks" / cid / "f").write_text(cid)
    return names


def start_all(data_dir: Path, pg_url: str) -> tuple[Server, list[Server], Server]:
    api = Server(data_dir, pg_url, command="api", env=ENV).start()
    workers = [Server(data_dir, pg_url, command="worker", env=ENV).start() for _ in range(2)]
    projector = Server(data_dir, pg_url, command="projector", env=ENV).start()
    return api, workers, projector


def worker_ids(pg_url: str, workers: list[Server]) -> list[str]:
    """Each process's worker id (host:pid:random), from the heartbeats, once both beat;
    then long enough for each worker's live set to have read the other's beat."""
    db = open_database(parse_store_url(pg_url))
    try:
        rows = wait_for(lambda: (r := db.query("SELECT worker FROM worker_heartbeats")) and len(r) == 2 and r)
    finally:
        db.close()
    time.sleep(float(LEASE_S) + 0.5)  # more than a heartbeat interval (lease/3): both views have both
    ids = [row["worker"] for row in rows]
    return [next(i for i in ids if f":{w.proc.pid}:" in i) for w in workers if w.proc is not None]


def calls_by_worker(pg_url: str) -> tuple[Counter[str], Counter[str]]:
    """CPI calls started: by worker, and by operation (the ledger's own record of each claim)."""
    ledger = Ledger(env=ledger_env(parse_store_url(pg_url)))
    try:
        notes = ledger.store.recorder.select_notifications(start=1, limit=100_000, topics=[STARTED_TOPIC])
        events = [ledger.store.mapper.to_domain_event(n) for n in notes]
        return Counter(e.worker for e in events), Counter(str(e.originator_id) for e in events)
    finally:
        ledger.close()


def snapshot_dirs(data_dir: Path) -> int:
    return len([p for p in (data_dir / "snapshots").iterdir() if p.name.startswith("snap-")])


def prepare(api: Server, names: list[str]) -> None:
    api.api("PUT", "/deployments/prod", {"instances": [
        {"job": "db", "index": i, "disks": [cid]} for i, cid in enumerate(names)]})
    api.api("PUT", "/config/snapshots", {"enable_snapshots": True})


def test_two_workers_take_each_operation_once_and_both_take_a_share(tmp_path: Path, pg_url: str) -> None:
    data_dir = tmp_path / "data"
    names = disks(data_dir)
    api, workers, projector = start_all(data_dir, pg_url)
    try:
        ids = worker_ids(pg_url, workers)
        prepare(api, names)
        task = api.wait_task(api.api("POST", "/deployments/prod/snapshots")["task_id"], timeout=60)
        assert task["state"] == "done", task
    finally:
        for process in (api, *workers, projector):
            process.kill()
    by_worker, by_op = calls_by_worker(pg_url)
    assert len(by_op) == DISKS and set(by_op.values()) == {1}  # each operation claimed once
    assert snapshot_dirs(data_dir) == DISKS  # and run once: one snapshot per disk
    # Each worker ran exactly the disks it owns by rendezvous over the two.
    assert by_worker == Counter(owner(cid, ids) for cid in names), (by_worker, ids)
    assert len(by_worker) == 2


def test_a_worker_that_dies_before_running_its_share_leaves_it_to_the_other(tmp_path: Path, pg_url: str) -> None:
    """The dead worker's last beat is still fresh when the requests are read (the
    test beats for it until then: it died just after a beat), so the survivor
    passes its disks over; once it is silent for a lease, the survivor runs them."""
    data_dir = tmp_path / "data"
    names = disks(data_dir)
    api, workers, projector = start_all(data_dir, pg_url)
    db = open_database(parse_store_url(pg_url))
    ghost_beats = threading.Event()
    try:
        dead, survivor = worker_ids(pg_url, workers)
        workers[0].kill()
        ghost = threading.Thread(target=beat_for, args=(db, dead, ghost_beats), daemon=True)
        ghost.start()
        prepare(api, names)
        task_id = api.api("POST", "/deployments/prod/snapshots")["task_id"]
        last = wait_for(lambda: last_request(pg_url, DISKS))
        wait_for(lambda: (rows := db.query("SELECT position FROM projection_tracking WHERE name = 'worker'"))
                 and int(rows[0]["position"]) >= last)  # the survivor has read (and passed over) every request
        survivors_share = [cid for cid in names if owner(cid, [dead, survivor]) == survivor]
        wait_for(lambda: calls_by_worker(pg_url)[0][survivor] == len(survivors_share))
        assert calls_by_worker(pg_url)[0] == Counter({survivor: len(survivors_share)})  # the rest left to `dead`
        ghost_beats.set()  # silent from now on: dead after a lease
        ghost.join()
        task = api.wait_task(task_id, timeout=60)
        assert task["state"] == "done", task
    finally:
        ghost_beats.set()
        db.close()
        for process in (api, *workers, projector):
            process.kill()
    by_worker, by_op = calls_by_worker(pg_url)
    assert by_worker == Counter({survivor: DISKS}) and set(by_op.values()) == {1}
    assert snapshot_dirs(data_dir) == DISKS
    recovered = workers[1].log.read_text().count("recovered abandoned operation")
    assert recovered == DISKS - len(survivors_share)  # the dead worker's share, each once


def beat_for(db: Any, worker: str, stop: threading.Event) -> None:
    while not stop.is_set():
        with db.transaction() as cur:
            cur.execute("UPDATE worker_heartbeats SET beat_at = %s WHERE worker = %s", (iso(datetime.now(UTC)), worker))
        stop.wait(0.1)


def last_request(pg_url: str, expected: int) -> int | None:
    ledger = Ledger(env=ledger_env(parse_store_url(pg_url)))
    try:
        notes = ledger.store.recorder.select_notifications(start=1, limit=100_000, topics=[REQUESTED_TOPIC])
        return int(notes[-1].id) if len(notes) == expected else None
    finally:
        ledger.close()
