"""The physical bound of the database under the ledger: pgbench's commit rate.

docs/scaling.md sets what one PostgreSQL carries (events/s, commands/s,
snapshots/s from the other benchmarks of the same run) against what the
same database commits at all: `pgbench` with a script of one small INSERT
per transaction (an event append's shape: one row of a few hundred bytes,
one commit) at 1 and at 16 clients, in this run's database.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from common import Context, pg_connect, row

PGBENCH_CANDIDATES = ("/usr/lib/postgresql/15/bin/pgbench", "pgbench")
SCRIPT = "INSERT INTO capacity_commits (payload) VALUES (repeat('x', 300));\n"


def pgbench_path() -> str | None:
    for candidate in PGBENCH_CANDIDATES:
        found = shutil.which(candidate) if "/" not in candidate else (candidate if Path(candidate).exists() else None)
        if found:
            return found
    return None


def run(ctx: Context) -> list[dict[str, Any]]:
    pgbench = pgbench_path()
    if pgbench is None:
        ctx.log("capacity: pgbench not found; skipped")
        return [row("capacity", "postgres", "pgbench commits/s", None, None, "/s", target="(pgbench not found)")]
    with pg_connect(ctx.pg_database) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS capacity_commits (id bigserial PRIMARY KEY, payload text)")
    script = ctx.workdir / "capacity.sql"
    script.write_text(SCRIPT)
    seconds = ctx.sizes["capacity_seconds"]
    out = []
    for clients in ctx.sizes["capacity_clients"]:
        ctx.log(f"capacity: pgbench, {clients} client(s), {seconds:g} s")
        done = subprocess.run([pgbench, "-n", "-f", str(script), "-c", str(clients), "-j", str(min(clients, 2)),
                               "-T", str(int(seconds)), ctx.pg_database.split("?")[0]],
                              capture_output=True, text=True, timeout=seconds + 60)
        match = re.search(r"tps = ([\d.]+)", done.stdout)
        tps = float(match.group(1)) if match else None
        if tps is None:
            ctx.log(f"capacity: pgbench failed: {done.stderr[-1000:]}")
        out.append(row("capacity", "postgres", f"pgbench commits/s, {clients} client(s) (1 INSERT each)", tps,
                       None, "/s"))
    return out
