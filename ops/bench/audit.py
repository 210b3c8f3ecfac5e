#!/usr/bin/env python3
"""Audit benchmark: `--at` listing queries and a full replay, on a generated log.

    .venv/bin/python ops/bench/audit.py --events 1000000

Generates snapshot lives on PostgreSQL (Requested, CpiCallStarted, Taken and,
for a third of them, DeletionRequested, CpiCallStarted, Deleted), many
aggregates per save. Then:
- replay: every view rebuilt from position 0 (`projections.replay.rebuild`),
  against a raw baseline in the same run: SELECT of the events in batches and
  INSERT of one row per event into a table of the same width, batch by batch;
- `--at`: the listing of one deployment at a random moment of the log's life,
  p50/p99 over many queries, against the same query's plain listing.
Prints a table; `main()` returns the figures (ops/bench/run.py includes it).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def generate(ledger: Any, events: int, deployments: int, progress: Any) -> list[datetime]:
    from snapledger.domain.snapshot import Snapshot

    moments, made, per_save = [], 0, 100
    while made < events:
        batch = []
        for _ in range(per_save):
            dep = f"dep-{random.randrange(deployments)}"
            snap = Snapshot(id=uuid.uuid4(), task_id=str(uuid.uuid4()), deployment=dep, job="db", index=0,
                            instance_id="i-0", disk_cid=f"{dep}-disk", trigger="scheduled", clean=False,
                            metadata={}, cpi="local", actor="bench")
            snap.start_cpi_call(worker="bench", actor="bench")
            snap.record_taken(f"snap-{snap.id}", call={"method": "snapshot_disk", "duration_s": 0.01},
                              actor="bench")
            made += 3
            batch.append(snap)
        ledger.save(*batch)
        # Deletions of a third of them, in later transactions (so time passes between).
        for snap in batch[: per_save // 3]:
            snap.request_deletion(task_id=str(uuid.uuid4()), actor="bench")
            snap.start_cpi_call(worker="bench", actor="bench")
            snap.record_deleted(reason="bench", call={"method": "delete_snapshot"}, actor="bench")
            made += 3
        ledger.save(*batch[: per_save // 3])
        moments.append(datetime.now(timezone.utc))
        if len(moments) % 100 == 0:
            progress(f"  generated {made}/{events} events")
    return moments


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--deployments", type=int, default=100)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args(argv)

    from snapledger.adapters.store import ensure_schema, ledger_env, open_database, parse_store_url
    from snapledger.domain.application import Ledger
    from snapledger.projections import replay
    from snapledger.projections.events import iso
    from snapledger.projections.queries import Queries

    schema = f"bench_audit_{uuid.uuid4().hex[:8]}"
    url = parse_store_url(f"{args.pg}?schema={schema}")
    ensure_schema(url)
    ledger = Ledger(env=ledger_env(url))
    figures: dict[str, Any] = {"events": args.events}
    try:
        started = time.perf_counter()
        moments = generate(ledger, args.events, args.deployments, lambda line: print(line, file=sys.stderr))
        head = ledger.recorder.max_notification_id() or 0
        figures["generate_events_per_s"] = round(head / (time.perf_counter() - started))

        db = open_database(url)
        started = time.perf_counter()
        rebuilt = replay.rebuild(ledger, db)
        seconds = time.perf_counter() - started
        figures["replay_events_per_s"] = round(rebuilt.events / seconds)

        # Raw baseline: read the same events, write one row per event, in the same batch size.
        with psycopg.connect(url.conninfo(), autocommit=False) as conn:
            conn.execute("CREATE TABLE raw_copy (position BIGINT PRIMARY KEY, topic TEXT, state BYTEA, "
                         "a TEXT, b TEXT, c TEXT, d TEXT, e TEXT, f TEXT, g TEXT, h TEXT, i TEXT)")
            conn.commit()
            started, position, copied = time.perf_counter(), 0, 0
            while True:
                rows = conn.execute("SELECT notification_id, topic, state FROM ledger_events "
                                    "WHERE notification_id > %s ORDER BY notification_id LIMIT %s",
                                    (position, replay.BATCH)).fetchall()
                if not rows:
                    break
                with conn.cursor() as cur:
                    cur.executemany("INSERT INTO raw_copy VALUES (%s, %s, %s, 'a', 'b', 'c', 'd', 'e', 'f', "
                                    "'g', 'h', 'i')", rows)
                conn.commit()
                position, copied = rows[-1][0], copied + len(rows)
            figures["raw_copy_events_per_s"] = round(copied / (time.perf_counter() - started))
        figures["replay_vs_raw"] = round(figures["replay_events_per_s"] / figures["raw_copy_events_per_s"], 2)

        queries = Queries(db)
        at_times, plain_times, sizes = [], [], []
        for _ in range(args.queries):
            dep = f"dep-{random.randrange(args.deployments)}"
            moment = iso(random.choice(moments))
            t0 = time.perf_counter()
            rows = queries.snapshots(dep, at=moment)
            at_times.append(time.perf_counter() - t0)
            sizes.append(len(rows))
            t0 = time.perf_counter()
            queries.snapshots(dep)
            plain_times.append(time.perf_counter() - t0)
        figures.update(
            at_p50_ms=round(_percentile(at_times, 0.5) * 1000, 2), at_p99_ms=round(_percentile(at_times, 0.99) * 1000, 2),
            listing_p50_ms=round(_percentile(plain_times, 0.5) * 1000, 2),
            listing_p99_ms=round(_percentile(plain_times, 0.99) * 1000, 2),
            at_rows_median=int(statistics.median(sizes)),
        )
        db.close()
    finally:
        ledger.close()
        with psycopg.connect(args.pg, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    width = max(len(k) for k in figures)
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")
    return figures


if __name__ == "__main__":
    main()
