"""The audit view: every event of the log, with the references an auditor
filters by (deployment, instance, disk, snapshot CID, task, actor, type, time).

A snapshot's CID is only known from `Snapshot.Taken` on; the view keeps each
snapshot's references and stamps them on all of its events, earlier ones
included, so "the life of snap-123" starts at its request.
"""

from __future__ import annotations

from functools import cache

from eventsourcing.domain import DomainEvent

from snapledger.domain.deployment import Deployment
from snapledger.domain.discovery import SelfDiscovery
from snapledger.domain.job_update import JobUpdate
from snapledger.domain.json_types import json_object
from snapledger.domain.names import SELF_DEPLOYMENT
from snapledger.domain.restore import Restore
from snapledger.domain.snapshot import (DELETE_REQUESTED, DELETED, FAILED, IN_DOUBT, REQUESTED, SKIPPED, TAKEN,
                                        Snapshot)
from snapledger.domain.task import Task

from .events import dumps, event_record, event_type
from .in_flight import CALLING
from .view import Cursor, View, event_class, event_name
from .database import Row

# The first event of an aggregate whose references its later events are stamped with.
_FIRST_EVENTS = frozenset({event_class(Snapshot, "Requested"), event_class(Task, "Queued"),
                           event_class(Deployment, "Registered")})
_DISCOVERY_REQUESTED = event_class(SelfDiscovery, "Requested")
_RESTORE_REQUESTED = event_class(Restore, "Requested")
_JOB_UPDATE_ANNOUNCED = event_class(JobUpdate, "Announced")
_SNAPSHOT_TAKEN = event_class(Snapshot, "Taken")

# The event filters of GET /events, and the columns behind them.
FILTER_COLUMNS = {
    "deployment": "deployment", "job": "job", "index": "idx", "instance_id": "instance_id",
    "disk_cid": "disk_cid", "snapshot_cid": "snapshot_cid", "task_id": "task_id", "actor": "actor",
}


class AuditView(View):
    name = "audit"
    tables = ("audit_events", "audit_refs")
    every_event = True
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
        # /metrics counts failures and expirations by type at every scrape; `bosh events
        # --action/--object-type` reads a type's newest events (decision 38). The
        # (type) index it replaces is dropped from views made before.
        "CREATE INDEX IF NOT EXISTS audit_events_type_position ON audit_events (type, position)",
        "DROP INDEX IF EXISTS audit_events_type",
        # `bosh events --user U`: a user's newest events.
        "CREATE INDEX IF NOT EXISTS audit_events_actor ON audit_events (actor, position)",
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

    def apply(self, cur: Cursor, position: int, event: DomainEvent) -> None:
        # Write-only SQL (no SELECT read back into Python): the projector sends
        # a batch's statements in one PostgreSQL pipeline, and a read here
        # would cost a round trip per event. The references come from
        # audit_refs through the INSERT's own join.
        record = event_record(position, event)
        kind, cls = event_type(event), type(event)
        aggregate = record["aggregate_id"]
        data = record["data"]
        if cls in _FIRST_EVENTS or cls is _DISCOVERY_REQUESTED:
            deployment = data.get("deployment") or data.get("name") or (
                SELF_DEPLOYMENT if cls is _DISCOVERY_REQUESTED else None)
            cur.execute("INSERT INTO audit_refs (aggregate_id, deployment, job, idx, instance_id, disk_cid, "
                        "snapshot_cid) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                        (aggregate, deployment, data.get("job"), data.get("index"), data.get("instance_id"),
                         data.get("disk_cid"), None))
        elif cls is _RESTORE_REQUESTED:
            # A restore's events carry the disk it writes and the CID it restores:
            # `audit --snapshot CID` and `--disk` show restores too.
            inst = json_object(data.get("instance")) or {}
            cur.execute("INSERT INTO audit_refs (aggregate_id, deployment, job, idx, instance_id, disk_cid, "
                        "snapshot_cid) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                        (aggregate, data.get("deployment"), inst.get("job"), inst.get("index"), inst.get("id"),
                         data.get("target_disk"), data.get("snapshot_cid")))
        elif cls is _JOB_UPDATE_ANNOUNCED:
            # The update's references, and each instance's: what its events are
            # stamped with when they do not carry them (version-1 events).
            rows: list[tuple[object, ...]] = [(aggregate, data.get("deployment"), data.get("job"), None, None, None)]
            instances = data.get("instances") or []
            instances = instances if isinstance(instances, list) else []
            rows += [(f"{aggregate}/{inst.get('id')}", data.get("deployment"), inst.get("job"), inst.get("index"),
                      inst.get("id"), (inst.get("disks") or [None])[0]) for inst in instances]
            for row in rows:
                cur.execute("INSERT INTO audit_refs (aggregate_id, deployment, job, idx, instance_id, disk_cid, "
                            "snapshot_cid) VALUES (%s, %s, %s, %s, %s, %s, NULL)", row)
        elif cls is _SNAPSHOT_TAKEN:
            cur.execute("UPDATE audit_refs SET snapshot_cid = %s WHERE aggregate_id = %s",
                        (data["snapshot_cid"], aggregate))
            # Stamp the CID on the snapshot's earlier events: its history starts at the request.
            cur.execute("UPDATE audit_events SET snapshot_cid = %s WHERE aggregate_id = %s",
                        (data["snapshot_cid"], aggregate))
        own, refs = _own_references(cls, aggregate, data)
        cur.execute(
            "INSERT INTO audit_events (position, type, time, actor, task_id, aggregate_id, version, deployment, "
            "job, idx, instance_id, disk_cid, snapshot_cid, data) "
            "SELECT %s, %s, %s, %s, %s, %s, %s, COALESCE(r.deployment, %s), COALESCE(%s, r.job), "
            "COALESCE(%s, r.idx), COALESCE(%s, r.instance_id), COALESCE(%s, r.disk_cid), r.snapshot_cid, %s "
            "FROM (SELECT 1 AS one) AS x LEFT JOIN audit_refs AS r ON r.aggregate_id = %s",
            (position, kind, record["time"], record["actor"], record["task_id"], aggregate, record["version"],
             data.get("deployment"), *own, dumps(data), refs))


