"""Settings: whether snapshots are enabled, the schedules, and which settings the configuration manages."""

from __future__ import annotations

from collections.abc import Mapping

from eventsourcing.domain import Aggregate

from ..errors import ManagedByConfig
from ..settings import SCHEDULE_NAMES, SETTINGS_ID, Settings
from .base import LedgerStore

ENABLE_HINT = (
    "snapshots are disabled; enable them with `snapledger enable-snapshots` "
    'or PUT /config/snapshots {"enable_snapshots": true}'
)


class SettingsService:
    def __init__(self, store: LedgerStore, managed: Mapping[str, str] | None = None) -> None:
        self.store = store
        # From the configuration (docs/decisions.md #24): runtime-settable key ->
        # the file or SNAPLEDGER_* variable that manages it (a runtime change is refused).
        self.managed: Mapping[str, str] = dict(managed or {})

    def current(self) -> Settings:
        """The recorded settings, or the defaults when nothing was recorded yet (read only)."""
        found = self.store.read(SETTINGS_ID)
        return found if isinstance(found, Settings) else Settings(actor="defaults")

    def load_for_change(self, actor: str) -> Settings:
        """The settings to change (new ones when nothing was recorded yet)."""
        found = self.store.load(SETTINGS_ID)
        return found if isinstance(found, Settings) else Settings(actor=actor)

    def snapshots_enabled(self) -> bool:
        return bool(self.current().enable_snapshots)

    def refuse_managed_changes(self, changes: Mapping[str, object], actor: str) -> None:
        """Refuse (409, naming the file and key) a runtime change of a managed
        setting, before anything is saved; setting the managed value again is no change."""
        if not self.managed:
            return
        settings = self.current()
        current = {"enable_snapshots": settings.enable_snapshots, **settings.schedules}
        for key, value in changes.items():
            if key in SCHEDULE_NAMES:
                value = (str(value or "")).strip() or None
            if key in self.managed and current.get(key) != value:
                self.refuse_managed(key, actor)

    def refuse_managed(self, key: str, actor: str, deployment: str | None = None) -> None:
        """Record the refusal of a runtime change of managed `key`, and raise it."""
        source = self.managed[key]
        reason = f"'{key}' is managed by the configuration ({source}): change it there and restart"
        self.store.record_refusal("change_setting", reason, deployment, {"key": key, "managed_by": source}, actor)
        raise ManagedByConfig(reason, field=key)

    def set_schedule(self, name: str, expression: str | None, actor: str, declared: bool = False) -> str | None:
        """`declared`: the configuration applies its own value (at start)."""
        if not declared:
            self.refuse_managed_changes({name: expression}, actor)

        def decide() -> list[Aggregate]:
            settings = self.load_for_change(actor)
            changed = settings.set_schedule(name, expression, actor=actor)
            return [settings] if changed or settings.version == 1 else []

        self.store.save_with_retry(decide)
        schedule: str | None = self.current().schedules[name]
        return schedule

    def set_snapshots_enabled(self, enabled: bool, actor: str, declared: bool = False) -> bool:
        if not declared:
            self.refuse_managed_changes({"enable_snapshots": enabled}, actor)

        def decide() -> list[Aggregate]:
            settings = self.load_for_change(actor)
            changed = settings.set_enabled(enabled, actor=actor)
            return [settings] if changed or settings.version == 1 else []

        self.store.save_with_retry(decide)
        return enabled
