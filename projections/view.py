"""What every read model is: a handler per event class, writing SQL through
the cursor of the batch transaction the projector opened.

Handlers are keyed by the event classes themselves, looked up once when the
view is built (`on`): a handler named for an event the aggregate does not have
fails loudly there, instead of never being called. SQL uses `%s` placeholders
and syntax both PostgreSQL and SQLite accept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Protocol

from eventsourcing.domain import Aggregate, DomainEvent
from ..domain.json_types import JsonObject


class Cursor(Protocol):
    """The part of a DB-API cursor (psycopg or sqlite3) a view writes through."""

    def execute(self, statement: str, params: Sequence[object] = ..., /) -> Any: ...


# The event is `Any`: eventsourcing builds each aggregate's event classes from
# its decorated methods at run time, so their attributes are unknown statically.
Handler = Callable[[Cursor, int, Any], None]
Handlers = dict[type[DomainEvent], Handler]


class UnknownEvent(LookupError):
    """A view names an event its aggregate does not define (a typo, a renamed event)."""


def event_class(aggregate: type[Aggregate], name: str) -> type[DomainEvent]:
    """The event class `aggregate.<name>`, or UnknownEvent."""
    found = getattr(aggregate, name, None)
    if not (isinstance(found, type) and issubclass(found, DomainEvent) and found is not aggregate.Event
            and found.__qualname__ == f"{aggregate.__qualname__}.{name}"):
        raise UnknownEvent(f"{aggregate.__qualname__} has no event {name!r}")
    return found


def event_name(aggregate: type[Aggregate], name: str) -> str:
    """The type name an event is recorded under in the task log and the audit
    view ("Snapshot.Taken"), checked against the aggregate's events."""
    return event_class(aggregate, name).__qualname__


def on(aggregate: type[Aggregate], **handlers: Handler) -> Handlers:
    """Handlers for events of one aggregate, by event name: `on(Snapshot, Taken=self._taken)`."""
    return {event_class(aggregate, name): handler for name, handler in handlers.items()}


class View:
    name: ClassVar[str]
    tables: ClassVar[tuple[str, ...]]
    ddl: ClassVar[tuple[str, ...]]
    # A view that reads every event (task log, audit) instead of a chosen few.
    every_event: ClassVar[bool] = False

    def __init__(self) -> None:
        self.handlers: Handlers = self.bind()

    def bind(self) -> Handlers:
        """The view's handlers (see `on`)."""
        return {}

    def apply(self, cur: Cursor, position: int, event: Any) -> None:
        handler = self.handlers.get(type(event))
        if handler is not None:
            handler(cur, position, event)


def error_text(error: JsonObject) -> str:
    """An error recorded on an event, as the views show it: `type: message`."""
    return f"{error['type']}: {error['message']}"
