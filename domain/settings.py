"""The service-wide snapshot settings (BOSH: `director.enable_snapshots`)."""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

SETTINGS_ID = uuid5(NAMESPACE_URL, "snapledger:/settings")


class Settings(Aggregate):
    """One aggregate for the whole service; snapshots are off until enabled."""

    @staticmethod
    def create_id() -> UUID:
        return SETTINGS_ID

    @event("Created")
    def __init__(self, actor: str) -> None:
        self.enable_snapshots = False

    @event("SnapshotsEnabled")
    def enable_snapshots_(self, actor: str) -> None:
        self.enable_snapshots = True

    @event("SnapshotsDisabled")
    def disable_snapshots_(self, actor: str) -> None:
        self.enable_snapshots = False

    def set_enabled(self, enabled: bool, actor: str) -> bool:
        """Record a change only when the value really changes; returns whether it did."""
        if enabled == self.enable_snapshots:
            return False
        if enabled:
            self.enable_snapshots_(actor=actor)
        else:
            self.disable_snapshots_(actor=actor)
        return True
