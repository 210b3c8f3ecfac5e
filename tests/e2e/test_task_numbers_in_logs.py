"""Every log line that names a task names it by its number too (issue 17:
"the same number in both CLIs, the HTTP API, the audit and the logs").

A real `snapledger serve` with JSON logs, on both event stores, through a
snapshot task whose CPI fails on one disk, a job update (drain, stop, clean
snapshot), a scheduled fire, and reads of `/tasks/N`: each line carrying a
`task_id` carries the matching integer `task`. What an operator greps for
when `bosh task 7` failed is `"task": 7`.
"""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path
from typing import Any

import yaml

from support.process import Server


def _script(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def _log(server: Server) -> list[dict[str, Any]]:
    return [json.loads(line) for line in server.log.read_text().splitlines() if line.strip()]


def _wait_scheduled_tasks(server: Server, timeout: float = 20.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        scheduled = [t for t in server.api("GET", "/tasks?limit=100") if t.get("trigger") == "scheduled"]
        if scheduled:
            return scheduled
        time.sleep(0.05)
    raise AssertionError("no scheduled task")


def test_every_line_naming_a_task_carries_its_number(tmp_path: Path, store_url: str) -> None:
    jobs = tmp_path / "jobs"
    _script(jobs / "db" / "bin" / "drain", "echo 0\n")
    config = tmp_path / "snapledger.yml"
    config.write_text(yaml.safe_dump({"jobs_dir": str(jobs), "log": {"format": "json", "level": "info"}}))
    data = tmp_path / "data"
    (data / "disks" / "disk-db-0").mkdir(parents=True)  # disk-db-1 is missing: its snapshot fails
    server = Server(data, database=store_url, env={"SNAPLEDGER_CONFIG": str(config)}).start()
    try:
        server.api("PUT", "/config/snapshots", {"enable_snapshots": True, "self_snapshot_schedule": "off"})
        server.api("PUT", "/deployments/prod", {"instances": [
            {"job": "db", "index": 0, "disks": ["disk-db-0"]}, {"job": "db", "index": 1, "disks": ["disk-db-1"]}]})
        snapshot_task = server.api("POST", "/deployments/prod/snapshots")["task_id"]
        assert server.wait_task(snapshot_task)["state"] == "error"
        update_task = server.api("POST", "/deployments/prod/jobs/db/0/updates", {})["task_id"]
        server.wait_task(update_task)
        server.api("PUT", "/config/snapshots", {"snapshot_schedule": "* * * * * * UTC"})
        scheduled = _wait_scheduled_tasks(server)
        server.api("PUT", "/config/snapshots", {"snapshot_schedule": "off"})
        for task in scheduled:
            server.wait_task(task["id"])
        numbers = {t["id"]: t["number"] for t in server.api("GET", "/tasks?limit=100")}
        server.api("GET", f"/tasks/{numbers[snapshot_task]}")  # the access line of /tasks/N
    finally:
        server.stop()

    lines = [e for e in _log(server) if e.get("task_id")]
    wrong = [e for e in lines if e.get("task") != numbers.get(e["task_id"])]
    assert not wrong, f"{len(wrong)} of {len(lines)} lines naming a task lack its number, e.g. {wrong[:3]}"
    # The flows above were logged, each line with its task's number.
    events = {(e["event"], e["task"]) for e in lines}
    for expected in [("task accepted", numbers[snapshot_task]), ("cpi call", numbers[snapshot_task]),
                     ("job drain", numbers[update_task]), ("scheduled task queued", scheduled[-1]["number"]),
                     ("request", numbers[snapshot_task])]:
        assert expected in events, (expected, sorted(events))
    failed, = [e for e in lines if e["event"] == "cpi call" and e.get("outcome") == "failed"
               and e["task_id"] == snapshot_task]
    assert failed["task"] == numbers[snapshot_task] and failed["disk_cid"] == "disk-db-1"
