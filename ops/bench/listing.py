"""4. Listing one deployment's snapshots when the view holds N snapshots across D deployments.

The listing table is BULK-LOADED directly (COPY on PostgreSQL, executemany on
SQLite): producing a million snapshots through commands, workers and the
projector would take most of an hour and is not what this measures. The rows
are what the projector writes for taken snapshots. Measured: the API's query
code (`Queries.snapshots`, the read path of GET /deployments/{d}/snapshots
minus HTTP) for the whole deployment and for a page of 100; baseline: the
same SELECT through the bare psycopg / sqlite3 driver, tuple rows. Twice: with
the rows laid out as scheduled fires write them (the target applies there) and
interleaved across deployments (the worst case for locality; `rows_for`).
"""

from __future__ import annotations

import random
import sqlite3
import time
from typing import Any

from common import Context, percentile, pg_connect, row, sqlite_path

TARGET_P99_MS = 5.0
DISKS_PER_DEPLOYMENT = 10
LAYOUTS = ("fires", "interleaved")
COLUMNS = ("snapshot_id", "deployment", "job", "idx", "instance_id", "disk_cid", "snapshot_cid", "state", "clean",
           "trigger", "task_id", "requested_at", "created_at", "listed_seq")


def rows_for(snapshots: int, deployments: int, layout: str = "fires") -> Any:
    """The view's rows in the order the projector would have written them.

    "fires": what `snapshot_schedule` produces, the common case: each fire
    snapshots every deployment, one deployment's disks after another, so a
    deployment's rows lie in runs of DISKS_PER_DEPLOYMENT. "interleaved": the
    worst case for locality, every consecutive row another deployment's (as if
    every deployment snapshotted one disk in turn), so each of a deployment's
    rows sits on a page of its own."""
    per = max(1, snapshots // deployments)
    for n in range(snapshots):
        if layout == "fires":
            _, rest = divmod(n, deployments * DISKS_PER_DEPLOYMENT)
            d, disk = divmod(rest, DISKS_PER_DEPLOYMENT)
        else:
            d, disk = n % deployments, (n // deployments) % DISKS_PER_DEPLOYMENT
        yield (f"00000000-0000-4000-8000-{n:012d}", f"dep-{d:04d}", "db", disk,
               f"inst-{d}-{disk}", f"disk-{d}-{disk}", f"snap-{n}", "taken",
               False, "scheduled", f"task-{n // per}", "2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z", n + 1)


def load(url: str, backend: str, snapshots: int, deployments: int, layout: str) -> None:
    from snapledger.adapters.store import ensure_schema, open_database, parse_store_url
    from snapledger.projections.projector import Projector

    if backend == "postgres":
        ensure_schema(parse_store_url(url))
    db = open_database(parse_store_url(url))
    Projector(db).setup()
    with db.transaction() as cur:
        cur.execute("DELETE FROM snapshots_view")
    db.close()
    if backend == "postgres":
        with pg_connect(url, autocommit=False) as conn:
            with conn.cursor() as cur, cur.copy(f"COPY snapshots_view ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                for r in rows_for(snapshots, deployments, layout):
                    copy.write_row(r)
            conn.commit()
        with pg_connect(url) as conn:
            conn.execute("ANALYZE snapshots_view")
    else:
        conn = sqlite3.connect(sqlite_path(url))
        conn.executemany(f"INSERT INTO snapshots_view ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                         rows_for(snapshots, deployments, layout))
        conn.commit()
        conn.execute("ANALYZE")
        conn.close()


def timed(fn: Any, names: list[str], queries: int) -> list[float]:
    for name in names[:5]:
        fn(name)  # warm connections and caches
    out = []
    for _ in range(queries):
        name = random.choice(names)
        started = time.perf_counter()
        fn(name)
        out.append((time.perf_counter() - started) * 1000)
    return out


def raw_sql() -> str:
    # The same statement the ledger sends (columns, filter, order): the
    # baseline differs only in running it through the bare driver, tuple rows.
    from snapledger.projections.queries import LISTED_CLAUSE, LISTING_COLUMNS

    return f"SELECT {LISTING_COLUMNS} FROM snapshots_view WHERE deployment = %s AND {LISTED_CLAUSE} ORDER BY listed_seq"


def run(ctx: Context) -> list[dict[str, Any]]:
    from snapledger.adapters.store import open_database, parse_store_url
    from snapledger.projections.queries import Queries

    snapshots, deployments = ctx.sizes["listing_snapshots"], ctx.sizes["listing_deployments"]
    names = [f"dep-{d:04d}" for d in range(deployments)]
    out = []
    RAW_SQL = raw_sql()
    for backend in ctx.backends():
        for layout in LAYOUTS:
            url = ctx.url_for(backend, "listing")
            ctx.log(f"listing: {backend}: bulk-loading {snapshots} snapshots ({layout})")
            load(url, backend, snapshots, deployments, layout)
            db = open_database(parse_store_url(url))
            queries = Queries(db)
            n = ctx.sizes["listing_queries"]
            full = timed(lambda name, queries=queries: queries.snapshots(name), names, n)
            page = timed(lambda name, queries=queries: queries.snapshots(name, limit=100), names, n)
            db.close()
            if backend == "postgres":
                conn = pg_connect(url)
                raw_full = timed(lambda name, conn=conn: conn.execute(RAW_SQL, (name,)).fetchall(), names, n)
                raw_page = timed(lambda name, conn=conn: conn.execute(RAW_SQL + " LIMIT 100", (name,)).fetchall(),
                                 names, n)
                conn.close()
            else:
                conn = sqlite3.connect(sqlite_path(url))
                sql = RAW_SQL.replace("%s", "?")
                raw_full = timed(lambda name, conn=conn, sql=sql: conn.execute(sql, (name,)).fetchall(), names, n)
                raw_page = timed(lambda name, conn=conn, sql=sql: conn.execute(sql + " LIMIT 100", (name,)).fetchall(),
                                 names, n)
                conn.close()
            per = snapshots // deployments
            # The target applies to the layout schedules produce; the worst case is shown beside it.
            targeted = layout == "fires"
            for label, ledger, raw, whole in ((f"{layout}: one deployment ({per} rows)", full, raw_full, True),
                                              (f"{layout}: page of 100", page, raw_page, False)):
                p99 = percentile(ledger, 99)
                out.append(row("listing", backend, f"{label} p50", percentile(ledger, 50), percentile(raw, 50), "ms"))
                out.append(row("listing", backend, f"{label} p99", p99, percentile(raw, 99), "ms",
                               target=f"< {TARGET_P99_MS:g} ms" if whole and targeted else "",
                               met=(p99 is not None and p99 < TARGET_P99_MS) if whole and targeted else None,
                               snapshots=snapshots, deployments=deployments, layout=layout))
    return out
