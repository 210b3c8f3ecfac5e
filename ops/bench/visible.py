"""2. Event -> visible: from a command's 202 until its row is in the listing view.

Open-loop load at a steady rate (default 500 commands/s). PostgreSQL: the API
and the projector are separate processes (the scale-out layout); a trigger on
the listing table NOTIFYs the benchmark, and PostgreSQL delivers a NOTIFY
only when the projector's transaction commits, so the time it arrives is when
the row became visible. SQLite: API and projector in one process (the embedded
layout), the benchmark polls the listing table every 2 ms (2 ms resolution).
No worker runs: the row appears when the request is projected.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from typing import Any

from common import Context, loadgen, percentile, pg_connect, row, server, sqlite_path, wait_until
from acceptance import PATH, put_deployment

TARGET_P99_MS = 50.0

TRIGGER = """
CREATE OR REPLACE FUNCTION bench_visible() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_notify('bench_visible', NEW.task_id); RETURN NEW; END $$;
CREATE TRIGGER bench_visible AFTER INSERT ON snapshots_view FOR EACH ROW EXECUTE FUNCTION bench_visible();
"""


class Watcher:
    """Records when each task's row became visible (wall clock, like the load generator's acks)."""

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.conn: Any = None

    def start(self, target: Any) -> None:
        self.thread = threading.Thread(target=target, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=5)
        if self.conn is not None:
            self.conn.close()


def watch_postgres(url: str, watcher: Watcher) -> None:
    conn = pg_connect(url)
    function, trigger = TRIGGER.split("CREATE TRIGGER")
    conn.execute(function)
    conn.execute("CREATE TRIGGER" + trigger)
    conn.execute("LISTEN bench_visible")
    watcher.conn = conn  # closed by Watcher.close

    def loop() -> None:
        while not watcher.stop.is_set():
            for note in conn.notifies(timeout=0.2):
                watcher.seen.setdefault(note.payload, time.time())

    watcher.start(loop)


def watch_sqlite(path: str, watcher: Watcher) -> None:
    def loop() -> None:
        conn = sqlite3.connect(path, timeout=10)
        last = 0
        while not watcher.stop.is_set():
            try:
                rows = conn.execute("SELECT rowid, task_id FROM snapshots_view WHERE rowid > ? ORDER BY rowid",
                                    (last,)).fetchall()
            except sqlite3.OperationalError:
                rows = []
            now = time.time()
            for rowid, task_id in rows:
                watcher.seen.setdefault(task_id, now)
                last = rowid
            time.sleep(0.002)
        conn.close()

    watcher.start(loop)


def measure(ctx: Context, backend: str) -> dict[str, Any]:
    url = ctx.url_for(backend, "visible")
    procs = []
    watcher = Watcher()
    try:
        if backend == "postgres":
            api, port = server(ctx, "visible-api", url, "api")
            procs.append(api)
            put_deployment(port)
            watch_postgres(url, watcher)
            projector, _ = server(ctx, "visible-projector", url, "projector")
            procs.append(projector)
        else:
            api, port = server(ctx, "visible-serve", url, "api,projector")
            procs.append(api)
            put_deployment(port)
            watch_sqlite(str(sqlite_path(url)), watcher)
        # Let the projector catch up with the set-up before measuring.
        time.sleep(0.2 if ctx.small else 1.0)
        result = loadgen(ctx, port, PATH, concurrency=64, rate=ctx.sizes["visible_rate"],
                         duration=ctx.sizes["visible_seconds"], warmup=ctx.sizes["warmup_seconds"], record=True)
        acks = result.pop("acks")
        wait_until(lambda: all(task_id in watcher.seen for _, task_id in acks), timeout=30)
        lags = [(watcher.seen[task_id] - acked) * 1000 for acked, task_id in acks if task_id in watcher.seen]
        missing = sum(1 for _, task_id in acks if task_id not in watcher.seen)
        return {"load": result, "lags_ms": lags, "missing": missing,
                "rss": {p.name: p.peak_rss_mb() for p in procs}}
    finally:
        watcher.close()
        for proc in procs:
            proc.stop()


def run(ctx: Context) -> list[dict[str, Any]]:
    rows = []
    for backend in ctx.backends():
        ctx.log(f"visible: {backend}")
        figures = measure(ctx, backend)
        lags, load = figures["lags_ms"], figures["load"]
        p99 = percentile(lags, 99)
        achieved = load["throughput"]
        steady = achieved >= 0.95 * ctx.sizes["visible_rate"] and load["errors"] == 0
        rows.append(row("visible", backend, "202 -> listed p50", percentile(lags, 50), None, "ms"))
        rows.append(row("visible", backend, "202 -> listed p99", p99, None, "ms", target=f"< {TARGET_P99_MS:g} ms",
                        met=p99 is not None and p99 < TARGET_P99_MS and steady and figures["missing"] == 0,
                        achieved_rate=achieved, rate=ctx.sizes["visible_rate"], missing=figures["missing"],
                        commands=len(lags)))
        rows.append(row("visible", backend, f"achieved command rate (asked {ctx.sizes['visible_rate']:g}/s)",
                        achieved, None, "req/s", accept_p99_ms=load["p99_ms"]))
    return rows
