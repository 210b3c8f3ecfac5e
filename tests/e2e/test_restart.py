"""Killing `snapledger serve` and starting it again loses nothing and re-applies nothing."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest

from support.process import Server


def _count(database: str | None, data_dir: Path, statement: str) -> int:
    if database is None:
        with sqlite3.connect(data_dir / "ledger.sqlite") as conn:
            return conn.execute(statement).fetchone()[0]
    base, schema = database.split("?schema=")
    with psycopg.connect(base, options=f"-c search_path={schema}") as conn:
        return conn.execute(statement).fetchone()[0]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_kill_and_restart_keeps_everything(tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> None:
    database = request.getfixturevalue("pg_url") if backend == "postgres" else None
    data_dir = tmp_path / "data"
    (data_dir / "disks" / "disk-0").mkdir(parents=True)
    (data_dir / "disks" / "disk-0" / "f").write_text("x")
    server = Server(data_dir, database).start()
    try:
        server.api("PUT", "/deployments/prod", {"instances": [{"job": "db", "index": 0, "disks": ["disk-0"]}]})
        server.api("PUT", "/config/snapshots", {"enable_snapshots": True})
        tasks = [server.api("POST", "/deployments/prod/snapshots")["task_id"] for _ in range(3)]
        for task_id in tasks:
            assert server.wait_task(task_id)["state"] == "done"
        listing = server.api("GET", "/deployments/prod/snapshots")
        events_before = _count(database, data_dir, "SELECT COUNT(*) FROM task_events_view")
        position_before = _count(database, data_dir,
                                 "SELECT position FROM projection_tracking WHERE name = 'tasks'")
        server.kill()

        server = Server(data_dir, database, port=server.port).start()
        assert server.api("GET", "/deployments/prod/snapshots") == listing
        assert [server.api("GET", f"/tasks/{t}")["state"] for t in tasks] == ["done"] * 3
        assert server.api("GET", "/deployments/prod")["instances"][0]["disks"] == ["disk-0"]
        assert server.api("GET", "/config/snapshots")["enable_snapshots"] is True

        # The views resume from their tracking position: new events are applied, old ones not again.
        task_id = server.api("POST", "/deployments/prod/jobs/db/0/snapshots")["task_id"]
        assert server.wait_task(task_id)["state"] == "done"
        assert len(server.api("GET", "/deployments/prod/snapshots")) == 4
        events_after = _count(database, data_dir, "SELECT COUNT(*) FROM task_events_view")
        new_events = len(server.api("GET", f"/tasks/{task_id}/events"))
        assert events_after == events_before + new_events
        assert _count(database, data_dir,
                      "SELECT position FROM projection_tracking WHERE name = 'tasks'") > position_before
    finally:
        server.kill()
