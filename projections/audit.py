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
        # Write-only SQL (no SELECT read back into Python): the projector sends
        # a batch's statements in one PostgreSQL pipeline, and a read here
        # would cost a round trip per event. The references come from
        # audit_refs through the INSERT's own join.
        record = event_record(position, event)
        kind = event_type(event)
        aggregate = record["aggregate_id"]
        data = record["data"]
        if kind in ("Snapshot.Requested", "Task.Queued", "Deployment.Registered", "SelfDiscovery.Requested"):
            deployment = data.get("deployment") or data.get("name") or (
                "_self" if kind.startswith("SelfDiscovery") else None)
            cur.execute("INSERT INTO audit_refs (aggregate_id, deployment, job, idx, instance_id, disk_cid, "
                        "snapshot_cid) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                        (aggregate, deployment, data.get("job"), data.get("index"), data.get("instance_id"),
                         data.get("disk_cid"), None))
        elif kind == "Snapshot.Taken":
            cur.execute("UPDATE audit_refs SET snapshot_cid = %s WHERE aggregate_id = %s",
                        (data["snapshot_cid"], aggregate))
            # Stamp the CID on the snapshot's earlier events: its history starts at the request.
            cur.execute("UPDATE audit_events SET snapshot_cid = %s WHERE aggregate_id = %s",
                        (data["snapshot_cid"], aggregate))
        cur.execute(
            "INSERT INTO audit_events (position, type, time, actor, task_id, aggregate_id, version, deployment, "
            "job, idx, instance_id, disk_cid, snapshot_cid, data) "
            "SELECT %s, %s, %s, %s, %s, %s, %s, COALESCE(r.deployment, %s), r.job, r.idx, r.instance_id, "
            "r.disk_cid, r.snapshot_cid, %s "
            "FROM (SELECT 1 AS one) AS x LEFT JOIN audit_refs AS r ON r.aggregate_id = %s",
            (position, kind, record["time"], record["actor"], record["task_id"], aggregate, record["version"],
             data.get("deployment"), dumps(data), aggregate))


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
