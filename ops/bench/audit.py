"""Audit benchmark: the listing at a moment (`?at=`) and a full replay, on a
generated log of N events (default 1,000,000) on PostgreSQL.

    .venv/bin/python ops/bench/audit.py                 # 1,000,000 events (several minutes)
    .venv/bin/python ops/bench/audit.py --events 50000  # a quick run

The log is written through the domain (`Ledger._plan_snapshots`, the
aggregates' commands, many aggregates per `save()`), so it holds the events a
real ledger holds: tasks, snapshot requests, CPI calls with their `call`
records, CIDs, deletions. A simulated clock spreads it over weeks (one
deployment snapshot every few minutes, each snapshot deleted some rounds
later), so `at` queries hit a realistic mix of live and deleted snapshots.

Measured in one run, each against a raw baseline on the same machine:
- full replay of every view from position 0 (what `replay --verify` and a
  rebuild do), events/s; baseline: a raw SELECT of the events plus an INSERT
  of one equivalent row per event, in batches;
- `GET /deployments/{d}/snapshots?at=T` query time (p50/p99) at random
  moments, checked for exactness against the generator's own record;
- `history CID` (the audit events of one snapshot) query time.

`main()` prints a table and returns the figures (`ops/bench/run.py` calls it).
A database of the run's own is created on the server and dropped after
(`--keep` keeps it).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
import uuid
from datetime import datetime, timedelta, UTC
from typing import Any

import psycopg
from psycopg import sql

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
START = datetime(2026, 1, 5, tzinfo=UTC)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int,
                        default=int(os.environ.get("SNAPLEDGER_BENCH_AUDIT_EVENTS", 1_000_000)),
                        help="size of the generated log (default 1,000,000)")
    parser.add_argument("--deployments", type=int, default=20)
    parser.add_argument("--disks", type=int, default=10, help="disks per deployment")
    parser.add_argument("--keep", type=int, default=30,
                        help="rounds of a deployment a snapshot lives before it is deleted")
    parser.add_argument("--queries", type=int, default=300, help="`at` queries to time")
    parser.add_argument("--pg", default=os.environ.get("SNAPLEDGER_BENCH_PG", DEFAULT_PG),
                        help="PostgreSQL server DSN where the run may create and drop a database")
    parser.add_argument("--keep-db", action="store_true", help="do not drop the database at the end")
    # run.py calls main() with its own argv: ignore what is not ours.
    args, _ = parser.parse_known_args(argv)
    return args


# Simulated time ----------------------------------------------------------------

class SimClock:
    """Event timestamps from a simulated clock: the library stamps events with
    `eventsourcing.domain.datetime_now_with_tzinfo()`, replaced while generating."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def tick(self) -> datetime:
        self.now += timedelta(milliseconds=1)  # strictly increasing within a round
        return self.now


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# Generation ----------------------------------------------------------------------

