"""Tasks hear of their snapshots' outcomes from the log (domain/services/task_progress.py);
where a test drives the runners itself, with no projector process following, this does."""

from __future__ import annotations

from typing import Any

from eventsourcing.utils import get_topic
from snapledger.domain.services.task_progress import FOLLOWED

TOPICS = [get_topic(cls) for cls in FOLLOWED]


def settle_tasks(ledger: Any) -> int:
    """Feed every snapshot event of the log to the task-progress service (as its
    follower does); returns how many operations ended now. Re-runnable."""
    notifications = ledger.store.recorder.select_notifications(start=0, limit=1_000_000, topics=TOPICS,
                                                               inclusive_of_start=False)
    return int(ledger.task_progress.follow([ledger.store.mapper.to_domain_event(n) for n in notifications]))
