"""Deployments (BOSH's `deployments`): name, tags, instances, whether deleted."""

from __future__ import annotations

from typing import Any

from snapledger.domain.deployment import Deployment

from .events import dumps, iso
from .view import Cursor, Handlers, View, on


class DeploymentsView(View):
    name = "deployments"
    tables = ("deployments_view",)
    ddl = (
        """CREATE TABLE IF NOT EXISTS deployments_view (
            deployment_id TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            tags TEXT NOT NULL,
            instances TEXT NOT NULL,
            deleted BOOLEAN NOT NULL,
            updated_at TEXT NOT NULL
        )""",
    )

    def bind(self) -> Handlers:
        return on(Deployment, Registered=self._registered, InventoryRecorded=self._recorded, Deleted=self._deleted)

    def _registered(self, cur: Cursor, position: int, e: Any) -> None:
        cur.execute(
            "INSERT INTO deployments_view (deployment_id, name, tags, instances, deleted, updated_at) "
            "VALUES (%s, %s, '{}', '[]', %s, %s)",
            (str(e.originator_id), e.name, False, iso(e.timestamp)),
        )

    def _recorded(self, cur: Cursor, position: int, e: Any) -> None:
        cur.execute(
            "UPDATE deployments_view SET tags = %s, instances = %s, deleted = %s, updated_at = %s "
            "WHERE deployment_id = %s",
            (dumps(e.tags), dumps(e.instances), False, iso(e.timestamp), str(e.originator_id)),
        )

    def _deleted(self, cur: Cursor, position: int, e: Any) -> None:
        cur.execute("UPDATE deployments_view SET deleted = %s, updated_at = %s WHERE deployment_id = %s",
                    (True, iso(e.timestamp), str(e.originator_id)))
