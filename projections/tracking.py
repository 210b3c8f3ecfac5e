"""Where each follower of the log stands: one row per name in `projection_tracking`.

Views (projections/projector.py, replay.py) and the workers' followers
(adapters/log_worker.py) keep their positions in the same table, written by
the one statement below, so a position is always saved the same way, inside
whatever transaction the caller holds.
"""

from __future__ import annotations

from .database import Row
from .view import Cursor

TRACKING_DDL = """CREATE TABLE IF NOT EXISTS projection_tracking (
    name TEXT PRIMARY KEY,
    position BIGINT NOT NULL
)"""

_UPSERT = ("INSERT INTO projection_tracking (name, position) VALUES (%s, %s) "
           "ON CONFLICT (name) DO UPDATE SET position = excluded.position")


def save_position(cur: Cursor, name: str, position: int) -> None:
    """Record `name`'s position in the caller's transaction (cursor `cur`)."""
    cur.execute(_UPSERT, (name, position))


def tracked_positions(rows: list[Row]) -> dict[str, int]:
    """Name -> position from the rows of `SELECT name, position FROM projection_tracking`."""
    return {row["name"]: int(row["position"]) for row in rows}
