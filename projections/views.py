"""The registry of read models: every view the projector keeps, in the order it applies them.

A view exists for the projector, `replay` and the tracking table only if it
is listed here (tests/unit/test_views.py fails on a View subclass left out).
"""

from __future__ import annotations

from .audit import AuditView
from .deployments import DeploymentsView
from .in_flight import InFlightView
from .job_updates import JobUpdateClaimsView, JobUpdatesView
from .restores import RestoresView
from .schedule_fires import ScheduleFiresView
from .snapshots import SnapshotsView
from .tasks import TasksView
from .view import View


def all_views() -> list[View]:
    # Tasks last: a reader that sees a task `done` also sees the snapshots it
    # produced (see Projector). In-flight after snapshots (it reads snapshots_view).
    return [SnapshotsView(), InFlightView(), DeploymentsView(), ScheduleFiresView(), JobUpdatesView(),
            JobUpdateClaimsView(), RestoresView(), AuditView(), TasksView()]
