"""Every follower keeps its position in `projection_tracking` under its own name."""

from __future__ import annotations

from snapledger.adapters import job_worker, restore_worker, worker
from snapledger.projections.views import all_views


def test_tracking_names_do_not_collide() -> None:
    # A follower writing under a view's name silently skips that view's events.
    names = [v.name for v in all_views()] + [worker.POSITION_NAME, job_worker.POSITION_NAME,
                                           restore_worker.POSITION_NAME]
    assert len(names) == len(set(names)), names
