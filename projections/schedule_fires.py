"""Each recorded fire of a schedule: when it was due, what it did (the scheduler's memory)."""

from __future__ import annotations

from typing import Any

from snapledger.domain.schedule import ScheduleFire

from .events import dumps, iso
from .view import Cursor, Handlers, View, on


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

    def bind(self) -> Handlers:
        return on(ScheduleFire, Recorded=self._recorded)

    def _recorded(self, cur: Cursor, position: int, e: Any) -> None:
        cur.execute(
            "INSERT INTO schedule_fires_view (fire_id, schedule, fire_time, expression, outcome, tasks, "
            "recorded_at, position) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (str(e.originator_id), e.schedule, iso(e.fire_time), e.expression, e.outcome, dumps(e.tasks),
             iso(e.timestamp), position),
        )