def _own_references(cls: type, aggregate: str, data: Row) -> tuple[tuple[object, ...], str]:
    """The (job, index, instance id, disk) a job-update event carries itself, and
    the audit_refs row that fills what it does not: its instance's, recorded
    from the announcement. Other events take theirs from their aggregate's row."""
    if not issubclass(cls, JobUpdate.Event) or cls is _JOB_UPDATE_ANNOUNCED:
        return (None, None, None, None), aggregate
    disks = data.get("disks") or [None]
    instance_id = data.get("instance_id")
    refs = f"{aggregate}/{instance_id}" if instance_id else aggregate
    return (data.get("job"), data.get("index"), instance_id, disks[0]), refs


def audit_query(filters: Row, after: int, limit: int) -> tuple[str, list[object]]:
    """SQL for GET /events: every given filter must hold; ordered by position."""
    clauses = ["position > %s"]
    params: list[object] = [after]
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


@cache
def event_types() -> frozenset[str]:
    """Every type an event of the domain is recorded under ("Snapshot.Taken"):
    the event classes of the domain's aggregates (an event the log holds has a
    class, or it could not be read back)."""
    import snapledger.domain.application  # noqa: F401  # every aggregate, so every event class, is defined

    found: set[str] = set()
    pending: list[type] = [DomainEvent]
    while pending:
        sub: type
        for sub in pending.pop().__subclasses__():
            if sub.__module__.startswith("snapledger.domain") and sub.__qualname__.count(".") == 1:
                found.add(sub.__qualname__)
            pending.append(sub)
    return frozenset(found)


# One snapshot's life ------------------------------------------------------------

def _snapshot_event(name: str) -> str:
    return event_name(Snapshot, name)


# History works on audit rows (types as recorded), named through the aggregate's events.
_REQUESTED, _CALL_STARTED = _snapshot_event("Requested"), _snapshot_event("CpiCallStarted")
OUTCOMES = frozenset(_snapshot_event(name) for name in ("Taken", "Failed", "Skipped", "AttemptFailed", "Deleted",
                                                         "DeletionFailed", "CpiCallInDoubt"))


def snapshot_history(cid: str, events: list[Row]) -> Row | None:
    """The life of the snapshot with CID `cid` from its audit events (in log
    order): who asked, when and why, each CPI call paired with its answer
    through causation (an outcome's `caused_by` is its `CpiCallStarted`), and
    where it stands now. None when the log holds no such snapshot."""
    if not events:
        return None
    requested = next((e for e in events if e["type"] == _REQUESTED), events[0])
    request = requested["data"]
    calls: list[Row] = []
    by_start: dict[str, Row] = {}
    state = REQUESTED
    for e in events:
        if e["type"] == _CALL_STARTED:
            calls.append(_started_call(e))
            by_start[e["event_id"]] = calls[-1]
        elif e["type"] in OUTCOMES:
            _record_outcome(e, by_start.get(e["data"].get("caused_by") or ""), calls)
        state = _STATE_AFTER.get(e["type"], state)
    return {
        "snapshot_cid": cid, "snapshot_id": requested["aggregate_id"], "deployment": requested["deployment"],
        "instance": requested["instance"], "disk_cid": requested["disk_cid"], "trigger": request.get("trigger"),
        "clean": request.get("clean"), "requested_by": requested["actor"], "requested_at": requested["time"],
        "task_id": requested["task_id"], "state": state, "events": events, "cpi_calls": calls,
    }


def _started_call(e: Row) -> Row:
    data = e["data"]
    return {"method": data.get("method"), "attempt": data.get("attempt"), "worker": data.get("worker"),
            "task_id": data.get("task_id"), "actor": e["actor"], "started_at": e["time"],
            "started_position": e["position"], "outcome": None, "finished_at": None,
            "duration_s": None, "request_id": None, "answer": None, "log": "", "stderr": ""}


def _record_outcome(e: Row, started: Row | None, calls: list[Row]) -> None:
    """Fill the call an outcome answers: the one it names as its cause, else (an
    outcome recorded before causation existed) the latest open call."""
    entry = started or next((c for c in reversed(calls) if c["outcome"] is None), None)
    if entry is None:
        return
    data = e["data"]
    call: Row = data["call"] if isinstance(data.get("call"), dict) else {}
    entry.update(outcome=e["type"].split(".", 1)[1], finished_at=e["time"],
                 duration_s=call.get("duration_s"), request_id=call.get("request_id"),
                 answer=data.get("snapshot_cid") or data.get("error") or data.get("reason"),
                 log=call.get("log", ""), stderr=call.get("stderr", ""))


_STATE_AFTER = {_snapshot_event(name): state for name, state in (
    ("Requested", REQUESTED), ("CpiCallStarted", CALLING), ("Taken", TAKEN), ("Failed", FAILED),
    ("Skipped", SKIPPED), ("AttemptFailed", "retrying"), ("CpiCallInDoubt", IN_DOUBT),
    ("DeletionRequested", DELETE_REQUESTED), ("Deleted", DELETED), ("DeletionFailed", TAKEN))}
