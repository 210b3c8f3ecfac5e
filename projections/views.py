"""The read models: snapshot listing, tasks (with their event logs), deployments.

Each view is plain code over events: a handler per event type writing SQL
through the cursor of the batch transaction the projector opened. SQL uses
`%s` placeholders and syntax both PostgreSQL and SQLite accept.
"""

from __future__ import annotations

from typing import Any, Callable

from .events import dumps, event_record, event_type, iso

Handler = Callable[[Any, int, Any], None]


class View:
    name: str
    tables: tuple[str, ...]
    ddl: tuple[str, ...]

    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}

    def apply(self, cur: Any, position: int, event: Any) -> None:
        handler = self.handlers.get(event_type(event))
        if handler is not None:
            handler(cur, position, event)


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

    def __init__(self) -> None:
        super().__init__()
        self.handlers = {
            "Snapshot.Requested": self._requested,
            "Snapshot.CpiCallStarted": self._call_started,
            "Snapshot.Taken": self._taken,
            "Snapshot.Failed": self._failed,
            "Snapshot.AttemptFailed": self._attempt_failed,
            "Snapshot.CpiCallInDoubt": self._in_doubt,
            "Snapshot.InDoubtRetried": self._in_doubt_retried,
            "Snapshot.Skipped": self._skipped,
            "Snapshot.DeletionRequested": self._deletion_requested,
            "Snapshot.Deleted": self._deleted,
            "Snapshot.DeletionFailed": self._deletion_failed,
            "Snapshot.Cancelled": self._cancelled,
        }

    @staticmethod
    def _set(cur: Any, event: Any, assignments: str, *params: Any) -> None:
        cur.execute(f"UPDATE snapshots_view SET {assignments} WHERE snapshot_id = %s",
                    (*params, str(event.originator_id)))

    def _requested(self, cur: Any, position: int, e: Any) -> None:
        cur.execute(
            """INSERT INTO snapshots_view (snapshot_id, deployment, job, idx, instance_id, disk_cid, state,
               clean, trigger, task_id, requested_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
            (str(e.originator_id), e.deployment, e.job, e.index, e.instance_id, e.disk_cid, "requested",
             bool(e.clean), e.trigger, e.task_id, iso(e.timestamp)),
        )

    def _call_started(self, cur: Any, position: int, e: Any) -> None:
        self._set(cur, e, "state = %s", "taking" if e.method == "snapshot_disk" else "deleting")

    def _taken(self, cur: Any, position: int, e: Any) -> None:
        self._set(cur, e, "state = 'taken', snapshot_cid = %s, created_at = %s, listed_seq = %s",
                  e.snapshot_cid, iso(e.timestamp), position)

    def _failed(self, cur: Any, position: int, e: Any) -> None:
        self._set(cur, e, "state = 'failed', last_error = %s", f"{e.error['type']}: {e.error['message']}")

    def _attempt_failed(self, cur: Any, position: int, e: Any) -> None:
        state = "requested" if e.method == "snapshot_disk" else "delete_requested"
        self._set(cur, e, "state = %s, last_error = %s", state, f"{e.error['type']}: {e.error['message']}")

    def _skipped(self, cur: Any, position: int, e: Any) -> None:
        self._set(cur, e, "state = 'skipped', last_error = %s", e.reason)

    def _in_doubt(self, cur: Any, position: int, e: Any) -> None:
        # Listed, so an operator sees it: it may exist in the IaaS.
        self._set(cur, e, "state = 'in_doubt', last_error = %s, listed_seq = COALESCE(listed_seq, %s)",
                  e.reason, position)

    def _in_doubt_retried(self, cur: Any, position: int, e: Any) -> None:
        if e.method == "snapshot_disk":
            self._set(cur, e, "state = 'requested', listed_seq = NULL")
        else:
            self._set(cur, e, "state = 'delete_requested'")

    def _deletion_requested(self, cur: Any, position: int, e: Any) -> None:
        self._set(cur, e, "state = 'delete_requested', deletion_task_id = %s", e.task_id)

    def _cancelled(self, cur: Any, position: int, e: Any) -> None:
        # A cancelled deletion leaves the snapshot taken and listed.
        self._set(cur, e, "state = %s", "cancelled" if e.method == "snapshot_disk" else "taken")

    def _deleted(self, cur: Any, position: int, e: Any) -> None:
        self._set(cur, e, "state = 'deleted', deleted_at = %s", iso(e.timestamp))

    def _deletion_failed(self, cur: Any, position: int, e: Any) -> None:
        self._set(cur, e, "state = 'taken', last_error = %s", f"{e.error['type']}: {e.error['message']}")


class TasksView(View):
    name = "tasks"
    tables = ("tasks_view", "task_events_view")
    ddl = (
        """CREATE TABLE IF NOT EXISTS tasks_view (
            task_id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            description TEXT NOT NULL,
            state TEXT NOT NULL,
            deployment TEXT,
            actor TEXT NOT NULL,
            trigger TEXT NOT NULL,
            result TEXT,
            operations INTEGER NOT NULL,
            finished_operations INTEGER NOT NULL,
            queued_at TEXT NOT NULL,
            started_at TEXT,
            finished_at TEXT,
            seq BIGINT NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS tasks_view_seq ON tasks_view (seq)",
        "CREATE INDEX IF NOT EXISTS tasks_view_deployment ON tasks_view (deployment, seq)",
        """CREATE TABLE IF NOT EXISTS task_events_view (
            task_id TEXT NOT NULL,
            position BIGINT NOT NULL,
            type TEXT NOT NULL,
            time TEXT NOT NULL,
            actor TEXT,
            data TEXT NOT NULL,
            PRIMARY KEY (task_id, position)
        )""",
    )

    def __init__(self) -> None:
        super().__init__()
        self.handlers = {
            "Task.Queued": self._queued,
            "Task.Started": self._started,
            "Task.OperationFinished": self._operation_finished,
            "Task.CancelRequested": self._cancel_requested,
            "Task.Finished": self._finished,
        }

    def apply(self, cur: Any, position: int, event: Any) -> None:
        super().apply(cur, position, event)
        record = event_record(position, event)
        if record["task_id"]:
            cur.execute(
                "INSERT INTO task_events_view (task_id, position, type, time, actor, data) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                (record["task_id"], position, record["type"], record["time"], record["actor"],
                 dumps(record["data"])),
            )

    def _queued(self, cur: Any, position: int, e: Any) -> None:
        cur.execute(
            """INSERT INTO tasks_view (task_id, kind, description, state, deployment, actor, trigger,
               operations, finished_operations, queued_at, seq)
               VALUES (%s, %s, %s, 'queued', %s, %s, %s, %s, 0, %s, %s)""",
            (str(e.originator_id), e.kind, e.description, e.deployment, e.actor, e.trigger,
             len(e.operations), iso(e.timestamp), position),
        )

    def _started(self, cur: Any, position: int, e: Any) -> None:
        cur.execute("UPDATE tasks_view SET state = 'processing', started_at = %s WHERE task_id = %s",
                    (iso(e.timestamp), str(e.originator_id)))

    def _operation_finished(self, cur: Any, position: int, e: Any) -> None:
        cur.execute("UPDATE tasks_view SET finished_operations = finished_operations + 1 WHERE task_id = %s",
                    (str(e.originator_id),))

    def _cancel_requested(self, cur: Any, position: int, e: Any) -> None:
        cur.execute("UPDATE tasks_view SET state = 'cancelling' WHERE task_id = %s", (str(e.originator_id),))

    def _finished(self, cur: Any, position: int, e: Any) -> None:
        cur.execute("UPDATE tasks_view SET state = %s, result = %s, finished_at = %s WHERE task_id = %s",
                    (e.state, e.result, iso(e.timestamp), str(e.originator_id)))


