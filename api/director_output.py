"""A task's output as the Director serves it (`GET /tasks/N/output?type=...`).

`event`: NDJSON stage lines, one `started` and one `finished`/`failed` per disk
(the Director's snapshot tasks print nothing; here the operator sees
progress), and the Director's `{"time", "error"}` line when the task failed.
`result`: the task's result. `cpi`: each CPI call with its request id, log
and stderr. `debug`: every event of the task, one JSON object a line.

Built from the audit view's rows of the task (index (task_id, position)). A
finished task never changes, so its output is kept (a bounded cache): a CLI
reading it by ranges does not rebuild it on every poll.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from datetime import datetime
from typing import Any

CACHE_SIZE = 64
_cache: OrderedDict[tuple[int, str, str], bytes] = OrderedDict()
_lock = threading.Lock()

STARTS = ("Snapshot.CpiCallStarted",)
FINISHES = ("Snapshot.Taken", "Snapshot.Deleted", "Snapshot.Skipped")
FAILURES = ("Snapshot.Failed", "Snapshot.DeletionFailed", "Snapshot.Cancelled")  # a cancelled call: not made


def _epoch(iso_time: str) -> int:
    return int(datetime.fromisoformat(iso_time.replace("Z", "+00:00")).timestamp())


def task_output(runtime: Any, task: dict[str, Any], kind: str) -> bytes:
    finished = task["state"] in ("done", "error", "cancelled")
    key = (id(runtime), task["id"], kind)
    if finished:
        with _lock:
            if key in _cache:
                _cache.move_to_end(key)
                return _cache[key]
    body = _render(runtime, task, kind)
    if finished:
        with _lock:
            _cache[key] = body
            while len(_cache) > CACHE_SIZE:
                _cache.popitem(last=False)
    return body


def _render(runtime: Any, task: dict[str, Any], kind: str) -> bytes:
    if kind == "result":
        return (task.get("result") or "").encode() + (b"\n" if task.get("result") else b"")
    rows = runtime.db.query("SELECT * FROM audit_events WHERE task_id = %s ORDER BY position", (task["id"],))
    if kind == "debug":
        return "".join(json.dumps({"position": r["position"], "time": r["time"], "type": r["type"],
                                   "actor": r["actor"], "data": json.loads(r["data"])}) + "\n"
                       for r in rows).encode()
    if kind == "cpi":
        return "".join(_cpi_line(r) for r in rows).encode()
    return "".join(json.dumps(line) + "\n" for line in event_lines(task, rows)).encode()


def _label(row: dict[str, Any], method: str) -> str:
    instance = f"{row['job']}/{row['idx'] if row['idx'] is not None else row['instance_id']}"
    if method == "delete_snapshot":
        return f"{instance} {row['snapshot_cid']}"
    return f"{instance} {row['disk_cid']}"


def event_lines(task: dict[str, Any], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Director's event-log lines for the task's audit rows (in log order)."""
    lines: list[dict[str, Any]] = []
    total = task.get("operations") or 0
    index: dict[str, int] = {}
    method_of: dict[str, str] = {}
    for row in rows:
        kind, aggregate = row["type"], row["aggregate_id"]
        data = json.loads(row["data"])
        if kind in STARTS and aggregate not in index:
            index[aggregate] = len(index) + 1
            method_of[aggregate] = data.get("method", "snapshot_disk")
            stage = "Snapshot" if method_of[aggregate] == "snapshot_disk" else "Delete snapshot"
            lines.append({"time": _epoch(row["time"]), "stage": stage, "tags": [], "total": max(total, len(index)),
                          "task": _label(row, method_of[aggregate]), "index": index[aggregate], "state": "started",
                          "progress": 0})
        elif (kind in FINISHES or kind in FAILURES) and aggregate in index:
            method = method_of[aggregate]
            line = {"time": _epoch(row["time"]), "stage": "Snapshot" if method == "snapshot_disk" else "Delete snapshot",
                    "tags": [], "total": max(total, len(index)), "task": _label(row, method),
                    "index": index[aggregate], "state": "failed" if kind in FAILURES else "finished", "progress": 100}
            if kind in FAILURES:
                error = data.get("error") or {}
                line["data"] = {"error": f"{error.get('type', 'CpiError')}: {error.get('message', '')}" if error
                                else data.get("reason", "cancelled")}
            lines.append(line)
        elif kind == "Task.Finished" and data.get("state") == "error":
            lines.append({"time": _epoch(row["time"]), "error": {"code": 100, "message": data.get("result") or ""}})
    return lines


def _cpi_line(row: dict[str, Any]) -> str:
    if row["type"] not in FINISHES + FAILURES + ("Snapshot.AttemptFailed", "Snapshot.CpiCallInDoubt"):
        return ""
    data = json.loads(row["data"])
    call = data.get("call") if isinstance(data.get("call"), dict) else {}
    return json.dumps({"time": row["time"], "outcome": row["type"].split(".", 1)[1],
                       "disk_cid": row["disk_cid"], "snapshot_cid": row["snapshot_cid"],
                       "request_id": call.get("request_id"), "duration_s": call.get("duration_s"),
                       "error": data.get("error"), "log": call.get("log", ""), "stderr": call.get("stderr", "")}) + "\n"
