"""Restores as they progress: what `GET /tasks/{id}` shows of a restore task, and
what the workers' recovery sweep reads to find restores whose worker died."""

from __future__ import annotations

from typing import Any

from snapledger.domain.restore import (CLAIMED_STATES, DRAINING, FAILED, REQUESTED, RESTORE_PENDING, RESTORED,
                                       RESTORING, SNAPSHOTTING, STOPPING, Restore)

from .database import Database, Row
from .events import iso
from .view import Cursor, Handler, Handlers, View, error_text, on

STOPPED = "stopped"  # the view's own: the job is stopped, the safety snapshot not requested yet


class RestoresView(View):
    name = "restores"
    tables = ("restores_view",)
    ddl = (
        """CREATE TABLE IF NOT EXISTS restores_view (
            task_id TEXT PRIMARY KEY,
            restore_id TEXT NOT NULL,
            deployment TEXT NOT NULL,
            snapshot_cid TEXT NOT NULL,
            source_disk TEXT NOT NULL,
            target_disk TEXT NOT NULL,
            new_disk BOOLEAN NOT NULL,
            instance TEXT NOT NULL,
            cpi TEXT NOT NULL,
            state TEXT NOT NULL,
            worker TEXT,
            attempts INTEGER NOT NULL,
            safety_snapshot_cid TEXT,
            error TEXT,
            requested_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS restores_view_state ON restores_view (state, updated_at)",
    )

    def bind(self) -> Handlers:
        failed = self._failed
        return on(Restore, Requested=self._requested, DrainStarted=self._claimed(DRAINING),
                  DrainCompleted=self._state(STOPPING), JobStopped=self._state(STOPPED),
                  SafetySnapshotRequested=self._state(SNAPSHOTTING), SafetySnapshotTaken=self._safety_taken,
                  CpiCallStarted=self._call_started, CpiCallInDoubt=self._state(RESTORE_PENDING),
                  Restored=self._state(RESTORED), DrainFailed=failed, StopFailed=failed,
                  SafetySnapshotFailed=failed, Failed=failed)

    def _requested(self, cur: Cursor, position: int, e: Any) -> None:
        inst = e.instance
        label = f"{inst['job']}/{inst['index'] if inst.get('index') is not None else inst['id']}"
        cur.execute(
            "INSERT INTO restores_view (task_id, restore_id, deployment, snapshot_cid, source_disk, target_disk, "
            "new_disk, instance, cpi, state, attempts, requested_at, updated_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 0, %s, %s)",
            (e.task_id, str(e.originator_id), e.deployment, e.snapshot_cid, e.source_disk, e.target_disk,
             bool(e.new_disk), label, e.cpi, REQUESTED, iso(e.timestamp), iso(e.timestamp)))

    @staticmethod
    def _set(cur: Cursor, e: Any, assignments: str, *params: object) -> None:
        cur.execute(f"UPDATE restores_view SET {assignments}, updated_at = %s WHERE task_id = %s",
                    (*params, iso(e.timestamp), e.task_id))

    def _state(self, state: str) -> Handler:
        def handler(cur: Cursor, position: int, e: Any) -> None:
            self._set(cur, e, "state = %s", state)
        return handler

    def _claimed(self, state: str) -> Handler:
        def handler(cur: Cursor, position: int, e: Any) -> None:
            self._set(cur, e, "state = %s, worker = %s", state, e.worker)
        return handler

    def _safety_taken(self, cur: Cursor, position: int, e: Any) -> None:
        self._set(cur, e, "state = %s, safety_snapshot_cid = %s", RESTORE_PENDING, e.snapshot_cid)

    def _call_started(self, cur: Cursor, position: int, e: Any) -> None:
        self._set(cur, e, "state = %s, worker = %s, attempts = %s", RESTORING, e.worker, e.attempt)

    def _failed(self, cur: Cursor, position: int, e: Any) -> None:
        self._set(cur, e, "state = %s, error = %s", FAILED, error_text(e.error))


def _row(r: Row) -> Row:
    return {"restore_id": r["restore_id"], "task_id": r["task_id"], "deployment": r["deployment"],
            "snapshot_cid": r["snapshot_cid"], "source_disk": r["source_disk"], "disk_cid": r["target_disk"],
            "new_disk": bool(r["new_disk"]), "instance": r["instance"], "cpi": r["cpi"], "state": r["state"],
            "worker": r["worker"], "attempts": r["attempts"], "safety_snapshot_cid": r["safety_snapshot_cid"],
            "error": r["error"], "requested_at": r["requested_at"], "updated_at": r["updated_at"]}


def restore_of_task(db: Database, task_id: str) -> Row | None:
    """A restore task's progress: state, target disk (new or not), safety snapshot, error."""
    rows = db.query("SELECT * FROM restores_view WHERE task_id = %s", (task_id,))
    return _row(rows[0]) if rows else None


def claimed_restores(db: Database, older_than: str) -> list[Row]:
    """Restores a worker holds (draining, stopping, restoring), unchanged since `older_than`."""
    claimed = sorted(CLAIMED_STATES)
    rows = db.query(f"SELECT * FROM restores_view WHERE state IN ({', '.join(['%s'] * len(claimed))}) "
                    "AND updated_at < %s ORDER BY updated_at", (*claimed, older_than))
    return [_row(r) for r in rows]