class DeploymentsView(View):
    name = "deployments"
    tables = ("deployments_view",)
    ddl = (
        """CREATE TABLE IF NOT EXISTS deployments_view (
            deployment_id TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            tags TEXT NOT NULL,
            instances TEXT NOT NULL,
            deleted BOOLEAN NOT NULL,
            updated_at TEXT NOT NULL
        )""",
    )

    def __init__(self) -> None:
        super().__init__()
        self.handlers = {
            "Deployment.Registered": self._registered,
            "Deployment.InventoryRecorded": self._recorded,
            "Deployment.Deleted": self._deleted,
        }

    def _registered(self, cur: Any, position: int, e: Any) -> None:
        cur.execute(
            "INSERT INTO deployments_view (deployment_id, name, tags, instances, deleted, updated_at) "
            "VALUES (%s, %s, '{}', '[]', %s, %s)",
            (str(e.originator_id), e.name, False, iso(e.timestamp)),
        )

    def _recorded(self, cur: Any, position: int, e: Any) -> None:
        cur.execute(
            "UPDATE deployments_view SET tags = %s, instances = %s, deleted = %s, updated_at = %s "
            "WHERE deployment_id = %s",
            (dumps(e.tags), dumps(e.instances), False, iso(e.timestamp), str(e.originator_id)),
        )

    def _deleted(self, cur: Any, position: int, e: Any) -> None:
        cur.execute("UPDATE deployments_view SET deleted = %s, updated_at = %s WHERE deployment_id = %s",
                    (True, iso(e.timestamp), str(e.originator_id)))


