"""Operations not finished yet (`in_flight_ops`), with the worker that last
claimed them: what the workers' recovery sweep looks at."""

from __future__ import annotations

from typing import Any

from snapledger.domain.discovery import SelfDiscovery
from snapledger.domain.names import SELF_DEPLOYMENT
from snapledger.domain.snapshot import DELETE_REQUESTED, IN_DOUBT, REQUESTED, Snapshot

from .events import iso
from .view import Cursor, Handlers, View, on

# The states of `in_flight_ops`. Every state but AWAITING_OPERATOR is unresolved:
# some worker must still act, and the recovery sweep (Queries.in_flight) looks
# at all of them. One definition, so a new state cannot be left out of a sweep.
PENDING = "pending"  # an attempt failed or an in-doubt call is retried: execute it again
PENDING_STATES = (REQUESTED, DELETE_REQUESTED, PENDING)  # no call running: execute it
CALLING = "calling"  # a CPI call was started: if its worker is silent, the call is in doubt
RESOLVING = "resolving"  # recorded in doubt, being resolved by `worker` (may have died doing it)
AWAITING_OPERATOR = IN_DOUBT  # resolved as far as is safe; the operator decides (tasks --in-doubt)
UNRESOLVED_STATES = (*PENDING_STATES, CALLING, RESOLVING)


class InFlightView(View):
    """Operations not finished yet, with the worker that last claimed them:
    what the workers' recovery sweep looks at (small: finished rows leave)."""

    name = "in_flight"
    tables = ("in_flight_ops",)
    ddl = (
        """CREATE TABLE IF NOT EXISTS in_flight_ops (
            operation_id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            task_id TEXT NOT NULL,
            deployment TEXT,
            disk_cid TEXT,
            state TEXT NOT NULL,
            method TEXT,
            worker TEXT,
            attempt INTEGER NOT NULL,
            updated_at TEXT NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS in_flight_ops_updated ON in_flight_ops (updated_at)",
    )

    def bind(self) -> Handlers:
        done = self._done
        return {
            **on(Snapshot, Requested=self._snapshot_requested, DeletionRequested=self._deletion_requested,
                 CpiCallStarted=self._started, AttemptFailed=self._pending_again, CpiCallInDoubt=self._resolving,
                 InDoubtLeft=self._left_for_operator, InDoubtRetried=self._pending_again,
                 Taken=done, Failed=done, Skipped=done, Deleted=done, DeletionFailed=done, Cancelled=done),
            **on(SelfDiscovery, Requested=self._discovery_requested, CpiCallStarted=self._started,
                 InDoubtRetried=self._pending_again, Discovered=done, Skipped=done, Failed=done),
        }

    def _upsert(self, cur: Cursor, e: Any, kind: str, deployment: str | None, disk_cid: str | None,
                state: str) -> None:
        cur.execute("DELETE FROM in_flight_ops WHERE operation_id = %s", (str(e.originator_id),))
        cur.execute(
            "INSERT INTO in_flight_ops (operation_id, kind, task_id, deployment, disk_cid, state, attempt, "
            "updated_at) VALUES (%s, %s, %s, %s, %s, %s, 0, %s)",
            (str(e.originator_id), kind, e.task_id, deployment, disk_cid, state, iso(e.timestamp)))

    def _snapshot_requested(self, cur: Cursor, position: int, e: Any) -> None:
        self._upsert(cur, e, "snapshot", e.deployment, e.disk_cid, REQUESTED)

    def _deletion_requested(self, cur: Cursor, position: int, e: Any) -> None:
        # Deployment and disk from the listing, in SQL: no read round trip (see Projector.apply).
        cur.execute("DELETE FROM in_flight_ops WHERE operation_id = %s", (str(e.originator_id),))
        cur.execute(
            "INSERT INTO in_flight_ops (operation_id, kind, task_id, deployment, disk_cid, state, attempt, "
            "updated_at) SELECT %s, 'snapshot', %s, s.deployment, s.disk_cid, %s, 0, %s "
            "FROM (SELECT 1 AS one) AS x LEFT JOIN snapshots_view AS s ON s.snapshot_id = %s",
            (str(e.originator_id), e.task_id, DELETE_REQUESTED, iso(e.timestamp), str(e.originator_id)))

    def _discovery_requested(self, cur: Cursor, position: int, e: Any) -> None:
        self._upsert(cur, e, "discovery", SELF_DEPLOYMENT, None, REQUESTED)

    def _started(self, cur: Cursor, position: int, e: Any) -> None:
        cur.execute("UPDATE in_flight_ops SET state = %s, method = %s, worker = %s, attempt = %s, "
                    "task_id = %s, updated_at = %s WHERE operation_id = %s",
                    (CALLING, e.method, e.worker, e.attempt, e.task_id, iso(e.timestamp), str(e.originator_id)))

    def _pending_again(self, cur: Cursor, position: int, e: Any) -> None:
        cur.execute("UPDATE in_flight_ops SET state = %s, updated_at = %s WHERE operation_id = %s",
                    (PENDING, iso(e.timestamp), str(e.originator_id)))

    def _resolving(self, cur: Cursor, position: int, e: Any) -> None:
        # The recovering worker (the event's actor) now holds the call: if it dies
        # before resolving it, the sweep finds it through that worker's silence.
        cur.execute("UPDATE in_flight_ops SET state = %s, worker = %s, updated_at = %s WHERE operation_id = %s",
                    (RESOLVING, e.actor, iso(e.timestamp), str(e.originator_id)))

    def _left_for_operator(self, cur: Cursor, position: int, e: Any) -> None:
        # Named again by the worker whose call is in doubt: what the operator looks for.
        cur.execute("UPDATE in_flight_ops SET state = %s, worker = %s, updated_at = %s WHERE operation_id = %s",
                    (AWAITING_OPERATOR, e.worker, iso(e.timestamp), str(e.originator_id)))

    def _done(self, cur: Cursor, position: int, e: Any) -> None:
        cur.execute("DELETE FROM in_flight_ops WHERE operation_id = %s", (str(e.originator_id),))