def generate(ledger: Any, events: int, deployments: int, disks: int, keep: int,
             step: timedelta = timedelta(minutes=5), batch_events: int = 5000) -> dict[str, Any]:
    """Write about `events` events; returns the ground truth of every snapshot's life."""
    import eventsourcing.domain as es_domain

    from snapledger.domain.task import Task

    clock = SimClock(START)
    original = es_domain.datetime_now_with_tzinfo
    es_domain.datetime_now_with_tzinfo = clock.tick
    lives: dict[str, dict[str, Any]] = {}  # cid -> deployment, taken, deleted
    alive: dict[str, list[list[Any]]] = {}  # deployment -> rounds of live Snapshot aggregates
    written = 0
    pending: list[Any] = []
    pending_events = 0
    started = time.perf_counter()

    def flush() -> None:
        nonlocal pending, pending_events, written
        if pending:
            unique = list({id(a): a for a in pending}.values())
            ledger.store.save(*unique)
            written += pending_events
            pending, pending_events = [], 0

    def add(*aggregates: Any) -> None:
        nonlocal pending_events
        for aggregate in aggregates:
            pending_events += len(aggregate.pending_events)
        pending.extend(aggregates)
        if pending_events >= batch_events:
            flush()

    try:
        names = [f"dep-{i:03d}" for i in range(deployments)]
        deps = {}
        for name in names:
            instances = [{"job": "db", "index": k, "disks": [f"{name}-disk-{k}"]} for k in range(disks)]
            deps[name] = ledger.deployments.record(name, {"team": "bench"}, instances, actor="bench")
            alive[name] = []
        written += 2 * len(names) + len(names) + 1  # registered + inventory, registry
        round_no = 0
        while written + pending_events < events:
            clock.now = START + step * round_no
            name = names[round_no % len(names)]
            dep = deps[name]
            actor = random.choice(("alice", "bob", "scheduler"))
            # A deployment snapshot, as the API plans it, then what the worker records.
            task, snapshots = ledger.snapshots.plan(dep, dep.instances, "snapshot_deployment",
                                                     "snapshot deployment", "manual", False, actor)
            task.start(worker="bench", actor=actor)
            cid_index = []
            for snap in snapshots:
                snap.start_cpi_call(worker="bench", actor=actor)
                cid = f"snap-{uuid.uuid4().hex[:16]}"
                call = {"method": "snapshot_disk", "cpi": "local", "duration_s": 0.042,
                        "request_id": f"cpi-{uuid.uuid4().hex[:8]}", "log": "", "stderr": ""}
                snap.record_taken(snapshot_cid=cid, call=call, actor=actor)
                taken_at = iso(snap.modified_on)  # the Taken event's time
                cid_index.append(ledger.snapshots.new_cid_index(cid, snap.id))
                task.operation_finished(snap.id, "taken", {"instance": snap.instance_label,
                                                           "disk_cid": snap.disk_cid, "snapshot_cid": cid,
                                                           "caused_by": snap.cause}, actor=actor)
                lives[cid] = {"deployment": name, "taken": taken_at, "deleted": None}
            add(task, *snapshots, *cid_index)
            alive[name].append(snapshots)
            # The deployment's snapshots of `keep` rounds ago go (retention-like).
            if len(alive[name]) > keep:
                old = alive[name].pop(0)
                clock.now += timedelta(seconds=30)
                deletion = Task(id=uuid.uuid4(), kind="delete_deployment_snapshots",
                                description="delete deployment snapshots", deployment=name,
                                operations=[str(s.id) for s in old], actor=actor,
                                context={"cids": [s.snapshot_cid for s in old]})
                for snap in old:
                    snap.request_deletion(task_id=str(deletion.id), actor=actor)
                deletion.start(worker="bench", actor=actor)
                for snap in old:
                    snap.start_cpi_call(worker="bench", actor=actor)
                    call = {"method": "delete_snapshot", "cpi": "local", "duration_s": 0.013,
                            "request_id": f"cpi-{uuid.uuid4().hex[:8]}", "log": "", "stderr": ""}
                    snap.record_deleted(reason="deleted by the CPI", call=call, actor=actor)
                    lives[snap.snapshot_cid]["deleted"] = iso(snap.modified_on)  # the Deleted event's time
                    deletion.operation_finished(snap.id, "deleted", {"instance": snap.instance_label,
                                                                     "disk_cid": snap.disk_cid,
                                                                     "snapshot_cid": snap.snapshot_cid,
                                                                     "caused_by": snap.cause}, actor=actor)
                add(deletion, *old)
            round_no += 1
        flush()
    finally:
        es_domain.datetime_now_with_tzinfo = original
    seconds = time.perf_counter() - started
    return {"lives": lives, "names": names, "rounds": round_no, "end": clock.now, "seconds": seconds}


# Measurements --------------------------------------------------------------------

def replay_all(ledger: Any, db: Any) -> tuple[int, float]:
    """Every view from position 0, as `replay --verify` builds its scratch copy."""
    from snapledger.projections.replay import rebuild

    started = time.perf_counter()
    result = rebuild(ledger.store, db)
    return result.events, time.perf_counter() - started


def read_decode(ledger: Any, batch: int = 5000) -> tuple[int, float]:
    """The library's share of a replay: select and decode every event."""
    started = time.perf_counter()
    position = count = 0
    while True:
        notifications = ledger.store.recorder.select_notifications(start=position, limit=batch,
                                                                   inclusive_of_start=False)
        if not notifications:
            break
        for n in notifications:
            ledger.store.mapper.to_domain_event(n)
        count += len(notifications)
        position = notifications[-1].id
    return count, time.perf_counter() - started


def raw_copy(conninfo: str, batch: int = 5000) -> tuple[int, float]:
    """Baseline: raw SELECT of the events and one equivalent row INSERTed per event, in batches."""
    with psycopg.connect(conninfo) as conn:
        conn.execute("DROP TABLE IF EXISTS raw_events_copy")
        conn.execute("CREATE TABLE raw_events_copy (position BIGINT PRIMARY KEY, originator_id TEXT NOT NULL, "
                     "version INTEGER NOT NULL, topic TEXT NOT NULL, state BYTEA NOT NULL)")
        conn.commit()
        started = time.perf_counter()
        position = count = 0
        while True:
            rows = conn.execute(
                "SELECT notification_id, originator_id, originator_version, topic, state FROM ledger_events "
                "WHERE notification_id > %s ORDER BY notification_id LIMIT %s", (position, batch)).fetchall()
            if not rows:
                break
            with conn.cursor() as cur:
                cur.execute("SET LOCAL synchronous_commit = off")  # as the projector does
                cur.executemany("INSERT INTO raw_events_copy VALUES (%s, %s, %s, %s, %s)",
                                [(r[0], str(r[1]), r[2], r[3], r[4]) for r in rows])
            conn.commit()
            count += len(rows)
            position = rows[-1][0]
        seconds = time.perf_counter() - started
        conn.execute("DROP TABLE raw_events_copy")
        conn.commit()
    return count, seconds


