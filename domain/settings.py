"""The service-wide settings: `enable_snapshots` and the cron schedules (BOSH manifest names)."""

from __future__ import annotations

from datetime import datetime
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from .cron import CronSchedule
from .json_types import JsonObject

SETTINGS_ID = uuid5(NAMESPACE_URL, "snapledger:/settings")

# The schedules by their BOSH manifest names (configuration keys, API and CLI names alike).
SNAPSHOT_SCHEDULE = "snapshot_schedule"  # every deployment's disks
SELF_SNAPSHOT_SCHEDULE = "self_snapshot_schedule"  # the service host's own disks
RETENTION_SCHEDULE = "retention_schedule"  # ours, not BOSH's: expire by policy

# BOSH's defaults (jobs/director/spec): both schedules exist unless turned off.
DEFAULT_SCHEDULES = {
    SNAPSHOT_SCHEDULE: "0 0 7 * * * UTC",
    SELF_SNAPSHOT_SCHEDULE: "0 0 6 * * * UTC",
    RETENTION_SCHEDULE: None,  # off until set
}
SCHEDULE_NAMES = tuple(DEFAULT_SCHEDULES)


class Settings(Aggregate):
    """One aggregate for the whole service; snapshots are off until enabled."""

    @staticmethod
    def create_id() -> UUID:
        return SETTINGS_ID

    @event("Created")
    def __init__(self, actor: str) -> None:
        self.enable_snapshots = False
        self.enabled_at: datetime | None = None
        self.schedules: dict[str, str | None] = dict(DEFAULT_SCHEDULES)
        self.schedule_set_at: dict[str, datetime] = {}
        self.retention: JsonObject | None = None  # the default policy; None: keep everything

    # The two events that start a schedule's "since" are explicit classes: their
    # `apply` reads the event's own timestamp. A decorated method's body runs
    # before eventsourcing moves `modified_on`, so it would see the previous
    # event's time, and the scheduler would catch up fires from before the change.
    class SnapshotsEnabled(Aggregate.Event):
        actor: str

        def apply(self, aggregate: Settings) -> None:
            aggregate.enable_snapshots = True
            aggregate.enabled_at = self.timestamp

    class ScheduleSet(Aggregate.Event):
        name: str
        expression: str | None
        actor: str

        def apply(self, aggregate: Settings) -> None:
            aggregate.schedules[self.name] = self.expression
            aggregate.schedule_set_at[self.name] = self.timestamp

    def enable_snapshots_(self, actor: str) -> None:
        self.trigger_event(self.SnapshotsEnabled, actor=actor)

    @event("SnapshotsDisabled")
    def disable_snapshots_(self, actor: str) -> None:
        self.enable_snapshots = False

    def _set_schedule(self, name: str, expression: str | None, actor: str) -> None:
        self.trigger_event(self.ScheduleSet, name=name, expression=expression, actor=actor)

    @event("RetentionDefaultSet")
    def set_default_retention(self, policy: JsonObject | None, actor: str) -> None:
        self.retention = dict(policy) if policy is not None else None

    def set_enabled(self, enabled: bool, actor: str) -> bool:
        """Record a change only when the value really changes; returns whether it did."""
        if enabled == self.enable_snapshots:
            return False
        if enabled:
            self.enable_snapshots_(actor=actor)
        else:
            self.disable_snapshots_(actor=actor)
        return True

    def set_schedule(self, name: str, expression: str | None, actor: str) -> bool:
        """`expression` None (or empty) turns the schedule off. Invalid cron raises CronError."""
        if name not in SCHEDULE_NAMES:
            raise ValueError(f"unknown schedule {name!r}")
        expression = (expression or "").strip() or None
        if expression is not None:
            CronSchedule.parse(expression)
        if self.schedules.get(name) == expression:
            return False
        self._set_schedule(name=name, expression=expression, actor=actor)
        return True

    def since(self, name: str) -> datetime:
        """Fires before this moment were never due (schedule set or snapshots enabled later)."""
        moments = [self.created_on, self.schedule_set_at.get(name), self.enabled_at]
        return max(m for m in moments if m is not None)
