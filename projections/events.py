"""Turning domain events into plain JSON-able records (views, task logs, audit)."""

from __future__ import annotations

import json
from datetime import datetime, UTC
from typing import TypedDict
from uuid import UUID

from eventsourcing.domain import DomainEvent

_ENVELOPE = ("originator_id", "originator_version", "timestamp", "originator_topic")


def iso(ts: datetime | None) -> str | None:
    """Fixed-width UTC ISO 8601: sorts correctly as text on both backends."""
    if ts is None:
        return None
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_type(event: object) -> str:
    return type(event).__qualname__  # e.g. "Snapshot.Taken"


def _plain(value: object) -> object:
    # object: what the JSON transcoder decoded (JSON, UUIDs, datetimes), passed on as it is.
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def event_data(event: object) -> dict[str, object]:
    return {k: _plain(v) for k, v in vars(event).items() if k not in _ENVELOPE}


class EventRecord(TypedDict):
    """One event as the views and task logs record it."""

    position: int
    type: str
    time: str | None
    aggregate_id: str
    version: int
    actor: object
    task_id: object
    data: dict[str, object]


def event_record(position: int, event: DomainEvent) -> EventRecord:
    data = event_data(event)
    return {
        "position": position,
        "type": event_type(event),
        "time": iso(event.timestamp),
        "aggregate_id": str(event.originator_id),
        "version": event.originator_version,
        "actor": data.get("actor"),
        "task_id": data.get("task_id") or (str(event.originator_id) if event_type(event).startswith("Task.") else None),
        "data": data,
    }


def dumps(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
