"""The read models are bound to the domain's event classes and all registered.

A handler keyed by a misspelt event name used to be silently never called;
now the view cannot be built, and a view left out of the registry is a view
the projector never fills."""

from __future__ import annotations

import importlib
import pkgutil

import pytest
from eventsourcing.domain import DomainEvent

import snapledger.projections as projections
from snapledger.domain.snapshot import Snapshot
from snapledger.projections.view import UnknownEvent, View, event_class, on
from snapledger.projections.views import all_views


def _subclasses(cls: type[View]) -> set[type[View]]:
    found = set(cls.__subclasses__())
    return found | {s for c in found for s in _subclasses(c)}


def test_every_view_is_registered() -> None:
    for module in pkgutil.iter_modules(projections.__path__):
        importlib.import_module(f"{projections.__name__}.{module.name}")
    registered = {type(v) for v in all_views()}
    assert _subclasses(View) - registered == set()


@pytest.mark.parametrize("view", all_views(), ids=lambda v: v.name)
def test_a_view_handles_known_domain_events(view: View) -> None:
    assert view.handlers or view.every_event, f"{view.name} handles no event"
    for cls in view.handlers:
        assert issubclass(cls, DomainEvent) and cls.__module__.startswith("snapledger.domain."), cls
        aggregate, _, name = cls.__qualname__.partition(".")
        owner = getattr(importlib.import_module(cls.__module__), aggregate)
        assert event_class(owner, name) is cls


def test_a_handler_for_an_event_that_does_not_exist_fails() -> None:
    def handler(cur: object, position: int, event: object) -> None:
        raise AssertionError("never called")

    with pytest.raises(UnknownEvent, match="Snapshot has no event 'Takn'"):
        on(Snapshot, Takn=handler)
    with pytest.raises(UnknownEvent):
        on(Snapshot, Event=handler)  # the base class: no recorded event is exactly it
    assert set(on(Snapshot, Taken=handler)) == {Snapshot.Taken}  # type: ignore[attr-defined]
