"""`snapledger api`, `worker` and `projector` as separate processes over one PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from support.process import Server


def test_separate_processes_cooperate_through_the_event_store(tmp_path: Path, pg_url: str) -> None:
    data_dir = tmp_path / "data"
    for cid in ("disk-0", "disk-1"):
        (data_dir / "disks" / cid).mkdir(parents=True)
        (data_dir / "disks" / cid / "f").write_text(cid)
    api_a = Server(data_dir, pg_url, command="api").start()
    api_b = Server(data_dir, pg_url, command="api").start()
    worker_1 = Server(data_dir, pg_url, command="worker").start()
    worker_2 = Server(data_dir, pg_url, command="worker").start()
    projector = Server(data_dir, pg_url, command="projector").start()
    try:
        api_a.api("PUT", "/deployments/prod", {"instances": [
            {"job": "db", "index": 0, "disks": ["disk-0"]}, {"job": "db", "index": 1, "disks": ["disk-1"]}]})
        api_b.api("PUT", "/config/snapshots", {"enable_snapshots": True})
        tasks = [api.api("POST", "/deployments/prod/snapshots")["task_id"] for api in (api_a, api_b) * 5]
        for task_id in tasks:  # accepted by one replica, visible on the other
            assert api_b.wait_task(task_id)["state"] == "done"
        listing = api_a.api("GET", "/deployments/prod/snapshots")
        assert len(listing) == 20 and len({r["snapshot_cid"] for r in listing}) == 20
        # Each operation ran exactly once across the two workers: 20 copies on disk.
        snapshots = [p for p in (data_dir / "snapshots").iterdir() if p.name.startswith("snap-")]
        assert len(snapshots) == 20
    finally:
        for process in (api_a, api_b, worker_1, worker_2, projector):
            process.kill()
