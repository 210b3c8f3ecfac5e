"""The service outlives a PostgreSQL restart: requests during the outage fail
fast with 503 and a clear message, acknowledged work is kept, and everything
works again once the database is back, without restarting snapledger."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from support.process import Server


def request(server: Server, method: str, path: str, body: Any = None) -> tuple[int, Any, float]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(server.url + path, data=data, method=method,
                                 headers={"Content-Type": "application/json", "Authorization": server.authorization})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read()), time.monotonic() - started
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), time.monotonic() - started


@pytest.mark.timeout(300)
def test_postgres_restart_under_load(tmp_path: Path, owned_pg: Any) -> None:
    data_dir = tmp_path / "data"
    for i in range(3):
        (data_dir / "disks" / f"disk-{i}").mkdir(parents=True)
        (data_dir / "disks" / f"disk-{i}" / "f").write_text(str(i))
    server = Server(data_dir, f"{owned_pg.dsn}?schema=ledger").start()
    try:
        server.api("PUT", "/deployments/prod", {"instances": [
            {"job": "db", "index": i, "disks": [f"disk-{i}"]} for i in range(3)]})
        server.api("PUT", "/config/snapshots", {"enable_snapshots": True})
        acknowledged = [server.api("POST", "/deployments/prod/snapshots")["task_id"] for _ in range(3)]

        owned_pg.stop()
        # During the outage: a fast, clear 503 for commands and queries, never a hang.
        timings = []
        for method, path in [("POST", "/deployments/prod/snapshots"), ("GET", "/deployments/prod/snapshots"),
                             ("GET", f"/tasks/{acknowledged[0]}")]:
            status, body, elapsed = request(server, method, path)
            assert status == 503, (status, body)
            assert "unavailable" in body["error"] and elapsed < 30, (body, elapsed)
            timings.append(round(elapsed, 2))
        print("503 after seconds:", timings)

        time.sleep(8)  # long enough for the pools' reconnection back-off to grow
        owned_pg.start()
        back = time.monotonic()
        deadline = back + 60
        while True:  # the pools reconnect on their own
            status, body, _ = request(server, "POST", "/deployments/prod/snapshots")
            if status == 202:
                acknowledged.append(body["task_id"])
                print(f"accepting again {time.monotonic() - back:.1f} s after the database came back")
                break
            assert status == 503 and time.monotonic() < deadline, (status, body)
            time.sleep(0.2)
        for task_id in acknowledged:
            assert server.wait_task(task_id, timeout=60)["state"] == "done"
        listing = server.api("GET", "/deployments/prod/snapshots")
        assert len(listing) == 3 * len(acknowledged)
        on_disk = {p.name for p in (data_dir / "snapshots").iterdir() if not p.name.startswith(".")}
        assert on_disk == {r["snapshot_cid"] for r in listing}
    finally:
        server.kill()
