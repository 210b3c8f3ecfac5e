"""Read side: what the API and CLI list. Plain SQL over the view tables."""

from __future__ import annotations

import json
from datetime import datetime

from snapledger.domain.retention import Candidate
from snapledger.domain.snapshot import EXISTING_STATES, LISTED_STATES, TAKEN

from .audit import audit_query
from .database import Database, Row
from .in_flight import AWAITING_OPERATOR, UNRESOLVED_STATES
from .sql import state_in

LISTED_CLAUSE = state_in(LISTED_STATES)
EXISTING_CLAUSE = state_in(EXISTING_STATES)
UNRESOLVED_CLAUSE = state_in(UNRESOLVED_STATES)


# The listing's columns under the names the API returns: rows come back as the
# API's dicts, with no second dict built per row (at 1,000 rows that was a
# third of the query's time in Python).
LISTING_COLUMNS = ('job, idx AS "index", instance_id, disk_cid, snapshot_cid, created_at, clean, trigger, state, '
                   'listed_seq AS "cursor"')


class Queries:
    def __init__(self, db: Database) -> None:
        self.db = db

    # Snapshots -----------------------------------------------------------------

    def snapshots(self, deployment: str, job: str | None = None, index_or_id: str | None = None,
                  limit: int | None = None, after: int | None = None, at: str | None = None
                  ) -> list[Row]:
        """The listing, newest last, paged by the `cursor` of the last row seen.

        With `at` (ISO time): the snapshots that existed then, from the event
        times of their `Taken` and `Deleted` (an index range scan on
        (deployment, created_at), so its cost grows with the deployment's
        snapshots, not with the log)."""
        if at is not None:
            clauses = ["deployment = %s", "created_at IS NOT NULL", "created_at <= %s",
                       "(deleted_at IS NULL OR deleted_at > %s)"]
            params: list[object] = [deployment, at, at]
        else:
            clauses = ["deployment = %s", LISTED_CLAUSE]
            params = [deployment]
        if job is not None:
            clauses.append("job = %s")
            params.append(job)
        if index_or_id is not None:
            if index_or_id.isdigit():
                clauses.append("idx = %s")
                params.append(int(index_or_id))
            else:
                clauses.append("instance_id = %s")
                params.append(index_or_id)
        if after is not None:
            clauses.append("listed_seq > %s")
            params.append(after)
        statement = f"SELECT {LISTING_COLUMNS} FROM snapshots_view WHERE {' AND '.join(clauses)} ORDER BY listed_seq"
        if limit is not None:
            statement += " LIMIT %s"
            params.append(limit)
        rows = self.db.query(statement, params)
        if at is not None or self.db.dialect != "postgres":
            for row in rows:
                row["clean"] = bool(row["clean"])  # SQLite has no booleans
                if at is not None:
                    row["state"] = TAKEN  # as it was then
        return rows

    def deletable_cids(self, deployment: str) -> list[str]:
        rows = self.db.query(
            "SELECT snapshot_cid FROM snapshots_view WHERE deployment = %s AND state = %s "
            "ORDER BY listed_seq", (deployment, TAKEN))
        return [r["snapshot_cid"] for r in rows]

    # Tasks -----------------------------------------------------------------------

    @staticmethod
    def _task_row(row: Row) -> Row:
        return {
            "id": row["task_id"], "number": row["seq"], "state": row["state"], "kind": row["kind"],
            "description": row["description"], "deployment": row["deployment"], "user": row["actor"],
            "trigger": row["trigger"], "result": row["result"], "operations": row["operations"],
            "finished_operations": row["finished_operations"], "queued_at": row["queued_at"],
            "started_at": row["started_at"], "finished_at": row["finished_at"],
        }

    def task(self, task_id: str) -> Row | None:
        """A task by its id or by its number (all digits: the position of its first event)."""
        if task_id.isdigit():
            rows = self.db.query("SELECT * FROM tasks_view WHERE seq = %s", (int(task_id),))
        else:
            rows = self.db.query("SELECT * FROM tasks_view WHERE task_id = %s", (task_id,))
        return self._task_row(rows[0]) if rows else None

    def tasks(self, deployment: str | None = None, state: str | None = None,
              limit: int = 100) -> list[Row]:
        clauses, params = ["1 = 1"], []
        if deployment is not None:
            clauses.append("deployment = %s")
            params.append(deployment)
        if state is not None:
            clauses.append("state = %s")
            params.append(state)
        rows = self.db.query(
            f"SELECT * FROM tasks_view WHERE {' AND '.join(clauses)} ORDER BY seq DESC LIMIT %s",
            [*params, limit])
        return [self._task_row(r) for r in rows]

    def task_events(self, task_id: str, after: int = 0) -> list[Row]:
        rows = self.db.query(
            "SELECT * FROM task_events_view WHERE task_id = %s AND position > %s ORDER BY position",
            (task_id, after))
        return [{"position": r["position"], "type": r["type"], "time": r["time"], "actor": r["actor"],
                 "data": json.loads(r["data"])} for r in rows]

    def cpi_log(self, task_id: str) -> list[Row]:
        """Every CPI call of a task with what it left behind (BOSH's `task --cpi`):
        the answer, the CPI's `log`, its stderr, the request id and duration."""
        entries = []
        for event in self.task_events(task_id):
            call, data = event["data"].get("call"), event["data"]
            if not isinstance(call, dict):
                continue
            where = {"position": event["position"], "time": event["time"], "event": event["type"],
                     "cpi": call.get("cpi")}
            # The calls made before the operation's own (`info`, `current_vm_id`): each its own entry.
            entries += [_cpi_log_entry(where, before, None, None, before.get("error"))
                        for before in call.get("calls_before") or []]
            entries.append(_cpi_log_entry(where, call, data.get("attempt") or call.get("attempts"),
                                          data.get("snapshot_cid"), data.get("error") or call.get("error")))
        return entries

    def retention_candidates(self, deployment: str) -> list[Candidate]:
        rows = self.db.query("SELECT snapshot_id, snapshot_cid, disk_cid, created_at, clean, state "
                             "FROM snapshots_view WHERE deployment = %s AND state = %s", (deployment, TAKEN))
        return [Candidate(r["snapshot_id"], r["snapshot_cid"], r["disk_cid"],
                          datetime.fromisoformat(r["created_at"].replace("Z", "+00:00")), bool(r["clean"]),
                          r["state"]) for r in rows]

    # Audit ---------------------------------------------------------------------------

    def events(self, filters: Row, after: int = 0, limit: int = 500) -> list[Row]:
        statement, params = audit_query(filters, after, limit)
        # Each event with its task's number (issue 17): the number the CLIs and logs show.
        statement = (f"SELECT e.*, t.seq AS task_number FROM ({statement}) AS e "
                     "LEFT JOIN tasks_view AS t ON t.task_id = e.task_id ORDER BY e.position")
        return [_audit_row(r) for r in self.db.query(statement, params)]

    # Recovery ------------------------------------------------------------------------

    def in_flight(self, older_than: str) -> list[Row]:
        """Unresolved operations (some worker must still act) not touched since
        `older_than` (ISO time): what the recovery sweep looks at."""
        return self.db.query(f"SELECT * FROM in_flight_ops WHERE updated_at < %s AND {UNRESOLVED_CLAUSE} "
                             "ORDER BY updated_at LIMIT 1000", (older_than,))

    def in_doubt(self) -> list[Row]:
        rows = self.db.query("SELECT * FROM in_flight_ops WHERE state = %s ORDER BY updated_at", (AWAITING_OPERATOR,))
        return [{"operation_id": r["operation_id"], "task_id": r["task_id"], "deployment": r["deployment"],
                 "disk_cid": r["disk_cid"], "method": r["method"], "worker": r["worker"],
                 "attempt": r["attempt"], "since": r["updated_at"]} for r in rows]

    def in_doubt_tasks(self) -> list[Row]:
        """Tasks with in-doubt CPI calls, each with the calls (for `tasks --in-doubt`)."""
        by_task: dict[str, list[Row]] = {}
        for op in self.in_doubt():
            by_task.setdefault(op["task_id"], []).append(op)
        result = []
        for task_id, ops in by_task.items():
            row = self.task(task_id) or {"id": task_id, "state": "unknown"}
            result.append({**row, "in_doubt": ops})
        return result

    # Deployments -------------------------------------------------------------------

    @staticmethod
    def _deployment_row(row: Row) -> Row:
        return {"name": row["name"], "tags": json.loads(row["tags"]), "instances": json.loads(row["instances"]),
                "deleted": bool(row["deleted"]), "updated_at": row["updated_at"]}

    def deployments(self, include_deleted: bool = False) -> list[Row]:
        rows = self.db.query("SELECT * FROM deployments_view ORDER BY name")
        return [self._deployment_row(r) for r in rows if include_deleted or not r["deleted"]]

    def deployment(self, name: str) -> Row | None:
        rows = self.db.query("SELECT * FROM deployments_view WHERE name = %s", (name,))
        return self._deployment_row(rows[0]) if rows else None

    def snapshot_counts(self) -> dict[str, int]:
        rows = self.db.query(
            f"SELECT deployment, COUNT(*) AS n FROM snapshots_view WHERE {EXISTING_CLAUSE} GROUP BY deployment")
        return {r["deployment"]: int(r["n"]) for r in rows}

    # Schedules -----------------------------------------------------------------------

    def last_fire(self, schedule: str, outcome: str | None = "fired") -> Row | None:
        clause, params = ("AND outcome = %s", [schedule, outcome]) if outcome else ("", [schedule])
        rows = self.db.query(
            f"SELECT * FROM schedule_fires_view WHERE schedule = %s {clause} ORDER BY fire_time DESC LIMIT 1",
            params)
        if not rows:
            return None
        row = rows[0]
        return {"fire_time": row["fire_time"], "outcome": row["outcome"], "expression": row["expression"],
                "tasks": json.loads(row["tasks"]), "recorded_at": row["recorded_at"]}

    def fires(self, schedule: str, limit: int = 20) -> list[Row]:
        rows = self.db.query("SELECT * FROM schedule_fires_view WHERE schedule = %s ORDER BY fire_time DESC LIMIT %s",
                             (schedule, limit))
        return [{"fire_time": r["fire_time"], "outcome": r["outcome"], "tasks": json.loads(r["tasks"])}
                for r in rows]


def _cpi_log_entry(where: Row, call: Row, attempt: int | None, snapshot_cid: str | None,
                   error: object) -> Row:
    return {**where, "method": call.get("method"), "request_id": call.get("request_id"),
            "duration_s": call.get("duration_s"), "attempt": attempt, "snapshot_cid": snapshot_cid,
            "error": error, "answer": call.get("answer"), "log": call.get("log", ""), "stderr": call.get("stderr", ""),
            **({"stdout": call["stdout"]} if call.get("stdout") else {})}


def _audit_row(r: Row) -> Row:
    data = json.loads(r["data"])
    instance = f"{r['job']}/{r['idx'] if r['idx'] is not None else r['instance_id']}" if r["job"] else None
    return {"position": r["position"], "type": r["type"], "time": r["time"], "actor": r["actor"],
            "task_id": r["task_id"], "task_number": r["task_number"], "aggregate_id": r["aggregate_id"],
            "version": r["version"], "event_id": f"{r['aggregate_id']}/{r['version']}",
            "caused_by": data.get("caused_by"), "deployment": r["deployment"], "instance": instance,
            "disk_cid": r["disk_cid"], "snapshot_cid": r["snapshot_cid"], "data": data}
