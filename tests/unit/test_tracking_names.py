"""Every follower keeps its position in `projection_tracking` under its own name."""

from __future__ import annotations

from snapledger.adapters.job_update_worker import JobUpdateWorker
from snapledger.adapters.restore_worker import RestoreWorker
from snapledger.adapters.snapshot_worker import SnapshotWorker
from snapledger.projections.views import all_views


def test_tracking_names_do_not_collide() -> None:
    # A follower writing under a view's name silently skips that view's events.
    names = [v.name for v in all_views()] + [worker.position_name for worker in
                                           (SnapshotWorker, JobUpdateWorker, RestoreWorker)]
    assert len(names) == len(set(names)), names
