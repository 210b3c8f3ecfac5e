"""Applies batches of events to every view in ONE transaction with their tracking rows.

One transaction per batch (not per event) is what makes catch-up and rebuild
fast; each view keeps its own position so one view can be rebuilt while the
others stay. Exactly-once: an event is applied to a view only if its position
is above the view's tracked position, and both commit together.
"""

from __future__ import annotations

from contextlib import ExitStack
from collections.abc import Iterable, Sequence
from typing import Any

from .database import Database
from .view import View
from .views import all_views
from .tracking import TRACKING_DDL, save_position, tracked_positions
from .view import Cursor

PROJECTOR_LOCK = 0x736E61706C6570  # shared with projections.replay


class Projector:
    def __init__(self, db: Database, views: Sequence[View] | None = None) -> None:
        self.db = db
        self.views = list(views) if views is not None else all_views()

    def setup(self) -> None:
        with self.db.transaction() as cur:
            cur.execute(TRACKING_DDL)
            for view in self.views:
                for statement in view.ddl:
                    cur.execute(statement)

    def positions(self, cur: Cursor | None = None) -> dict[str, int]:
        query = "SELECT name, position FROM projection_tracking"
        rows = cur.execute(query).fetchall() if cur is not None else self.db.query(query)
        known = tracked_positions(rows)
        return {view.name: known.get(view.name, 0) for view in self.views}

    def position(self) -> int:
        """Where following must resume: the least advanced view."""
        return min(self.positions().values(), default=0)

    def apply(self, batch: Iterable[tuple[int, Any]]) -> None:
        batch = list(batch)
        if not batch:
            return
        last = batch[-1][0]
        with self.db.transaction() as cur:
            if self.db.dialect == "postgres":
                # View and tracking commit together, so losing the last commits
                # in a crash only replays them: no need to wait for the fsync.
                cur.execute("SET LOCAL synchronous_commit = off")
                # A view swapped in by `replay --rebuild` must not interleave with a batch.
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (PROJECTOR_LOCK,))
            positions = self.positions(cur)
            with ExitStack() as pipeline:
                if self.db.dialect == "postgres":
                    # Send the batch's statements without waiting for each answer:
                    # views only write (no reads back into Python), so the batch costs
                    # a few round trips instead of several per event.
                    pipeline.enter_context(cur.connection.pipeline())
                self._apply_views(cur, batch, positions, last)

    def _apply_views(self, cur: Cursor, batch: list[tuple[int, Any]], positions: dict[str, int], last: int) -> None:
        # Views apply in order, tasks last: a reader that sees a task `done`
        # also sees the snapshots it produced.
        for view in self.views:
            start = positions[view.name]
            if start >= last:
                continue
            for position, event in batch:
                if position > start:
                    view.apply(cur, position, event)
            save_position(cur, view.name, last)

    def reset(self, names: Iterable[str] | None = None) -> None:
        """Empty the named views (all by default) and their tracking: they replay from 0."""
        chosen = [v for v in self.views if names is None or v.name in set(names)]
        with self.db.transaction() as cur:
            for view in chosen:
                for table in view.tables:
                    cur.execute(f"DELETE FROM {table}")
                cur.execute("DELETE FROM projection_tracking WHERE name = %s", (view.name,))
