"""structlog set-up: readable in a terminal, JSON lines in production.

One pipeline for every log line: structlog's own loggers and the standard
library's (aiohttp, psycopg, psycopg_pool, eventsourcing) go through the
same processors and the same renderer, so a JSON log has no plain-text
lines from libraries in it, and each line has `timestamp`, `level` and the
request's `request_id` where there is one. A line naming a task (`task_id`)
also gets the task's number (`task`), as the CLIs and the API show it
(issue 17, decision 38)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog
from structlog.types import EventDict, WrappedLogger

from snapledger.domain.task_numbers import TASK_NUMBERS


class _CurrentStderr:
    """Writes to whatever `sys.stderr` is when a line is written, not the
    stream it was at set-up: a test harness or a daemoniser may swap (and
    close) it later, and a log line must never fail a request."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


STDERR = _CurrentStderr()


def add_task_number(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """`task`: the number of the task the line names by `task_id`, when known
    (from memory; a task not met before is looked up once, domain/task_numbers.py)."""
    task_id = event_dict.get("task_id")
    if task_id and event_dict.get("task") is None:
        try:
            number = TASK_NUMBERS.number(str(task_id))
        except Exception:  # a log line must never fail what it logs (the store may be away)
            number = None
        if number is not None:
            event_dict["task"] = number
    return event_dict


def _shared_processors(fields: Mapping[str, Any] | None = None) -> list[structlog.types.Processor]:
    processors: list[structlog.types.Processor] = [_with_fields(dict(fields))] if fields else []
    return [
        *processors,
        structlog.contextvars.merge_contextvars,
        add_task_number,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def _with_fields(fields: dict[str, Any]) -> structlog.types.Processor:
    def add(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key, value in fields.items():
            event.setdefault(key, value)
        return event

    return add


def configure_logging(fmt: str = "auto", level: str = "info", fields: Mapping[str, Any] | None = None) -> None:
    """`fields` go on every line, from any thread (one of several API processes
    names itself so: its lines share the parent's stderr, decision 37)."""
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer() if fmt == "console" else structlog.processors.JSONRenderer()
    )
    numeric_level = logging.getLevelName(level.upper())
    structlog.configure(
        processors=[*_shared_processors(fields), structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.PrintLoggerFactory(file=STDERR),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(STDERR)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_shared_processors(fields), structlog.stdlib.add_logger_name],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, renderer],
    ))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(numeric_level)
    # Our access log (api/access_log.py) has the route, the user and the request
    # id; aiohttp's own would say the same less well, on a second line.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
