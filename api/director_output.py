"""A task's output as the Director serves it (`GET /tasks/N/output?type=...`).

`event`: NDJSON stage lines, one `started` and one `finished`/`failed` per disk
(the Director's snapshot tasks print nothing; here the operator sees
progress), and the Director's `{"time", "error"}` line when the task failed.
`result`: the task's result. `cpi`: each CPI call with its request id, log
and stderr. `debug`: every event of the task, one JSON object a line.

Built from the audit view's rows of the task (index (task_id, position)),
incrementally: what was rendered is kept with the position of the last row
it covers, and each request reads only the rows after it (the audit view is
written in store order, so a row never appears behind one already read). A
CLI polling a running 10,000-operation task by ranges therefore costs one
indexed read of the new rows, not a rebuild of the whole output. Bounded by
bytes (least recently read first out); an evicted output is rebuilt.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING
from snapledger.projections.database import Row

if TYPE_CHECKING:
    from snapledger.adapters.bootstrap import Runtime

CACHE_BYTES = 64 * 1024 * 1024

STARTS = ("Snapshot.CpiCallStarted",)
FINISHES = ("Snapshot.Taken", "Snapshot.Deleted", "Snapshot.Skipped")
FAILURES = ("Snapshot.Failed", "Snapshot.DeletionFailed", "Snapshot.Cancelled")  # a cancelled call: not made


def _epoch(iso_time: str) -> int:
    return int(datetime.fromisoformat(iso_time.replace("Z", "+00:00")).timestamp())


@dataclass
class Output:
    """One task's output of one kind, as far as the audit rows read so far."""
    kind: str
    operations: int
    position: int = 0  # the last audit row rendered
    body: bytes = b""
    lines: EventLines = field(init=False)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.lines = EventLines(self.operations)

    def feed(self, rows: list[Row]) -> None:
        if not rows:
            return
        if self.kind == "debug":
            text = "".join(_debug_line(r) for r in rows)
        elif self.kind == "cpi":
            text = "".join(_cpi_line(r) for r in rows)
        else:
            text = "".join(json.dumps(line) + "\n" for line in self.lines.feed(rows))
        self.body += text.encode()
        self.position = rows[-1]["position"]


_cache: OrderedDict[tuple[int, str, str], Output] = OrderedDict()
_cache_lock = threading.Lock()


def task_output(runtime: Runtime, task: Row, kind: str) -> bytes:
    if kind == "result":
        return (task.get("result") or "").encode() + (b"\n" if task.get("result") else b"")
    key = (id(runtime), task["id"], kind)
    with _cache_lock:
        output = _cache.get(key)
        if output is None:
            output = _cache[key] = Output(kind, task.get("operations") or 0)
        _cache.move_to_end(key)
    with output.lock:  # one reader catches up at a time; the others then read nothing new
        output.feed(runtime.db.query("SELECT * FROM audit_events WHERE task_id = %s AND position > %s "
                                     "ORDER BY position", (task["id"], output.position)))
        body = output.body
    _evict()
    return body


def _evict() -> None:
    with _cache_lock:
        total = sum(len(o.body) for o in _cache.values())
        while total > CACHE_BYTES and len(_cache) > 1:
            _, dropped = _cache.popitem(last=False)
            total -= len(dropped.body)


def _debug_line(row: Row) -> str:
    return json.dumps({"position": row["position"], "time": row["time"], "type": row["type"],
                       "actor": row["actor"], "data": json.loads(row["data"])}) + "\n"


def _label(row: Row, method: str) -> str:
    instance = f"{row['job']}/{row['idx'] if row['idx'] is not None else row['instance_id']}"
    if method == "delete_snapshot":
        return f"{instance} {row['snapshot_cid']}"
    return f"{instance} {row['disk_cid']}"


class EventLines:
    """The Director's event-log lines for a task's audit rows, fed in log order:
    one `started` per disk at its CPI call, one `finished`/`failed` at its outcome,
    the Director's error line when the task failed."""

    def __init__(self, operations: int) -> None:
        self.operations = operations
        self.index: dict[str, int] = {}
        self.method_of: dict[str, str] = {}

    def feed(self, rows: list[Row]) -> list[Row]:
        lines = [self._line(row) for row in rows]
        return [line for line in lines if line is not None]

    def _line(self, row: Row) -> Row | None:
        kind, aggregate = row["type"], row["aggregate_id"]
        data = json.loads(row["data"])
        if kind in STARTS and aggregate not in self.index:
            self.index[aggregate] = len(self.index) + 1
            self.method_of[aggregate] = data.get("method", "snapshot_disk")
            return self._stage(row, aggregate, "started", 0)
        if (kind in FINISHES or kind in FAILURES) and aggregate in self.index:
            line = self._stage(row, aggregate, "failed" if kind in FAILURES else "finished", 100)
            if kind in FAILURES:
                error = data.get("error") or {}
                line["data"] = {"error": f"{error.get('type', 'CpiError')}: {error.get('message', '')}" if error
                                else data.get("reason", "cancelled")}
            return line
        if kind == "Task.Finished" and data.get("state") == "error":
            return {"time": _epoch(row["time"]), "error": {"code": 100, "message": data.get("result") or ""}}
        return None

    def _stage(self, row: Row, aggregate: str, state: str, progress: int) -> Row:
        method = self.method_of[aggregate]
        return {"time": _epoch(row["time"]), "stage": "Snapshot" if method == "snapshot_disk" else "Delete snapshot",
                "tags": [], "total": max(self.operations, len(self.index)), "task": _label(row, method),
                "index": self.index[aggregate], "state": state, "progress": progress}


def _cpi_line(row: Row) -> str:
    if row["type"] not in FINISHES + FAILURES + ("Snapshot.AttemptFailed", "Snapshot.CpiCallInDoubt"):
        return ""
    data = json.loads(row["data"])
    call = data.get("call") if isinstance(data.get("call"), dict) else {}
    return json.dumps({"time": row["time"], "outcome": row["type"].split(".", 1)[1],
                       "disk_cid": row["disk_cid"], "snapshot_cid": row["snapshot_cid"],
                       "request_id": call.get("request_id"), "duration_s": call.get("duration_s"),
                       "error": data.get("error"), "log": call.get("log", ""), "stderr": call.get("stderr", "")}) + "\n"