def expected_at(lives: dict[str, dict[str, Any]], deployment: str, at: str) -> set[str]:
    return {cid for cid, life in lives.items() if life["deployment"] == deployment and life["taken"] <= at
            and (life["deleted"] is None or life["deleted"] > at)}


def time_at_queries(queries: Any, generated: dict[str, Any], count: int) -> dict[str, Any]:
    lives, names = generated["lives"], generated["names"]
    span = (generated["end"] - START).total_seconds()
    rng = random.Random(7)
    latencies, plain, sizes, checked = [], [], [], 0
    moments = [START + timedelta(seconds=rng.uniform(0, span)) for _ in range(count)]
    moments[-1] = generated["end"]  # the most expensive moment: every snapshot ever taken is before it
    for i, moment in enumerate(moments):
        deployment, at = rng.choice(names), iso(moment)
        started = time.perf_counter()
        rows = queries.snapshots(deployment, at=at)
        latencies.append(time.perf_counter() - started)
        sizes.append(len(rows))
        started = time.perf_counter()  # baseline: the same deployment's listing now
        queries.snapshots(deployment)
        plain.append(time.perf_counter() - started)
        if i % 10 == 0 or i == len(moments) - 1:  # exact, not just fast
            got = {r["snapshot_cid"] for r in rows}
            want = expected_at(lives, deployment, at)
            if got != want:
                raise AssertionError(f"`at` {at} for {deployment}: {len(got)} rows, expected {len(want)}")
            checked += 1
    return {"latencies": latencies, "plain": plain, "rows_mean": statistics.mean(sizes), "checked": checked}


def time_history(queries: Any, lives: dict[str, Any], count: int) -> list[float]:
    rng = random.Random(11)
    cids = rng.sample(sorted(lives), min(count, len(lives)))
    latencies = []
    for cid in cids:
        started = time.perf_counter()
        rows = queries.events({"snapshot_cid": cid}, 0, 5000)
        latencies.append(time.perf_counter() - started)
        assert rows and rows[0]["type"] == "Snapshot.Requested", (cid, rows[:1])
    return latencies


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


def plan_of_at_query(db: Any, deployment: str, at: str) -> str:
    rows = db.query("EXPLAIN SELECT * FROM snapshots_view WHERE deployment = %s AND created_at IS NOT NULL "
                    "AND created_at <= %s AND (deleted_at IS NULL OR deleted_at > %s) ORDER BY listed_seq",
                    (deployment, at, at))
    return " / ".join(r["QUERY PLAN"].strip() for r in rows)


