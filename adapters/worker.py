"""The worker process: follows snapshot requests in the log and executes them."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from eventsourcing.utils import get_topic

from snapledger.domain.operations import OperationRunner
from snapledger.domain.discovery import SelfDiscovery
from snapledger.domain.snapshot import Snapshot
from .follower import Batch, ChangeSignal, LogFollower

WORK_TOPICS = (get_topic(Snapshot.Requested), get_topic(Snapshot.DeletionRequested),
               get_topic(SelfDiscovery.Requested))
POSITION_NAME = "worker"


class Worker:
    """Executes each batch's operations concurrently (bounded), then advances.

    The position only moves past a batch once every operation in it reached an
    outcome (or was found handled), so a crash replays at most one batch, and
    replayed operations are skipped because their state is no longer pending.
    """

    def __init__(self, ledger: Any, runner: OperationRunner, db: Any, signal: ChangeSignal, log: Any,
                 max_in_flight: int = 4, poll_interval: float = 1.0) -> None:
        self.runner = runner
        self.db = db
        self.log = log.bind(component="worker")
        self.pool = ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix="cpi")
        self.follower = LogFollower(
            "worker", ledger, signal, self._handle, self._load_position, self.log,
            topics=WORK_TOPICS, batch_size=200, poll_interval=poll_interval,
        )

    def _load_position(self) -> int:
        rows = self.db.query("SELECT position FROM projection_tracking WHERE name = %s", (POSITION_NAME,))
        return int(rows[0]["position"]) if rows else 0

    def _save_position(self, position: int) -> None:
        with self.db.transaction() as cur:
            cur.execute(
                "INSERT INTO projection_tracking (name, position) VALUES (%s, %s) "
                "ON CONFLICT (name) DO UPDATE SET position = excluded.position",
                (POSITION_NAME, position),
            )

    def _handle(self, batch: Batch) -> None:
        futures = [self.pool.submit(self.runner.execute, event.originator_id) for _, event in batch]
        errors = [f.exception() for f in futures if f.exception() is not None]
        if errors:
            raise errors[0]  # retry the batch: handled operations are skipped
        self._save_position(batch[-1][0])

    def start(self) -> None:
        self.follower.start()

    def stop(self) -> None:
        self.follower.stop()
        self.pool.shutdown(wait=True)
