"""A worker SIGKILLed during a drain: the instance is failed (`WorkerLost`) by
another worker's recovery sweep and the task ends, within seconds with a short
lease; a live worker's long drain is never taken from it.

Real processes on real PostgreSQL (`snapledger api`, `projector`, `worker`),
real drain scripts run by the local agent from `<data_dir>/jobs`."""

from __future__ import annotations

import os
import signal
import stat
import time
from pathlib import Path

import psycopg

from support.process import Server, wait_for

LEASE = "1"  # seconds of worker silence before its drains are abandoned
ENV = {"SNAPLEDGER_WORKER_LEASE": LEASE}


def setup(tmp_path: Path) -> tuple[Path, Path]:
    data_dir, marks = tmp_path / "data", tmp_path / "marks"
    marks.mkdir()
    for cid in ("disk-0", "disk-1"):
        (data_dir / "disks" / cid).mkdir(parents=True)
        (data_dir / "disks" / cid / "f").write_text(cid)
    drain = data_dir / "jobs" / "db" / "bin" / "drain"
    drain.parent.mkdir(parents=True)
    # Records its process group (the agent gives it a session of its own, so it
    # outlives a killed worker), then drains for as long as `marks/sleep` says.
    drain.write_text(f"#!/bin/bash\necho $$ > {marks}/$(echo $SNAPLEDGER_INSTANCE | tr / -).pid\n"
                     f"sleep $(cat {marks}/sleep)\necho 0\n")
    drain.chmod(drain.stat().st_mode | stat.S_IXUSR)
    return data_dir, marks


def start(data_dir: Path, pg_url: str, command: str) -> Server:
    return Server(data_dir, pg_url, command=command, env=ENV).start()


def prepare(api: Server) -> None:
    api.api("PUT", "/deployments/prod", {"instances": [
        {"job": "db", "index": 0, "disks": ["disk-0"]}, {"job": "db", "index": 1, "disks": ["disk-1"]}]})
    api.api("PUT", "/config/snapshots", {"enable_snapshots": True})


def workers_beating(pg_url: str) -> int:
    base, _, query = pg_url.partition("?")
    schema = dict(part.split("=", 1) for part in query.split("&") if part)["schema"]
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        try:
            return conn.execute("SELECT count(*) FROM worker_heartbeats").fetchone()[0]
        except psycopg.errors.UndefinedTable:
            return 0


def kill_scripts(marks: Path) -> None:
    for pid_file in marks.glob("*.pid"):
        try:
            os.killpg(int(pid_file.read_text()), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def test_a_worker_killed_mid_drain_fails_the_instance_and_the_task(tmp_path: Path, pg_url: str) -> None:
    data_dir, marks = setup(tmp_path)
    (marks / "sleep").write_text("300")  # longer than the test: only the sweep can end it
    api = start(data_dir, pg_url, "api")
    projector = start(data_dir, pg_url, "projector")
    first = start(data_dir, pg_url, "worker")
    second = None
    try:
        prepare(api)
        task_id = api.api("POST", "/deployments/prod/jobs/db/updates", {})["task_id"]
        wait_for(lambda: (marks / "db-0.pid").exists())  # the drain of db/0 runs
        first.kill()
        killed_at = time.monotonic()
        second = start(data_dir, pg_url, "worker")
        task = api.wait_task(task_id, timeout=20)
        took = time.monotonic() - killed_at
        assert task["state"] == "error", task
        assert took < 10, took  # a lease of 1 s: found within seconds, not never
        assert [(i["instance"], i["state"]) for i in task["instances"]] == [("db/0", "failed"),
                                                                              ("db/1", "cancelled")]
        events = api.api("GET", f"/events?task_id={task_id}")
        started = next(e for e in events if e["type"] == "JobUpdate.DrainStarted")
        lost = next(e for e in events if e["type"] == "JobUpdate.WorkerLost")
        dead = started["data"]["worker"]
        assert dead.split(":")[1] == str(first.proc.pid)  # the killed process's worker
        assert lost["data"]["worker"] == dead and lost["data"]["step"] == "drain"
        assert lost["caused_by"] == started["event_id"]
        assert lost["actor"] != dead and lost["actor"].split(":")[1] == str(second.proc.pid)
        assert f"db/0: Snapledger::WorkerLost: worker {dead} stopped beating during the drain of db/0" \
            in task["result"]
        assert "db/1: Cancelled" in task["result"]
        assert task["instances"][0]["error"].startswith("Snapledger::WorkerLost")
        # Never drained again, never snapshotted: the half-drained instance has no clean snapshot.
        assert [e["type"] for e in events].count("JobUpdate.DrainStarted") == 1
        assert api.api("GET", "/deployments/prod/snapshots") == []
        assert not (marks / "db-1.pid").exists()
    finally:
        kill_scripts(marks)
        for process in (api, projector, first, second):
            if process is not None:
                process.kill()


def test_a_live_workers_long_drain_is_not_taken(tmp_path: Path, pg_url: str) -> None:
    data_dir, marks = setup(tmp_path)
    (marks / "sleep").write_text("3")  # three leases, while two workers sweep
    api = start(data_dir, pg_url, "api")
    projector = start(data_dir, pg_url, "projector")
    workers = [start(data_dir, pg_url, "worker"), start(data_dir, pg_url, "worker")]
    try:
        prepare(api)
        wait_for(lambda: workers_beating(pg_url) == 2)  # both up: the other one sweeps during the drain
        task_id = api.api("POST", "/deployments/prod/jobs/db/0/updates", {})["task_id"]
        task = api.wait_task(task_id, timeout=30)
        assert task["state"] == "done", task
        assert task["instances"][0]["ready"] is True
        types = [e["type"] for e in api.api("GET", f"/tasks/{task_id}/events")]
        assert "JobUpdate.WorkerLost" not in types and "JobUpdate.DrainCompleted" in types
        (snapshot,) = api.api("GET", "/deployments/prod/snapshots")
        assert snapshot["clean"] is True and snapshot["trigger"] == "job_update"
    finally:
        kill_scripts(marks)
        for process in (api, projector, *workers):
            process.kill()
