"""3. Projection rebuild: replay N events into every view from position 0.

Ledger: the projector process's own code path (LogFollower batches of 1,000,
Projector.apply: one transaction per batch for all views, tracking included),
after `Projector.reset()`, once with the views the baseline mirrors (listing
and tasks: the like-for-like figure the target applies to) and once with
every view. Baseline: raw SELECT of the same events in batches
of 1,000, JSON-decode, and one write per event into tables shaped like the
views (INSERT for creations, UPDATE for changes, a row per task event), sent
with executemany, one commit per batch. Each side runs in a child process so
its peak RSS is its own.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

from common import PYTHON, ROOT, Context, row

TARGET_RATIO = 0.5
BATCH = 1000
# The views whose rows the raw baseline writes (raw_snapshots, raw_tasks,
# raw_task_events): the like-for-like comparison. A full rebuild also writes
# the audit view (a row per event with its JSON and seven indexes), in-flight
# operations, deployments, job updates and restores: reported next to it.
BASELINE_VIEWS = ("snapshots", "tasks")


def run(ctx: Context) -> list[dict[str, Any]]:
    rows = []
    for backend in ctx.backends():
        events = ctx.sizes["rebuild_events"] if backend == "postgres" else ctx.sizes["rebuild_events_sqlite"]
        url = ctx.url_for(backend, "rebuild")
        ctx.log(f"rebuild: {backend}: writing {events} events")
        written = child(["fill", url, str(events)])["events"]
        ctx.log(f"rebuild: {backend}: ledger projector, the baseline's views")
        ledger = child(["ledger", url, ",".join(BASELINE_VIEWS)])
        ctx.log(f"rebuild: {backend}: ledger projector, every view")
        every = child(["ledger", url])
        ctx.log(f"rebuild: {backend}: raw baseline")
        raw = child(["raw", url])
        ratio = ledger["rate"] / raw["rate"] if raw["rate"] else None
        rows.append(row("rebuild", backend, f"replay {written} events: listing + task views", ledger["rate"],
                        raw["rate"], "ev/s", target=f">= {TARGET_RATIO}x raw",
                        met=ratio is not None and ratio >= TARGET_RATIO,
                        ledger_seconds=ledger["seconds"], raw_seconds=raw["seconds"]))
        rows.append(row("rebuild", backend, f"replay {written} events: every view (audit, in-flight, ...)",
                        every["rate"], raw["rate"], "ev/s", ledger_seconds=every["seconds"]))
        rows.append(row("rebuild", backend, "projector peak RSS (every view)", every["rss_mb"], raw["rss_mb"], "MB",
                        target="< 200 MB" if backend == "postgres" else "",
                        met=every["rss_mb"] < 200 if backend == "postgres" else None))
    return rows


def child(args: list[str]) -> dict[str, Any]:
    done = subprocess.run([PYTHON, __file__, *args], capture_output=True, text=True, cwd=ROOT, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"rebuild {args[0]} failed: {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# Child processes ---------------------------------------------------------------------

def _ledger(url: str) -> Any:
    from snapledger.adapters.store import ledger_env, parse_store_url
    from snapledger.domain.application import Ledger

    return Ledger(env=ledger_env(parse_store_url(url)))


def do_fill(url: str, events: int) -> dict[str, Any]:
    import dataset

    ledger = _ledger(url)
    written = dataset.fill(ledger, events)
    ledger.close()
    return {"events": written}


def do_ledger(url: str, names: str = "") -> dict[str, Any]:
    import structlog

    from snapledger.adapters.follower import ChangeSignal, LogFollower
    from snapledger.adapters.store import open_database, parse_store_url
    from snapledger.projections.projector import Projector
    from snapledger.projections.views import all_views
    from common import rss_mb

    ledger = _ledger(url)
    db = open_database(parse_store_url(url))
    chosen = set(names.split(",")) if names else None
    projector = Projector(db, [v for v in all_views() if chosen is None or v.name in chosen])
    projector.setup()
    projector.reset()
    follower = LogFollower("projector", ledger, ChangeSignal(), projector.apply, projector.position,
                           structlog.get_logger(), batch_size=BATCH)
    events = 0
    started = time.perf_counter()
    while True:
        count = follower.step()
        if count == 0:
            break
        events += count
    seconds = time.perf_counter() - started
    db.close()
    ledger.close()
    return {"events": events, "seconds": round(seconds, 2), "rate": events / seconds, "rss_mb": rss_mb()}


RAW_DDL = [
    """CREATE TABLE raw_snapshots (snapshot_id TEXT PRIMARY KEY, deployment TEXT, job TEXT, idx INTEGER,
       instance_id TEXT, disk_cid TEXT, snapshot_cid TEXT, state TEXT, clean BOOLEAN, trigger TEXT, task_id TEXT,
       requested_at TEXT, created_at TEXT, listed_seq BIGINT)""",
    "CREATE INDEX raw_snapshots_listing ON raw_snapshots (deployment, listed_seq)",
    """CREATE TABLE raw_tasks (task_id TEXT PRIMARY KEY, kind TEXT, description TEXT, state TEXT, deployment TEXT,
       actor TEXT, operations INTEGER, finished_operations INTEGER, queued_at TEXT, seq BIGINT)""",
    """CREATE TABLE raw_task_events (task_id TEXT, position BIGINT, type TEXT, time TEXT, data TEXT,
       PRIMARY KEY (task_id, position))""",
]
INSERT_SNAPSHOT = ("INSERT INTO raw_snapshots (snapshot_id, deployment, job, idx, instance_id, disk_cid, state, "
                   "clean, trigger, task_id, requested_at) "
                   "VALUES (%s, %s, %s, %s, %s, %s, 'requested', %s, %s, %s, %s)")
UPDATE_SNAPSHOT = "UPDATE raw_snapshots SET state = %s WHERE snapshot_id = %s"
TAKEN_SNAPSHOT = ("UPDATE raw_snapshots SET state = 'taken', snapshot_cid = %s, created_at = %s, listed_seq = %s "
                  "WHERE snapshot_id = %s")
INSERT_TASK = ("INSERT INTO raw_tasks (task_id, kind, description, state, deployment, actor, operations, "
               "finished_operations, queued_at, seq) VALUES (%s, %s, %s, 'queued', %s, %s, %s, 0, %s, %s)")
UPDATE_TASK = "UPDATE raw_tasks SET state = %s WHERE task_id = %s"
FINISH_OP = "UPDATE raw_tasks SET finished_operations = finished_operations + 1 WHERE task_id = %s"
TASK_EVENT = "INSERT INTO raw_task_events (task_id, position, type, time, data) VALUES (%s, %s, %s, %s, %s)"


def raw_writes(position: int, originator_id: str, topic: str, state: dict[str, Any]) -> list[tuple[str, tuple]]:
    kind = topic.rsplit(":", 1)[-1]
    when = state.get("timestamp", {})
    when = when.get("_data_", "") if isinstance(when, dict) else str(when)
    writes: list[tuple[str, tuple]] = []
    if kind == "Snapshot.Requested":
        writes.append((INSERT_SNAPSHOT, (originator_id, state["deployment"], state["job"], state["index"],
                                         state["instance_id"], state["disk_cid"], bool(state["clean"]),
                                         state["trigger"], state["task_id"], when)))
    elif kind == "Snapshot.CpiCallStarted":
        writes.append((UPDATE_SNAPSHOT, ("taking", originator_id)))
    elif kind == "Snapshot.Taken":
        writes.append((TAKEN_SNAPSHOT, (state["snapshot_cid"], when, position, originator_id)))
    elif kind == "Task.Queued":
        writes.append((INSERT_TASK, (originator_id, state["kind"], state["description"], state["deployment"],
                                     state["actor"], len(state["operations"]), when, position)))
    elif kind == "Task.Started":
        writes.append((UPDATE_TASK, ("processing", originator_id)))
    elif kind == "Task.OperationFinished":
        writes.append((FINISH_OP, (originator_id,)))
    elif kind == "Task.Finished":
        writes.append((UPDATE_TASK, (state["state"], originator_id)))
    task_id = originator_id if kind.startswith("Task.") else state.get("task_id")
    if task_id and kind.startswith(("Task.", "Snapshot.")):
        writes.append((TASK_EVENT, (task_id, position, kind, when, json.dumps(state))))
    return writes


def do_raw(url: str) -> dict[str, Any]:
    from snapledger.adapters.store import open_database, parse_store_url
    from common import events_table, rss_mb

    parsed = parse_store_url(url)
    db = open_database(parsed)
    table = events_table(parsed.kind)
    position_column = "notification_id" if parsed.kind == "postgres" else "rowid"
    with db.transaction() as cur:
        for statement in RAW_DDL:
            cur.execute(statement)
    events = 0
    position = 0
    started = time.perf_counter()
    while True:
        with db.transaction() as cur:
            rows = cur.execute(
                f"SELECT {position_column} AS position, originator_id, topic, state FROM {table} "
                f"WHERE {position_column} > %s ORDER BY {position_column} LIMIT %s", (position, BATCH)).fetchall()
            if not rows:
                break
            # One executemany per statement, in order of first use: creations
            # come before the updates of the same row in this event mix, and
            # updates of one kind keep their order.
            grouped: dict[str, list[tuple]] = {}
            for r in rows:
                state = json.loads(bytes(r["state"]))
                for statement, params in raw_writes(r["position"], str(r["originator_id"]), r["topic"], state):
                    grouped.setdefault(statement, []).append(params)
            for statement, params in grouped.items():
                cur.executemany(statement, params)
            position = rows[-1]["position"]
            events += len(rows)
    seconds = time.perf_counter() - started
    db.close()
    return {"events": events, "seconds": round(seconds, 2), "rate": events / seconds, "rss_mb": rss_mb()}


if __name__ == "__main__":
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
    mode, url, *rest = sys.argv[1:]
    result = {"fill": lambda: do_fill(url, int(rest[0])), "ledger": lambda: do_ledger(url, *rest),
              "raw": lambda: do_raw(url)}[mode]()
    print(json.dumps(result))
