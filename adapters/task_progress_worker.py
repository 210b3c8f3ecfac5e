"""The task-progress follower: snapshot outcomes in the log become their tasks' progress and end.

One per projector process (the role that keeps the views; a task's progress
is what they show), from a position of its own (`task_progress` in
`projection_tracking`), saved after each batch's progress is: a crash replays
the batch, and the service finds it recorded (domain/services/task_progress.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from eventsourcing.utils import get_topic
from snapledger.domain.services.task_progress import FOLLOWED
from snapledger.domain.task import TERMINAL_STATES

from .follower import Batch, ChangeSignal, LogFollower, TrackedPosition
from .store import Database
from snapledger.domain.log import Log

if TYPE_CHECKING:
    from snapledger.domain.application import Ledger

POSITION_NAME = "task_progress"  # its row in projection_tracking: never renamed (it is data)


class TaskProgressFollower:
    def __init__(self, ledger: Ledger, db: Database, signal: ChangeSignal, log: Log,
                 views_position: Callable[[], int],
                 poll_interval: float = 1.0, batch_size: int = 1000) -> None:
        self.ledger = ledger
        self.db = db
        self.views_position = views_position
        self.tracked = TrackedPosition(db, POSITION_NAME)
        self.log = log.bind(component="task-progress")
        self.follower = LogFollower("task-progress", ledger, signal, self.handle, self.start_position, self.log,
                                    topics=[get_topic(cls) for cls in FOLLOWED], batch_size=batch_size,
                                    poll_interval=poll_interval)

    def start_position(self) -> int:
        """Where it stands; the first time (a new ledger, or one from before
        this follower, whose tasks were written by the workers), just before the
        oldest task still open: no outcome an open task waits for comes earlier."""
        saved = self.tracked.saved()
        if saved is not None:
            return saved
        terminal = sorted(TERMINAL_STATES)
        marks = ", ".join(["%s"] * len(terminal))
        open_tasks = self.db.query(f"SELECT MIN(seq) AS seq FROM tasks_view WHERE state NOT IN ({marks})",
                                   tuple(terminal))
        oldest = open_tasks[0]["seq"] if open_tasks and open_tasks[0]["seq"] is not None else None
        viewed = int(self.views_position())  # tasks not in the view yet begin after it
        start = min(int(oldest) - 1, viewed) if oldest is not None else viewed
        self.log.info("task progress starts", position=start)
        return start

    def handle(self, batch: Batch) -> None:
        ended = self.ledger.task_progress.follow([event for _, event in batch])
        self.tracked.save(batch[-1][0])
        if ended:
            self.log.debug("operations ended", count=ended, position=batch[-1][0])

    def start(self) -> None:
        self.follower.start()

    def stop(self) -> None:
        self.follower.stop()
