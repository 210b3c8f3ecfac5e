"""The CLI's texts of a followed task's steps are keyed by event type names
(api/cli_event_texts.py): a name no aggregate has would never show."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

from eventsourcing.domain import Aggregate

import snapledger.domain
from snapledger.api.cli_event_texts import EVENT_TEXTS


def _aggregates() -> dict[str, type[Aggregate]]:
    found: dict[str, type[Aggregate]] = {}
    for module_info in pkgutil.walk_packages(snapledger.domain.__path__, "snapledger.domain."):
        module = importlib.import_module(module_info.name)
        found.update({name: value for name, value in vars(module).items()
                      if inspect.isclass(value) and issubclass(value, Aggregate) and value is not Aggregate})
    return found


def test_every_event_text_names_an_event_of_an_aggregate() -> None:
    aggregates = _aggregates()
    unknown = []
    for key in EVENT_TEXTS:
        aggregate, _, event = key.partition(".")
        cls = getattr(aggregates.get(aggregate), event, None)
        if not (inspect.isclass(cls) and issubclass(cls, Aggregate.Event)):
            unknown.append(key)
    assert len(EVENT_TEXTS) > 20 and unknown == []
