"""A task's number from the event store, for a process that did not save the task.

The number is the position (notification id) of the task's first event. The
event store is asked, not the tasks view: a worker may log about a task the
projector has not reached yet. One primary-key read of the library's events
table, once per task per process (domain/task_numbers.py keeps the answer).
"""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID

from .store import POSTGRES_EVENTS_TABLE, SQLITE_EVENTS_TABLE, Database

# The library's tables: PostgreSQL numbers events in `notification_id` and keys
# them by a uuid; SQLite numbers them by rowid and keys them by the uuid's hex.
_STATEMENTS = {
    "postgres": f"SELECT notification_id AS number FROM {POSTGRES_EVENTS_TABLE} "
                "WHERE originator_id = %s::uuid AND originator_version = 1",
    "sqlite": f"SELECT rowid AS number FROM {SQLITE_EVENTS_TABLE} WHERE originator_id = %s AND originator_version = 1",
}


def event_store_numbers(db: Database) -> Callable[[str], int | None]:
    statement = _STATEMENTS[db.dialect]

    def number(task_id: str) -> int | None:
        try:
            key = UUID(task_id)
        except ValueError:
            return None
        rows = db.query(statement, (str(key) if db.dialect == "postgres" else key.hex,))
        return int(rows[0]["number"]) if rows else None

    return number