# Main ----------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    from snapledger.adapters.store import ledger_env, open_database, parse_store_url
    from snapledger.domain.application import Ledger
    from snapledger.projections.queries import Queries

    dbname = f"snapledger_bench_audit_{uuid.uuid4().hex[:8]}"
    info = psycopg.conninfo.conninfo_to_dict(args.pg)
    with psycopg.connect(args.pg, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    password = f":{info['password']}" if info.get("password") else ""
    url = parse_store_url(f"postgresql://{info.get('user', 'postgres')}{password}@{info.get('host', '127.0.0.1')}:"
                          f"{info.get('port', 5432)}/{dbname}")
    ledger = Ledger(env=ledger_env(url), default_cpi="local")
    db = open_database(url)
    try:
        print(f"generating {args.events:,} events in {dbname} ...", file=sys.stderr, flush=True)
        generated = generate(ledger, args.events, args.deployments, args.disks, args.keep)
        head = ledger.store.recorder.max_notification_id() or 0
        with psycopg.connect(url.conninfo()) as conn:
            stored = conn.execute("SELECT count(*) FROM ledger_events").fetchone()[0]
        print(f"  {stored:,} events in {generated['seconds']:.1f} s; replaying ...", file=sys.stderr, flush=True)
        replayed, replay_s = replay_all(ledger, db)
        with psycopg.connect(url.conninfo(), autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
        print("  reading back and raw baseline ...", file=sys.stderr, flush=True)
        decoded, decode_s = read_decode(ledger)
        raw, raw_s = raw_copy(url.conninfo())
        queries = Queries(db)
        at = time_at_queries(queries, generated, args.queries)
        history = time_history(queries, generated["lives"], min(args.queries, 200))
        plan = plan_of_at_query(db, generated["names"][0], iso(generated["end"]))
        snapshots = len(generated["lives"])
        per_deployment = snapshots / len(generated["names"])
    finally:
        db.close()
        ledger.close()
        if not args.keep_db:
            with psycopg.connect(args.pg, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))

    lat = at["latencies"]
    figures = {
        "events": stored, "head_position": head, "snapshots": snapshots,
        "snapshots_per_deployment": round(per_deployment), "deployments": len(generated["names"]),
        "simulated_days": round((generated["end"] - START).total_seconds() / 86400, 1),
        "write_events_per_s": round(stored / generated["seconds"]),
        "replay_events": replayed, "replay_s": round(replay_s, 1),
        "replay_events_per_s": round(replayed / replay_s),
        "read_decode_events_per_s": round(decoded / decode_s),
        "raw_select_insert_events_per_s": round(raw / raw_s),
        "replay_vs_raw": round((replayed / replay_s) / (raw / raw_s), 3),
        "at_queries": len(lat), "at_checked_exact": at["checked"], "at_rows_mean": round(at["rows_mean"], 1),
        "at_p50_ms": round(pct(lat, 50) * 1000, 2), "at_p99_ms": round(pct(lat, 99) * 1000, 2),
        "at_max_ms": round(max(lat) * 1000, 2),
        "listing_now_p50_ms": round(pct(at["plain"], 50) * 1000, 2),
        "listing_now_p99_ms": round(pct(at["plain"], 99) * 1000, 2), "at_latest_moment_ms": round(lat[-1] * 1000, 2),
        "history_p50_ms": round(pct(history, 50) * 1000, 2), "history_p99_ms": round(pct(history, 99) * 1000, 2),
        "at_plan": plan,
    }
    rows = [
        _row("replay", "full replay of every view", figures["replay_events_per_s"],
             figures["raw_select_insert_events_per_s"], "events/s"),
        _row("replay", "read + decode only (library)", figures["read_decode_events_per_s"], None, "events/s"),
        _row("write", "generate the log (batched saves)", figures["write_events_per_s"], None, "events/s"),
        _row("at", "listing ?at= p50", figures["at_p50_ms"], figures["listing_now_p50_ms"], "ms"),
        _row("at", "listing ?at= p99", figures["at_p99_ms"], figures["listing_now_p99_ms"], "ms"),
        _row("history", "history CID p50", figures["history_p50_ms"], None, "ms"),
        _row("history", "history CID p99", figures["history_p99_ms"], None, "ms"),
    ]
    figures["rows"] = rows
    print_table(figures)
    return figures


def _row(benchmark: str, metric: str, ledger: float, baseline: float | None, unit: str) -> dict[str, Any]:
    return {"benchmark": f"audit.{benchmark}", "backend": "postgres", "metric": metric, "unit": unit,
            "ledger": ledger, "baseline": baseline,
            "ratio": round(ledger / baseline, 3) if baseline else None, "target": "", "met": None}


def print_table(f: dict[str, Any]) -> None:
    print(f"\nAudit benchmark (PostgreSQL): {f['events']:,} events, {f['snapshots']:,} snapshots in "
          f"{f['deployments']} deployments (~{f['snapshots_per_deployment']:,} each) over {f['simulated_days']} "
          "simulated days\n")
    lines = [
        ("generate the log (many aggregates per save)", f"{f['write_events_per_s']:,} events/s", ""),
        ("full replay of every view from position 0", f"{f['replay_events_per_s']:,} events/s",
         f"{f['replay_s']} s"),
        ("  raw baseline: SELECT + INSERT a row per event", f"{f['raw_select_insert_events_per_s']:,} events/s",
         f"ratio {f['replay_vs_raw']}"),
        ("  library read + decode only", f"{f['read_decode_events_per_s']:,} events/s", ""),
        (f"listing ?at=T ({f['at_queries']} random T, {f['at_checked_exact']} checked exact)",
         f"p50 {f['at_p50_ms']} ms", f"p99 {f['at_p99_ms']} ms, max {f['at_max_ms']} ms"),
        ("  baseline: the same listing now (no at)", f"p50 {f['listing_now_p50_ms']} ms",
         f"p99 {f['listing_now_p99_ms']} ms"),
        ("  at the latest moment (longest range)", f"{f['at_latest_moment_ms']} ms",
         f"{f['at_rows_mean']} rows per answer on average"),
        ("history CID (audit events of one snapshot)", f"p50 {f['history_p50_ms']} ms",
         f"p99 {f['history_p99_ms']} ms"),
    ]
    width = max(len(a) for a, _, _ in lines)
    for a, b, c in lines:
        print(f"{a.ljust(width)}  {b:>22}  {c}")
    print(f"\n?at= plan: {f['at_plan']}")


if __name__ == "__main__":
    main(sys.argv[1:])
