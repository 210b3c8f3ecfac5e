"""snapledger's events as `bosh events` shows them (the Director's event JSON).

BOSH records no snapshot events at all; here every event of the log is one:
each request, CPI call, outcome and deletion. `id` is the event's position,
`parent_id` the position of the event that caused it, `task` the task's
number. Newest first, 200 a page, `before_id` for the next (as the Director).
"""

from __future__ import annotations

import json
import re
from datetime import datetime, UTC
from typing import TYPE_CHECKING

from snapledger.domain.errors import LedgerError
from snapledger.projections.audit import event_types
from snapledger.projections.database import Row

if TYPE_CHECKING:
    from snapledger.adapters.bootstrap import Runtime

PAGE = 200
NO_USER = "snapledger"  # the user shown for an event recorded without an actor
_SQL_FILTERS = {"deployment": "a.deployment = %s", "task_id": "a.task_id = %s"}
# `object_name` as `_event` derives it: a snapshot's CID (its disk before it has one),
# a task's number, else the event's `name`, its deployment or its aggregate's id.
_OBJECT_NAME = ("CASE WHEN a.type LIKE %s THEN COALESCE(NULLIF(a.snapshot_cid, ''), a.disk_cid) "
                "WHEN a.type LIKE %s THEN COALESCE(CAST(t.seq AS TEXT), a.aggregate_id) "
                "ELSE COALESCE(NULLIF({name}, ''), NULLIF(a.deployment, ''), a.aggregate_id) END = %s")
_JSON_NAME = {"postgres": "(a.data::json ->> 'name')", "sqlite": "json_extract(a.data, '$.name')"}


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _epoch(iso_time: str) -> int:
    return int(datetime.fromisoformat(iso_time.replace("Z", "+00:00")).timestamp())


def _bound(raw: str | None) -> str | None:
    """`before_time`/`after_time`: epoch seconds or an ISO time, as stored (UTC, fixed width)."""
    if not raw:
        return None
    try:
        when = (datetime.fromtimestamp(int(raw), UTC) if raw.isdigit()
                else datetime.fromisoformat(raw.replace("Z", "+00:00")))
    except ValueError:
        raise LedgerError(f"not a time: {raw!r} (epoch seconds or YYYY-MM-DD HH:MM:SS, UTC)",
                          field="before_time") from None
    if when.tzinfo is None:  # the CLI's `--before 2016-05-08 17:26:32` is UTC, as the Director reads it
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def events_page(runtime: Runtime, filters: dict[str, str], before_id: int | None, before_time: str | None,
                after_time: str | None) -> list[Row]:
    """A page of events, newest first. Every filter is part of the query, before
    its LIMIT: a filtered page is full when that many events match, and paging
    by `before_id` walks each match once (filtering the page afterwards left
    short or empty pages with more matches behind them)."""
    clauses, params = _where(runtime.db.dialect, filters)
    if before_id is not None:
        clauses.append("a.position < %s")
        params.append(before_id)
    for bound, op in ((_bound(before_time), "<"), (_bound(after_time), ">")):
        if bound:
            clauses.append(f"a.time {op} %s")
            params.append(bound)
    rows = runtime.db.query(
        "SELECT a.*, t.seq AS task_number FROM audit_events a LEFT JOIN tasks_view t ON t.task_id = a.task_id "
        f"WHERE {' AND '.join(clauses)} ORDER BY a.position DESC LIMIT %s", [*params, PAGE])
    parents = _parents(runtime, rows)
    return [_event(r, parents) for r in rows]


def _where(dialect: str, filters: dict[str, str]) -> tuple[list[str], list[str | int]]:
    """The SQL of the Director's filters, each meaning what `_event` shows: `action`
    and `object_type` are the snake-case halves of the event's type (the types
    that have them, from the domain: an indexed IN); `object_name` is the name
    `_event` derives, as one SQL expression."""
    clauses: list[str] = ["1 = 1"]
    params: list[str | int] = []
    for name, clause in _SQL_FILTERS.items():
        if name in filters:
            clauses.append(clause)
            params.append(filters[name])
    if "user" in filters:  # events with no actor are shown as snapledger's
        clauses.append("(a.actor = %s OR a.actor IS NULL OR a.actor = '')" if filters["user"] == NO_USER
                       else "a.actor = %s")
        params.append(filters["user"])
    if "instance" in filters:  # job/uuid (or job/index)
        job, _, which = filters["instance"].partition("/")
        clauses.append("a.job = %s")
        params.append(job)
        if which.isdigit():
            clauses.append("a.idx = %s")
            params.append(int(which))
        elif which:
            clauses.append("a.instance_id = %s")
            params.append(which)
    for name, half in (("object_type", 0), ("action", 1)):
        if name in filters:
            types = _types_named(filters[name], half)
            clauses.append(f"a.type IN ({', '.join(['%s'] * len(types))})" if types else "1 = 0")
            params.extend(types)
    if "object_name" in filters:
        clauses.append(_OBJECT_NAME.format(name=_JSON_NAME[dialect]))
        params.extend(["Snapshot.%", "Task.%", filters["object_name"]])
    return clauses, params


def _types_named(snake: str, half: int) -> list[str]:
    """The recorded event types whose aggregate (half 0) or verb (half 1) shows as `snake`."""
    return sorted(t for t in event_types() if _snake(t.split(".")[half]) == snake)


def _parents(runtime: Runtime, rows: list[Row]) -> dict[str, int]:
    """Positions of the causing events (`caused_by` is `aggregate/version`)."""
    wanted = {json.loads(r["data"]).get("caused_by") for r in rows} - {None, ""}
    if not wanted:
        return {}
    aggregates = sorted({w.split("/")[0] for w in wanted})
    marks = ", ".join(["%s"] * len(aggregates))
    found = runtime.db.query(
        f"SELECT aggregate_id, version, position FROM audit_events WHERE aggregate_id IN ({marks})", aggregates)
    return {f"{f['aggregate_id']}/{f['version']}": f["position"] for f in found}


def _event(row: Row, parents: dict[str, int]) -> Row:
    data = json.loads(row["data"])
    aggregate, _, verb = row["type"].partition(".")
    object_type = _snake(aggregate)
    if object_type == "snapshot":
        object_name = row["snapshot_cid"] or row["disk_cid"]
    elif object_type == "task":
        object_name = str(row["task_number"]) if row["task_number"] is not None else row["aggregate_id"]
    else:
        object_name = data.get("name") or row["deployment"] or row["aggregate_id"]
    error = data.get("error")
    context = {k: data[k] for k in ("method", "attempt", "trigger", "reason", "state", "result", "outcome", "worker")
               if data.get(k) not in (None, "")}
    event = {
        "id": str(row["position"]),
        "parent_id": str(parents[data["caused_by"]]) if data.get("caused_by") in parents else None,
        "timestamp": _epoch(row["time"]), "user": row["actor"] or NO_USER, "action": _snake(verb),
        "object_type": object_type, "object_name": object_name,
        "error": f"{error.get('type', '')}: {error.get('message', '')}" if isinstance(error, dict) else None,
        "task": str(row["task_number"]) if row["task_number"] is not None else None,
        "deployment": row["deployment"],
        "instance": f"{row['job']}/{row['instance_id']}" if row["job"] and row["instance_id"] else None,
        "context": context,
    }
    return {k: v for k, v in event.items() if v not in (None, "")}  # as the Director: no nil or '' keys