class ScheduleFiresView(View):
    name = "schedule_fires"
    tables = ("schedule_fires_view",)
    ddl = (
        """CREATE TABLE IF NOT EXISTS schedule_fires_view (
            fire_id TEXT PRIMARY KEY,
            schedule TEXT NOT NULL,
            fire_time TEXT NOT NULL,
            expression TEXT NOT NULL,
            outcome TEXT NOT NULL,
            tasks TEXT NOT NULL,
            recorded_at TEXT NOT NULL,
            position BIGINT NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS schedule_fires_view_last ON schedule_fires_view (schedule, fire_time)",
    )

    def __init__(self) -> None:
        super().__init__()
        self.handlers = {"ScheduleFire.Recorded": self._recorded}

    def _recorded(self, cur: Any, position: int, e: Any) -> None:
        cur.execute(
            "INSERT INTO schedule_fires_view (fire_id, schedule, fire_time, expression, outcome, tasks, "
            "recorded_at, position) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (str(e.originator_id), e.schedule, iso(e.fire_time), e.expression, e.outcome, dumps(e.tasks),
             iso(e.timestamp), position),
        )


# The states of `in_flight_ops`. Every state but AWAITING_OPERATOR is unresolved:
# some worker must still act, and the recovery sweep (Queries.unresolved) looks
# at all of them. One definition, so a new state cannot be left out of a sweep.
PENDING_STATES = ("requested", "delete_requested", "pending")  # no call running: execute it
CALLING = "calling"  # a CPI call was started: if its worker is silent, the call is in doubt
RESOLVING = "resolving"  # recorded in doubt, being resolved by `worker` (may have died doing it)
AWAITING_OPERATOR = "in_doubt"  # resolved as far as is safe; the operator decides (tasks --in-doubt)
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

    def __init__(self) -> None:
        super().__init__()
        done = self._done
        self.handlers = {
            "Snapshot.Requested": self._snapshot_requested,
            "Snapshot.DeletionRequested": self._deletion_requested,
            "Snapshot.CpiCallStarted": self._started,
            "Snapshot.AttemptFailed": self._pending_again,
            "Snapshot.CpiCallInDoubt": self._resolving,
            "Snapshot.InDoubtLeft": self._left_for_operator,
            "Snapshot.InDoubtRetried": self._pending_again,
            "Snapshot.Taken": done, "Snapshot.Failed": done, "Snapshot.Skipped": done,
            "Snapshot.Deleted": done, "Snapshot.DeletionFailed": done, "Snapshot.Cancelled": done,
            "SelfDiscovery.Requested": self._discovery_requested,
            "SelfDiscovery.CpiCallStarted": self._started,
            "SelfDiscovery.InDoubtRetried": self._pending_again,
            "SelfDiscovery.Discovered": done, "SelfDiscovery.Skipped": done, "SelfDiscovery.Failed": done,
        }

    def _upsert(self, cur: Any, e: Any, kind: str, deployment: str | None, disk_cid: str | None,
                state: str) -> None:
        cur.execute("DELETE FROM in_flight_ops WHERE operation_id = %s", (str(e.originator_id),))
        cur.execute(
            "INSERT INTO in_flight_ops (operation_id, kind, task_id, deployment, disk_cid, state, attempt, "
            "updated_at) VALUES (%s, %s, %s, %s, %s, %s, 0, %s)",
            (str(e.originator_id), kind, e.task_id, deployment, disk_cid, state, iso(e.timestamp)))

    def _snapshot_requested(self, cur: Any, position: int, e: Any) -> None:
        self._upsert(cur, e, "snapshot", e.deployment, e.disk_cid, "requested")

    def _deletion_requested(self, cur: Any, position: int, e: Any) -> None:
        # Deployment and disk from the listing, in SQL: no read round trip (see Projector.apply).
        cur.execute("DELETE FROM in_flight_ops WHERE operation_id = %s", (str(e.originator_id),))
        cur.execute(
            "INSERT INTO in_flight_ops (operation_id, kind, task_id, deployment, disk_cid, state, attempt, "
            "updated_at) SELECT %s, 'snapshot', %s, s.deployment, s.disk_cid, 'delete_requested', 0, %s "
            "FROM (SELECT 1 AS one) AS x LEFT JOIN snapshots_view AS s ON s.snapshot_id = %s",
            (str(e.originator_id), e.task_id, iso(e.timestamp), str(e.originator_id)))

    def _discovery_requested(self, cur: Any, position: int, e: Any) -> None:
        self._upsert(cur, e, "discovery", "_self", None, "requested")

    def _started(self, cur: Any, position: int, e: Any) -> None:
        cur.execute("UPDATE in_flight_ops SET state = %s, method = %s, worker = %s, attempt = %s, "
                    "task_id = %s, updated_at = %s WHERE operation_id = %s",
                    (CALLING, e.method, e.worker, e.attempt, e.task_id, iso(e.timestamp), str(e.originator_id)))

    def _pending_again(self, cur: Any, position: int, e: Any) -> None:
        cur.execute("UPDATE in_flight_ops SET state = 'pending', updated_at = %s WHERE operation_id = %s",
                    (iso(e.timestamp), str(e.originator_id)))

    def _resolving(self, cur: Any, position: int, e: Any) -> None:
        # The recovering worker (the event's actor) now holds the call: if it dies
        # before resolving it, the sweep finds it through that worker's silence.
        cur.execute("UPDATE in_flight_ops SET state = %s, worker = %s, updated_at = %s WHERE operation_id = %s",
                    (RESOLVING, e.actor, iso(e.timestamp), str(e.originator_id)))

    def _left_for_operator(self, cur: Any, position: int, e: Any) -> None:
        # Named again by the worker whose call is in doubt: what the operator looks for.
        cur.execute("UPDATE in_flight_ops SET state = %s, worker = %s, updated_at = %s WHERE operation_id = %s",
                    (AWAITING_OPERATOR, e.worker, iso(e.timestamp), str(e.originator_id)))

    def _done(self, cur: Any, position: int, e: Any) -> None:
        cur.execute("DELETE FROM in_flight_ops WHERE operation_id = %s", (str(e.originator_id),))


def all_views() -> list[View]:
    # Tasks last: see Projector. In-flight after snapshots (it reads snapshots_view).
    from .audit import AuditView
    from .job_updates import JobUpdateClaimsView, JobUpdatesView  # they subclass View: imported here
    from .restores import RestoresView

    return [SnapshotsView(), InFlightView(), DeploymentsView(), ScheduleFiresView(), JobUpdatesView(),
            JobUpdateClaimsView(), RestoresView(), AuditView(), TasksView()]
