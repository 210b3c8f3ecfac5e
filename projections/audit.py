"""The audit view: every event of the log, with the references an auditor
filters by (deployment, instance, disk, snapshot CID, task, actor, type, time).

A snapshot's CID is only known from `Snapshot.Taken` on; the view keeps each
snapshot's references and stamps them on all of its events, earlier ones
included, so "the life of snap-123" starts at its request.
"""

from __future__ import annotations

from typing import Any

from .events import dumps, event_record, event_type
from .views import View

# The event filters of GET /events, and the columns behind them.
FILTER_COLUMNS = {
    "deployment": "deployment", "job": "job", "index": "idx", "instance_id": "instance_id",
    "disk_cid": "disk_cid", "snapshot_cid": "snapshot_cid", "task_id": "task_id", "actor": "actor",
}


class AuditView(View):
    name = "audit"
    tables = ("audit_events", "audit_refs")
    ddl = (
        """CREATE TABLE IF NOT EXISTS audit_events (
            position BIGINT PRIMARY KEY,
            type TEXT NOT NULL,
            time TEXT NOT NULL,
            actor TEXT,
            task_id TEXT,
            aggregate_id TEXT NOT NULL,
            version INTEGER NOT NULL,
            deployment TEXT,
            job TEXT,
            idx INTEGER,
            instance_id TEXT,
            disk_cid TEXT,
            snapshot_cid TEXT,
            data TEXT NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS audit_events_deployment ON audit_events (deployment, position)",
        "CREATE INDEX IF NOT EXISTS audit_events_snapshot ON audit_events (snapshot_cid, position)",
        "CREATE INDEX IF NOT EXISTS audit_events_disk ON audit_events (disk_cid, position)",
        "CREATE INDEX IF NOT EXISTS audit_events_task ON audit_events (task_id, position)",
        "CREATE INDEX IF NOT EXISTS audit_events_aggregate ON audit_events (aggregate_id, position)",
        "CREATE INDEX IF NOT EXISTS audit_events_time ON audit_events (time)",
        # What is known of an aggregate (snapshot, task, deployment) to stamp on its events.
        """CREATE TABLE IF NOT EXISTS audit_refs (
            aggregate_id TEXT PRIMARY KEY,
            deployment TEXT,
            job TEXT,
            idx INTEGER,
            instance_id TEXT,
            disk_cid TEXT,
            snapshot_cid TEXT
        )""",
    )

    def apply(self, cur: Any, position: int, event: Any) -> None:
        record = event_record(position, event)
        kind = event_type(event)
        aggregate = record["aggregate_id"]
        refs = self._refs(cur, aggregate)
        data = record["data"]
        if kind in ("Snapshot.Requested", "Task.Queued", "Deployment.Registered", "SelfDiscovery.Requested"):
            refs = {"deployment": data.get("deployment") or data.get("name") or
                    ("_self" if kind.startswith("SelfDiscovery") else None),
                    "job": data.get("job"), "idx": data.get("index"), "instance_id": data.get("instance_id"),
                    "disk_cid": data.get("disk_cid"), "snapshot_cid": None}
            cur.execute("INSERT INTO audit_refs (aggregate_id, deployment, job, idx, instance_id, disk_cid, "
                        "snapshot_cid) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                        (aggregate, refs["deployment"], refs["job"], refs["idx"], refs["instance_id"],
                         refs["disk_cid"], None))
        elif kind == "Snapshot.Taken":
            refs["snapshot_cid"] = data["snapshot_cid"]
            cur.execute("UPDATE audit_refs SET snapshot_cid = %s WHERE aggregate_id = %s",
                        (data["snapshot_cid"], aggregate))
            # Stamp the CID on the snapshot's earlier events: its history starts at the request.
            cur.execute("UPDATE audit_events SET snapshot_cid = %s WHERE aggregate_id = %s",
                        (data["snapshot_cid"], aggregate))
        cur.execute(
            "INSERT INTO audit_events (position, type, time, actor, task_id, aggregate_id, version, deployment, "
            "job, idx, instance_id, disk_cid, snapshot_cid, data) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (position, kind, record["time"], record["actor"], record["task_id"], aggregate, record["version"],
             refs.get("deployment") or data.get("deployment"), refs.get("job"), refs.get("idx"), refs.get("instance_id"),
             refs.get("disk_cid"), refs.get("snapshot_cid"), dumps(data)))

    @staticmethod
    def _refs(cur: Any, aggregate: str) -> dict[str, Any]:
        rows = cur.execute("SELECT deployment, job, idx, instance_id, disk_cid, snapshot_cid FROM audit_refs "
                           "WHERE aggregate_id = %s", (aggregate,)).fetchall()
        return dict(rows[0]) if rows else {}


def audit_query(filters: dict[str, Any], after: int, limit: int) -> tuple[str, list[Any]]:
    """SQL for GET /events: every given filter must hold; ordered by position."""
    clauses, params = ["position > %s"], [after]
    for name, column in FILTER_COLUMNS.items():
        if filters.get(name) is not None:
            clauses.append(f"{column} = %s")
            params.append(filters[name])
    if filters.get("type"):
        types = [t.strip() for t in filters["type"].split(",") if t.strip()]
        ors = []
        for t in types:  # "Snapshot" matches every Snapshot.* event; "Snapshot.Taken" just that one
            ors.append("type = %s" if "." in t else "type LIKE %s")
            params.append(t if "." in t else f"{t}.%")
        clauses.append("(" + " OR ".join(ors) + ")")
    if filters.get("since"):
        clauses.append("time >= %s")
        params.append(filters["since"])
    if filters.get("until"):
        clauses.append("time < %s")
        params.append(filters["until"])
    statement = f"SELECT * FROM audit_events WHERE {' AND '.join(clauses)} ORDER BY position LIMIT %s"
    return statement, [*params, limit]
