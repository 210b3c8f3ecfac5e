"""Scheduled fires and the registry of deployments they fan out to."""

from __future__ import annotations

from datetime import datetime
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from .json_types import JsonObject

REGISTRY_ID = uuid5(NAMESPACE_URL, "snapledger:/deployment-registry")


def fire_id(schedule: str, fire_time: datetime) -> UUID:
    """Deterministic: every scheduler replica computes the same id for the same
    fire, so the event store accepts the first and rejects the others."""
    return uuid5(NAMESPACE_URL, f"snapledger:/schedule-fires/{schedule}/{fire_time.isoformat()}")


class ScheduleFire(Aggregate):
    """One due fire of a schedule: fired (with the tasks it created) or missed."""

    @staticmethod
    def create_id(schedule: str, fire_time: datetime) -> UUID:
        return fire_id(schedule, fire_time)

    @event("Recorded")
    def __init__(self, schedule: str, fire_time: datetime, expression: str, outcome: str,
                 tasks: list[str], detail: JsonObject, actor: str) -> None:
        self.schedule = schedule
        self.fire_time = fire_time
        self.outcome = outcome  # "fired" | "missed"
        self.tasks = list(tasks)


class DeploymentRegistry(Aggregate):
    """The names of live deployments, so a schedule can fan out without a view."""

    @staticmethod
    def create_id() -> UUID:
        return REGISTRY_ID

    @event("Created")
    def __init__(self) -> None:
        self.names: list[str] = []

    @event("Added")
    def _add(self, name: str) -> None:
        self.names.append(name)

    @event("Removed")
    def _remove(self, name: str) -> None:
        self.names.remove(name)

    def add(self, name: str) -> bool:
        if name in self.names:
            return False
        self._add(name=name)
        return True

    def remove(self, name: str) -> None:
        if name in self.names:
            self._remove(name=name)
