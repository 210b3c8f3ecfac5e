"""Tasks (BOSH's `tasks`): each with its state and progress, and its event log."""

from __future__ import annotations

from typing import Any

from snapledger.domain.task import CANCELLING, PROCESSING, QUEUED, Task

from .events import dumps, event_record, iso
from .view import Cursor, Handlers, View, on


class TasksView(View):
    name = "tasks"
    tables = ("tasks_view", "task_events_view")
    every_event = True  # a task's log holds every event naming the task
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

    def bind(self) -> Handlers:
        return on(Task, Queued=self._queued, Started=self._started, OperationFinished=self._operation_finished,
                  CancelRequested=self._cancel_requested, Finished=self._finished)

    def apply(self, cur: Cursor, position: int, event: Any) -> None:
        super().apply(cur, position, event)
        record = event_record(position, event)
        if record["task_id"]:
            cur.execute(
                "INSERT INTO task_events_view (task_id, position, type, time, actor, data) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                (record["task_id"], position, record["type"], record["time"], record["actor"],
                 dumps(record["data"])),
            )

    def _queued(self, cur: Cursor, position: int, e: Any) -> None:
        cur.execute(
            """INSERT INTO tasks_view (task_id, kind, description, state, deployment, actor, trigger,
               operations, finished_operations, queued_at, seq)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 0, %s, %s)""",
            (str(e.originator_id), e.kind, e.description, QUEUED, e.deployment, e.actor, e.trigger,
             len(e.operations), iso(e.timestamp), position),
        )

    def _started(self, cur: Cursor, position: int, e: Any) -> None:
        cur.execute("UPDATE tasks_view SET state = %s, started_at = %s WHERE task_id = %s",
                    (PROCESSING, iso(e.timestamp), str(e.originator_id)))

    def _operation_finished(self, cur: Cursor, position: int, e: Any) -> None:
        cur.execute("UPDATE tasks_view SET finished_operations = finished_operations + 1 WHERE task_id = %s",
                    (str(e.originator_id),))

    def _cancel_requested(self, cur: Cursor, position: int, e: Any) -> None:
        cur.execute("UPDATE tasks_view SET state = %s WHERE task_id = %s", (CANCELLING, str(e.originator_id)))

    def _finished(self, cur: Cursor, position: int, e: Any) -> None:
        cur.execute("UPDATE tasks_view SET state = %s, result = %s, finished_at = %s WHERE task_id = %s",
                    (e.state, e.result, iso(e.timestamp), str(e.originator_id)))
