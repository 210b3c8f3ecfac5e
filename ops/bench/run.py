"""Run every benchmark, print one table, write JSON: `make bench` (ARGS="--small").

Each benchmark is a module of this folder with `run(ctx) -> list[row]`; each
measures the ledger and a raw baseline in the same run, so ratios hold on any
machine even when absolute figures are noisy. A module `audit.py` with
`main() -> dict` (another feature's benchmark) is included when present.
PostgreSQL: a database of this run's own on the server (--pg), dropped after.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import datetime, UTC
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import ROOT, Context, pg_run_database  # noqa: E402

BENCHMARKS = ["acceptance", "visible", "rebuild", "listing", "fanout", "ratebound", "capacity", "cpi_spawn", "director"]
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"

DEFAULT_SIZES: dict[str, Any] = {
    "concurrency": [1, 8, 64], "acceptance_seconds": 6.0, "warmup_seconds": 1.0,
    "acceptance_processes": [1, 2, 4], "acceptance_processes_warmup": 3.0,
    "visible_rate": 500.0, "visible_seconds": 10.0,
    "rebuild_events": 150_000, "rebuild_events_sqlite": 50_000,
    "listing_snapshots": 1_000_000, "listing_deployments": 1_000, "listing_queries": 500,
    "fanout_instances": 10_000, "fanout_instances_sqlite": 2_000, "fanout_deployments": 100,
    "fanout_take_timeout": 90.0, "fanout_workers": [1, 2],
    "ratebound_disks": 2_000, "ratebound_deployments": 20, "ratebound_workers": [1, 2, 4],
    "ratebound_timeout": 120.0, "capacity_seconds": 10.0, "capacity_clients": [1, 16],
    "cpi_spawn_calls": 1_000, "cpi_spawn_concurrency": 16,
    "compare_group_commit": True,
    "audit_events": 200_000, "audit_queries": 200,
    "director_operations": 10_000, "director_queries": 200, "director_take_timeout": 600.0,
}
SMALL_SIZES: dict[str, Any] = {
    "concurrency": [8], "acceptance_seconds": 0.5, "warmup_seconds": 0.2,
    "acceptance_processes": [2],  # the smoke run: it works; the per-process figure needs 1 too
    "acceptance_processes_warmup": 0.2,
    "visible_rate": 50.0, "visible_seconds": 1.0,
    "rebuild_events": 1_000, "rebuild_events_sqlite": 1_000,
    "listing_snapshots": 2_000, "listing_deployments": 20, "listing_queries": 20,
    "fanout_instances": 40, "fanout_instances_sqlite": 40, "fanout_deployments": 2,
    "fanout_take_timeout": 30.0, "fanout_workers": [2],
    "ratebound_disks": 100, "ratebound_deployments": 4, "ratebound_workers": [2], "ratebound_timeout": 30.0,
    "capacity_seconds": 1.0, "capacity_clients": [4],
    "cpi_spawn_calls": 20, "cpi_spawn_concurrency": 4,
    "compare_group_commit": False,
    "audit_events": 20_000, "audit_queries": 30,
    "director_operations": 100, "director_queries": 20, "director_take_timeout": 60.0,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="smoke sizes: the whole suite in seconds")
    parser.add_argument("--only", default="", help="comma-separated benchmarks (default: all): " + ",".join(BENCHMARKS))
    parser.add_argument("--out", default=str(HERE / "results.json"), help="where to write the JSON results")
    parser.add_argument("--pg", default=os.environ.get("SNAPLEDGER_BENCH_PG", DEFAULT_PG),
                        help="a PostgreSQL server DSN where the run may create (and drop) a database")
    parser.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only")
    parser.add_argument("--seconds", type=float, help="measuring time per acceptance load level")
    parser.add_argument("--rebuild-events", type=int, help="events replayed by the rebuild benchmark")
    parser.add_argument("--listing-snapshots", type=int, help="snapshots in the listing view")
    parser.add_argument("--fanout-instances", type=int, help="instances one scheduled fire covers")
    parser.add_argument("--fanout-in-flight", type=int,
                        help="CPI calls at once per fan-out worker (default 32; fewer when 2 workers' "
                             "connections would not fit the server's max_connections)")
    parser.add_argument("--visible-rate", type=float, help="commands per second of the visibility benchmark")
    parser.add_argument("--ratebound-workers", help="worker process counts of the rate-bound fan-out, e.g. 1,2,4")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (logs of every process)")
    return parser.parse_args(argv)


def sizes_from(args: argparse.Namespace) -> dict[str, Any]:
    sizes = dict(SMALL_SIZES if args.small else DEFAULT_SIZES)
    if args.ratebound_workers:
        sizes["ratebound_workers"] = [int(n) for n in args.ratebound_workers.split(",")]
    for flag, key in (("seconds", "acceptance_seconds"), ("rebuild_events", "rebuild_events"),
                      ("listing_snapshots", "listing_snapshots"), ("fanout_instances", "fanout_instances"),
                      ("fanout_in_flight", "fanout_in_flight"), ("visible_rate", "visible_rate")):
        value = getattr(args, flag)
        if value is not None:
            sizes[key] = value
    return sizes


def format_table(rows: list[dict[str, Any]]) -> str:
    headers = ["benchmark", "backend", "metric", "ledger", "raw baseline", "ratio", "target", "met?"]

    def fmt(value: Any, unit: str = "") -> str:
        if value is None:
            return "-"
        return f"{value:g} {unit}".strip() if isinstance(value, (int, float)) else str(value)

    table = [[r["benchmark"], r["backend"], r["metric"], fmt(r["ledger"], r.get("unit", "")),
              fmt(r["baseline"], r.get("unit", "")), fmt(r["ratio"]), r.get("target") or "",
              {True: "yes", False: "NO", None: ""}[r.get("met")]] for r in rows]
    widths = [max(len(h), *(len(line[i]) for line in table)) if table else len(h) for i, h in enumerate(headers)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |" for line in table]
    return "\n".join(lines)


def run_audit(ctx: Context) -> dict[str, Any]:
    """Another feature's benchmark, by convention `ops/bench/audit.py: main() -> dict`."""
    if not (HERE / "audit.py").exists():
        return {"status": "skipped", "reason": "ops/bench/audit.py not present", "rows": []}
    try:
        module = importlib.import_module("audit")
        # Within the suite's 10-minute budget; `python ops/bench/audit.py`
        # alone runs the million-event log (docs/performance.md has both).
        argv = ["--pg", ctx.pg_server, "--events", str(ctx.sizes["audit_events"]),
                "--queries", str(ctx.sizes["audit_queries"])]
        result = module.main(argv)
    except Exception as error:  # report, never sink the suite
        return {"status": "skipped", "reason": f"audit benchmark failed: {error!r}", "rows": []}
    rows = result.get("rows", []) if isinstance(result, dict) else []
    return {"status": "ok", "result": result, "rows": rows if isinstance(rows, list) else []}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    chosen = [b.strip() for b in args.only.split(",") if b.strip()] or [*BENCHMARKS, "audit"]
    unknown = set(chosen) - set(BENCHMARKS) - {"audit"}
    if unknown:
        print(f"unknown benchmark(s): {', '.join(sorted(unknown))}; known: {', '.join(BENCHMARKS)}, audit",
              file=sys.stderr)
        return 2
    sizes = sizes_from(args)
    started = time.monotonic()
    results: dict[str, Any] = {}
    workdir = Path(tempfile.mkdtemp(prefix="snapledger-bench-"))
    with pg_run_database(args.pg) as database:
        ctx = Context(pg_server=args.pg, pg_database=database, workdir=workdir, small=args.small, sizes=sizes,
                      sqlite=not args.no_sqlite)
        for name in chosen:
            began = time.monotonic()
            if name == "audit":
                results[name] = run_audit(ctx)
            else:
                ctx.log(f"== {name}")
                try:
                    rows = importlib.import_module(name).run(ctx)
                    results[name] = {"status": "ok", "rows": rows}
                except Exception as error:
                    traceback.print_exc()
                    results[name] = {"status": "error", "error": repr(error), "rows": []}
            results[name]["seconds"] = round(time.monotonic() - began, 1)
            _write(args.out, results, sizes, args, started, workdir)  # partial results survive an interrupt
    all_rows = [r for result in results.values() for r in result.get("rows", [])]
    output = _write(args.out, results, sizes, args, started, workdir)
    print(format_table(all_rows))
    for name, result in results.items():
        if result["status"] != "ok":
            print(f"{name}: {result['status']}: {result.get('error') or result.get('reason')}")
    print(f"\n{len(all_rows)} figures in {output['meta']['seconds']} s; JSON: {args.out}")
    if not args.keep:
        subprocess.run(["rm", "-rf", str(workdir)], check=False)
    return 1 if any(r["status"] == "error" for r in results.values()) else 0


def _write(out: str, results: dict[str, Any], sizes: dict[str, Any], args: argparse.Namespace, started: float,
           workdir: Path) -> dict[str, Any]:
    output = {
        "meta": {
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "seconds": round(time.monotonic() - started, 1), "small": args.small, "sizes": sizes,
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                        "load_average": os.getloadavg()},
            "commit": _git_commit(),
            "workdir": str(workdir) if args.keep else None,
        },
        "benchmarks": results,
    }
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(output, indent=2, default=str) + "\n")
    return output


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=ROOT, check=True).stdout.strip()
    except Exception:
        return None


if __name__ == "__main__":
    sys.exit(main())
