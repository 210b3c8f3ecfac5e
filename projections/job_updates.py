"""Per-instance progress of job updates: what a deploy tool polls to go on instance by instance;
and the instances a worker holds (draining, stopping), what the recovery sweep reads."""

from __future__ import annotations

import json
from typing import Any

from snapledger.domain.job_update import (CANCELLED, DRAINING, FAILED, READY, SNAPSHOTTING, STOPPING, WAITING,
                                          JobUpdate)

from .database import Database, Row
from .events import dumps, iso
from .view import Cursor, Handler, Handlers, View, error_text, on


class JobUpdatesView(View):
    name = "job_updates"
    tables = ("job_update_instances_view",)
    ddl = (
        """CREATE TABLE IF NOT EXISTS job_update_instances_view (
            task_id TEXT NOT NULL,
            instance_id TEXT NOT NULL,
            ord INTEGER NOT NULL,
            job TEXT NOT NULL,
            idx INTEGER,
            state TEXT NOT NULL,
            drain_type TEXT NOT NULL,
            snapshots TEXT NOT NULL,
            error TEXT,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (task_id, instance_id)
        )""",
    )

    def bind(self) -> Handlers:
        return on(JobUpdate, Announced=self._announced, DrainStarted=self._state(DRAINING),
                  DrainCompleted=self._state(STOPPING), JobStopped=self._state(SNAPSHOTTING),
                  DrainFailed=self._failed, StopFailed=self._failed, WorkerLost=self._failed,
                  SnapshotFailed=self._snapshot_failed, ReadyForUpdate=self._ready,
                  InstancesCancelled=self._cancelled)

    def _announced(self, cur: Cursor, position: int, e: Any) -> None:
        for ord_, inst in enumerate(e.instances):
            cur.execute(
                "INSERT INTO job_update_instances_view (task_id, instance_id, ord, job, idx, state, drain_type, "
                "snapshots, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, '[]', %s)",
                (e.task_id, inst["id"], ord_, inst["job"], inst["index"], WAITING, e.drain_type,
                 iso(e.timestamp)))

    @staticmethod
    def _set(cur: Cursor, e: Any, instance_id: str, assignments: str, *params: object) -> None:
        cur.execute(f"UPDATE job_update_instances_view SET {assignments}, updated_at = %s "
                    "WHERE task_id = %s AND instance_id = %s", (*params, iso(e.timestamp), e.task_id, instance_id))

    def _state(self, state: str) -> Handler:
        def handler(cur: Cursor, position: int, e: Any) -> None:
            self._set(cur, e, e.instance_id, "state = %s", state)
        return handler

    def _failed(self, cur: Cursor, position: int, e: Any) -> None:
        self._set(cur, e, e.instance_id, "state = %s, error = %s", FAILED, error_text(e.error))

    def _snapshot_failed(self, cur: Cursor, position: int, e: Any) -> None:
        message = "; ".join(f"disk {f.get('disk_cid')}: {f.get('error_type', f.get('outcome'))}: {f.get('message', '')}"
                            for f in e.failures)
        self._set(cur, e, e.instance_id, "state = %s, error = %s", FAILED, f"SnapshotFailed: {message}")

    def _ready(self, cur: Cursor, position: int, e: Any) -> None:
        self._set(cur, e, e.instance_id, "state = %s, snapshots = %s", READY, dumps(e.snapshots))

    def _cancelled(self, cur: Cursor, position: int, e: Any) -> None:
        for instance_id in e.instance_ids:
            self._set(cur, e, instance_id, "state = %s, error = %s", CANCELLED, e.reason)


class JobUpdateClaimsView(View):
    """Instances whose drain or stop a worker holds, with the worker and since when.

    Small (a row leaves when its stop is recorded or the instance fails), like
    `in_flight_ops` for CPI calls; a view of its own so that, added to an
    existing ledger, it is filled from the start of the log."""

    name = "job_update_claims"
    tables = ("job_update_claims",)
    ddl = (
        """CREATE TABLE IF NOT EXISTS job_update_claims (
            task_id TEXT NOT NULL,
            instance_id TEXT NOT NULL,
            update_id TEXT NOT NULL,
            instance TEXT NOT NULL,
            state TEXT NOT NULL,
            worker TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (task_id, instance_id)
        )""",
        "CREATE INDEX IF NOT EXISTS job_update_claims_at ON job_update_claims (updated_at)",
    )

    def bind(self) -> Handlers:
        released = self._released
        return on(JobUpdate, DrainStarted=self._claimed, DrainCompleted=self._stopping, JobStopped=released,
                  DrainFailed=released, StopFailed=released, WorkerLost=released)

    def _claimed(self, cur: Cursor, position: int, e: Any) -> None:
        cur.execute("INSERT INTO job_update_claims (task_id, instance_id, update_id, instance, state, worker, "
                    "updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    (e.task_id, e.instance_id, str(e.originator_id), e.instance, DRAINING, e.worker,
                     iso(e.timestamp)))

    def _stopping(self, cur: Cursor, position: int, e: Any) -> None:
        cur.execute("UPDATE job_update_claims SET state = %s, updated_at = %s "
                    "WHERE task_id = %s AND instance_id = %s", (STOPPING, iso(e.timestamp), e.task_id, e.instance_id))

    def _released(self, cur: Cursor, position: int, e: Any) -> None:
        cur.execute("DELETE FROM job_update_claims WHERE task_id = %s AND instance_id = %s",
                    (e.task_id, e.instance_id))


def claimed_instances(db: Database, older_than: str) -> list[Row]:
    """Instances a worker holds (draining, stopping), unchanged since `older_than`, oldest first."""
    return db.query("SELECT task_id, instance_id, update_id, instance, state, worker, updated_at "
                    "FROM job_update_claims WHERE updated_at < %s ORDER BY updated_at", (older_than,))


def instance_updates(db: Database, task_id: str) -> list[Row]:
    """Each instance of a job-update task, in update order, with its state (`ready` = go ahead)."""
    rows = db.query("SELECT * FROM job_update_instances_view WHERE task_id = %s ORDER BY ord", (task_id,))
    return [{"instance": f"{r['job']}/{r['idx'] if r['idx'] is not None else r['instance_id']}",
             "id": r["instance_id"], "job": r["job"], "index": r["idx"], "state": r["state"],
             "ready": r["state"] == READY, "drain_type": r["drain_type"], "snapshots": json.loads(r["snapshots"]),
             "error": r["error"], "updated_at": r["updated_at"]} for r in rows]


def last_event_position(db: Database, task_id: str) -> int:
    """The position of the task's latest event: a change counter for long polls."""
    rows = db.query("SELECT MAX(position) AS p FROM task_events_view WHERE task_id = %s", (task_id,))
    return int(rows[0]["p"] or 0) if rows else 0
