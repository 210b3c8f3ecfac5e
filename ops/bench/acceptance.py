"""1. Command acceptance: HTTP POST .../snapshots -> durable -> 202.

The ledger's API process (roles: api) against a bare aiohttp handler doing one
INSERT + COMMIT of the same rows; both driven by the same load generator in
its own process, at concurrency 1, 8 and 64, plus p99 at a steady 200/s.
On PostgreSQL the ledger also runs without group commit: the lever's effect,
and with several API processes on one port against as many baseline processes
(acceptance_processes.py).
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from common import PYTHON, BENCH, Context, Proc, auth_header, free_port, loadgen, row, server, wait_http

DEPLOYMENT = {"instances": [{"job": "db", "index": 0, "disks": ["disk-0"]}]}
PATH = "/deployments/bench/snapshots"
TARGET_RATIO = 0.7
TARGET_P99_MS = 20.0


def put_deployment(port: int) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/deployments/bench", method="PUT",
                                     data=json.dumps(DEPLOYMENT).encode(),
                                     headers={"Content-Type": "application/json", "Authorization": auth_header()})
    urllib.request.urlopen(request, timeout=30).read()


def drive(ctx: Context, port: int, path: str, auth: bool) -> dict[str, Any]:
    duration, warmup = ctx.sizes["acceptance_seconds"], ctx.sizes["warmup_seconds"]
    result: dict[str, Any] = {}
    for concurrency in ctx.sizes["concurrency"]:
        result[f"c{concurrency}"] = loadgen(ctx, port, path, concurrency=concurrency, duration=duration,
                                            warmup=warmup, auth=auth)
    result["rate200"] = loadgen(ctx, port, path, concurrency=64, rate=200, duration=duration, warmup=warmup,
                                auth=auth)
    for summary in result.values():
        summary.pop("acks", None)
    return result


def ledger_figures(ctx: Context, backend: str, group_commit: bool = True,
                   concurrency: list[int] | None = None) -> tuple[dict[str, Any], float | None, dict[str, Any]]:
    url = ctx.url_for(backend, "acceptance")
    proc, port = server(ctx, f"api-{backend}", url, "api", group_commit={"enabled": group_commit})
    try:
        put_deployment(port)
        if concurrency is None:
            figures = drive(ctx, port, PATH, auth=True)
        else:
            figures = {f"c{c}": loadgen(ctx, port, PATH, concurrency=c, duration=ctx.sizes["acceptance_seconds"],
                                        warmup=ctx.sizes["warmup_seconds"]) for c in concurrency}
        return figures, proc.peak_rss_mb(), {}
    finally:
        proc.stop()


def baseline_figures(ctx: Context, backend: str) -> dict[str, Any]:
    port = free_port()
    args = [PYTHON, str(BENCH / "baseline_server.py"), "--port", str(port), "--rows", "2", "--payload", "600"]
    if backend == "postgres":
        from snapledger.adapters.store import ensure_schema, parse_store_url

        parsed = parse_store_url(ctx.pg_url())
        ensure_schema(parsed)
        args += ["--pg", parsed.conninfo()]
    else:
        args += ["--sqlite", str(ctx.workdir / f"raw-{port}.sqlite")]
    proc = Proc(f"baseline-{backend}", args, ctx.workdir)
    try:
        wait_http(port, proc=proc.proc)
        return drive(ctx, port, "/insert", auth=False)
    finally:
        proc.stop()


def run(ctx: Context) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for backend in ctx.backends():
        ctx.log(f"acceptance: {backend} ledger")
        ledger, rss, _ = ledger_figures(ctx, backend)
        ctx.log(f"acceptance: {backend} raw baseline")
        raw = baseline_figures(ctx, backend)
        for concurrency in ctx.sizes["concurrency"]:
            key = f"c{concurrency}"
            top = concurrency == max(ctx.sizes["concurrency"])
            ratio = ledger[key]["throughput"] / raw[key]["throughput"] if raw[key]["throughput"] else None
            rows.append(row("acceptance", backend, f"throughput c={concurrency}", ledger[key]["throughput"],
                            raw[key]["throughput"], "req/s",
                            target=f">= {TARGET_RATIO}x raw" if top else "",
                            met=(ratio is not None and ratio >= TARGET_RATIO) if top else None,
                            errors=ledger[key]["errors"]))
            rows.append(row("acceptance", backend, f"p50 c={concurrency}", ledger[key]["p50_ms"], raw[key]["p50_ms"],
                            "ms"))
            rows.append(row("acceptance", backend, f"p99 c={concurrency}", ledger[key]["p99_ms"], raw[key]["p99_ms"],
                            "ms"))
        steady = ledger["rate200"]
        rows.append(row("acceptance", backend, "p99 at 200 req/s", steady["p99_ms"], raw["rate200"]["p99_ms"], "ms",
                        target=f"< {TARGET_P99_MS:g} ms", met=steady["p99_ms"] is not None
                        and steady["p99_ms"] < TARGET_P99_MS and steady["errors"] == 0,
                        achieved_rate=steady["throughput"]))
        rows.append(row("acceptance", backend, "api peak RSS", rss, None, "MB"))
        if backend == "postgres" and ctx.sizes.get("compare_group_commit", True):
            ctx.log("acceptance: postgres ledger without group commit")
            off, _, _ = ledger_figures(ctx, backend, group_commit=False,
                                       concurrency=[max(ctx.sizes["concurrency"])])
            key = f"c{max(ctx.sizes['concurrency'])}"
            rows.append(row("acceptance", backend, f"throughput {key} WITHOUT group commit", off[key]["throughput"],
                            raw[key]["throughput"], "req/s", p99_ms=off[key]["p99_ms"]))
    if ctx.sizes.get("acceptance_processes"):
        import acceptance_processes

        rows += acceptance_processes.run(ctx)
    return rows
