"""Every requested snapshot with its state: what the listing, retention and the
Director's `delete-snapshots` read. States are the aggregate's own names."""

from __future__ import annotations

from typing import Any

from snapledger.domain.snapshot import (CANCELLED, DELETE_REQUESTED, DELETED, DELETING, FAILED, IN_DOUBT,
                                        REQUESTED, SKIPPED, TAKEN, TAKING, Snapshot)

from .events import iso
from .view import Cursor, Handlers, View, error_text, on


def _deletes(method: str) -> bool:
    return method != "snapshot_disk"


class SnapshotsView(View):
    """Every requested snapshot with its state; the listing shows the ones that exist."""

    name = "snapshots"
    tables = ("snapshots_view",)
    ddl = (
        """CREATE TABLE IF NOT EXISTS snapshots_view (
            snapshot_id TEXT PRIMARY KEY,
            deployment TEXT NOT NULL,
            job TEXT NOT NULL,
            idx INTEGER,
            instance_id TEXT NOT NULL,
            disk_cid TEXT NOT NULL,
            snapshot_cid TEXT,
            state TEXT NOT NULL,
            clean BOOLEAN NOT NULL,
            trigger TEXT NOT NULL,
            task_id TEXT NOT NULL,
            deletion_task_id TEXT,
            requested_at TEXT NOT NULL,
            created_at TEXT,
            deleted_at TEXT,
            listed_seq BIGINT,
            last_error TEXT
        )""",
        "CREATE INDEX IF NOT EXISTS snapshots_view_listing ON snapshots_view (deployment, listed_seq)",
        "CREATE INDEX IF NOT EXISTS snapshots_view_cid ON snapshots_view (snapshot_cid)",
        "CREATE INDEX IF NOT EXISTS snapshots_view_at ON snapshots_view (deployment, created_at)",
    )

    def bind(self) -> Handlers:
        return on(Snapshot, Requested=self._requested, CpiCallStarted=self._call_started, Taken=self._taken,
                  Failed=self._failed, AttemptFailed=self._attempt_failed, CpiCallInDoubt=self._in_doubt,
                  InDoubtRetried=self._in_doubt_retried, Skipped=self._skipped,
                  DeletionRequested=self._deletion_requested, Deleted=self._deleted,
                  DeletionFailed=self._deletion_failed, Cancelled=self._cancelled)

    @staticmethod
    def _set(cur: Cursor, event: Any, assignments: str, *params: object) -> None:
        cur.execute(f"UPDATE snapshots_view SET {assignments} WHERE snapshot_id = %s",
                    (*params, str(event.originator_id)))

    def _requested(self, cur: Cursor, position: int, e: Any) -> None:
        cur.execute(
            """INSERT INTO snapshots_view (snapshot_id, deployment, job, idx, instance_id, disk_cid, state,
               clean, trigger, task_id, requested_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
            (str(e.originator_id), e.deployment, e.job, e.index, e.instance_id, e.disk_cid, REQUESTED,
             bool(e.clean), e.trigger, e.task_id, iso(e.timestamp)),
        )

    def _call_started(self, cur: Cursor, position: int, e: Any) -> None:
        self._set(cur, e, "state = %s", DELETING if _deletes(e.method) else TAKING)

    def _taken(self, cur: Cursor, position: int, e: Any) -> None:
        self._set(cur, e, "state = %s, snapshot_cid = %s, created_at = %s, listed_seq = %s",
                  TAKEN, e.snapshot_cid, iso(e.timestamp), position)

    def _failed(self, cur: Cursor, position: int, e: Any) -> None:
        self._set(cur, e, "state = %s, last_error = %s", FAILED, error_text(e.error))

    def _attempt_failed(self, cur: Cursor, position: int, e: Any) -> None:
        state = DELETE_REQUESTED if _deletes(e.method) else REQUESTED
        self._set(cur, e, "state = %s, last_error = %s", state, error_text(e.error))

    def _skipped(self, cur: Cursor, position: int, e: Any) -> None:
        self._set(cur, e, "state = %s, last_error = %s", SKIPPED, e.reason)

    def _in_doubt(self, cur: Cursor, position: int, e: Any) -> None:
        # Listed, so an operator sees it: it may exist in the IaaS.
        self._set(cur, e, "state = %s, last_error = %s, listed_seq = COALESCE(listed_seq, %s)",
                  IN_DOUBT, e.reason, position)

    def _in_doubt_retried(self, cur: Cursor, position: int, e: Any) -> None:
        if _deletes(e.method):
            self._set(cur, e, "state = %s", DELETE_REQUESTED)
        else:
            self._set(cur, e, "state = %s, listed_seq = NULL", REQUESTED)

    def _deletion_requested(self, cur: Cursor, position: int, e: Any) -> None:
        self._set(cur, e, "state = %s, deletion_task_id = %s", DELETE_REQUESTED, e.task_id)

    def _cancelled(self, cur: Cursor, position: int, e: Any) -> None:
        # A cancelled deletion leaves the snapshot taken and listed.
        self._set(cur, e, "state = %s", TAKEN if _deletes(e.method) else CANCELLED)

    def _deleted(self, cur: Cursor, position: int, e: Any) -> None:
        self._set(cur, e, "state = %s, deleted_at = %s", DELETED, iso(e.timestamp))

    def _deletion_failed(self, cur: Cursor, position: int, e: Any) -> None:
        self._set(cur, e, "state = %s, last_error = %s", TAKEN, error_text(e.error))
