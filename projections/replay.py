"""Rebuilding views from the log alone: verify them, or swap a rebuilt one in.

The rebuild goes into a scratch store (a PostgreSQL schema, or a SQLite file)
with the same view code, from position 0, in batches. `verify` compares every
table row for row with the live one. `swap` copies a rebuilt view's tables
into the live ones and sets its tracking position, in one transaction, under
the projector's lock: readers see the old view or the new one, the API keeps
serving, and the projector carries on from the rebuilt position.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from eventsourcing.persistence import ApplicationRecorder, Mapper

from .database import Database
from .projector import PROJECTOR_LOCK, Projector
from .view import View
from .views import all_views
from .tracking import save_position, tracked_positions

BATCH = 5000


class EventLog(Protocol):
    """The ledger as a rebuild reads it: its notifications, and the events they hold."""

    @property
    def recorder(self) -> ApplicationRecorder: ...

    @property
    def mapper(self) -> Mapper[Any]: ...


@dataclass
class Rebuild:
    db: Database  # the scratch database
    position: int
    events: int
    views: list[View] = field(default_factory=list)


def rebuild(log: EventLog, scratch_db: Database, names: Iterable[str] | None = None,
            progress: Callable[[int, int], None] | None = None) -> Rebuild:
    """Replay the whole log into `scratch_db` for the named views (all by default)."""
    chosen = [v for v in all_views() if names is None or v.name in set(names)]
    Projector(scratch_db, views=chosen).setup()
    rebuilt = Rebuild(scratch_db, 0, 0, chosen)
    catch_up(log, rebuilt, log.recorder.max_notification_id() or 0, progress)
    return rebuilt


def catch_up(log: EventLog, rebuilt: Rebuild, head: int, progress: Callable[[int, int], None] | None = None) -> None:
    """Apply the log after the rebuild's position up to `head` (inclusive)."""
    projector = Projector(rebuilt.db, views=rebuilt.views)
    while rebuilt.position < head:
        notifications = log.recorder.select_notifications(start=rebuilt.position, limit=BATCH, stop=head,
                                                             inclusive_of_start=False)
        if not notifications:
            break
        projector.apply([(n.id, log.mapper.to_domain_event(n)) for n in notifications])
        rebuilt.position = notifications[-1].id
        rebuilt.events += len(notifications)
        if progress is not None:
            progress(rebuilt.position, head)
    rebuilt.position = max(rebuilt.position, head)  # the log may end in a gap (failed inserts)


def _rows(cur: Any, table: str) -> list[tuple[Any, ...]]:
    return sorted(tuple(str(v) for v in row.values()) for row in cur.execute(f"SELECT * FROM {table}").fetchall())


def differences(live_db: Database, rebuilt: Rebuild, log: EventLog) -> list[str]:
    """Where the live views differ from a rebuild from the log.

    The live tables and their positions are read in one consistent snapshot
    (the projector keeps writing meanwhile); the rebuild is then brought to
    exactly that position, so events arriving during a verify are no
    difference."""
    with live_db.snapshot() as cur:
        tracked = tracked_positions(cur.execute("SELECT name, position FROM projection_tracking").fetchall())
        live_positions = {v.name: tracked.get(v.name, 0) for v in rebuilt.views}
        target = max(live_positions.values(), default=0)
        live = {t: _rows(cur, t) for v in rebuilt.views if live_positions[v.name] == target for t in v.tables}
    found = []
    if target < rebuilt.position:
        return [f"live views are at position {target}, the log at {rebuilt.position} "
                "(let the projector catch up and verify again)"]
    catch_up(log, rebuilt, target)
    for view in rebuilt.views:
        if live_positions[view.name] != target:
            found.append(f"{view.name}: live view is at position {live_positions[view.name]}, the others at "
                         f"{target} (a view being rebuilt? verify again)")
            continue
        with rebuilt.db.snapshot() as scratch:
            for table in view.tables:
                fresh = _rows(scratch, table)
                if live[table] != fresh:
                    extra, missing = set(live[table]) - set(fresh), set(fresh) - set(live[table])
                    sample = next(iter(extra or missing), ())
                    found.append(f"{view.name}.{table}: {len(extra)} rows only in the live view, {len(missing)} "
                                 f"only in the rebuild; e.g. {sample[:6]}")
    return found


def swap(live_db: Database, rebuilt: Rebuild, name: str, scratch_ref: str) -> None:
    """Replace the live view `name` with the rebuilt one, atomically.

    `scratch_ref`: how the live connection reaches the scratch tables, a
    schema name (PostgreSQL) or an attached database name (SQLite)."""
    view = next(v for v in rebuilt.views if v.name == name)
    with live_db.transaction() as cur:
        if live_db.dialect == "postgres":
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (PROJECTOR_LOCK,))
        for table in view.tables:
            cur.execute(f"DELETE FROM {table}")
            cur.execute(f"INSERT INTO {table} SELECT * FROM {scratch_ref}.{table}")
        save_position(cur, name, rebuilt.position)


def scratch_name() -> str:
    return f"replay_{uuid.uuid4().hex[:10]}"
