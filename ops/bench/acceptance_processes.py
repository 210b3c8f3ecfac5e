"""1b. Command acceptance with several API processes on one port, like for like
(issue 19, benchmark 4; decision 37).

The ledger is the real `snapledger api --processes N` (plain HTTP, auth on);
the baseline is N bare aiohttp + psycopg INSERT+COMMIT processes on one port
(`baseline_server.py --reuse-port`), so both get the same kernel spreading of
connections (SO_REUSEPORT) and the same number of interpreters. Closed loop at
concurrency 64 against each; then the throughput each added process brings.
"""

from __future__ import annotations

import socket
import time
import uuid
from pathlib import Path
from typing import Any

from common import BENCH, PYTHON, Context, Proc, free_port, loadgen, row, wait_http

SNAPLEDGER = str(Path(PYTHON).parent / "snapledger")
PATH = "/deployments/bench/snapshots"
CONCURRENCY = 64
TARGET_RATIO = 0.7
START_TIMEOUT_S = 120.0


def wait_notified(notify: socket.socket, proc: Proc) -> None:
    """systemd's readiness protocol: the supervisor says READY=1 once every process serves."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"ledger exited before ready:\n{proc.output()}")
        try:
            if b"READY=1" in notify.recv(4096):
                return
        except TimeoutError:
            continue
    raise RuntimeError(f"ledger not ready in {START_TIMEOUT_S}s:\n{proc.output()}")


def ledger(ctx: Context, processes: int) -> tuple[Proc, int]:
    port = free_port()
    config = ctx.config_file(f"api-x{processes}", ctx.pg_url(), listen={"host": "127.0.0.1", "port": port},
                             tls={"plain_http": True}, api={"processes": processes})
    address = str(ctx.workdir / f"notify-{uuid.uuid4().hex[:6]}.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(address)
        notify.settimeout(0.5)
        proc = Proc(f"api-x{processes}", [SNAPLEDGER, "api", "--config", str(config)], ctx.workdir,
                    env={"NOTIFY_SOCKET": address})
        try:
            if processes > 1:
                wait_notified(notify, proc)
            wait_http(port, timeout=START_TIMEOUT_S, proc=proc.proc)
        except RuntimeError:
            proc.stop()
            raise
    return proc, port


def baseline(ctx: Context, processes: int) -> tuple[list[Proc], int]:
    """N baseline processes on one port, started one after another (each creates the table)."""
    from snapledger.adapters.store import ensure_schema, parse_store_url

    parsed = parse_store_url(ctx.pg_url())
    ensure_schema(parsed)
    port = free_port()
    args = [PYTHON, str(BENCH / "baseline_server.py"), "--port", str(port), "--rows", "2", "--payload", "600",
            "--pg", parsed.conninfo(), "--reuse-port"]
    procs: list[Proc] = []
    try:
        for n in range(processes):
            procs.append(Proc(f"baseline-x{processes}-{n}", args, ctx.workdir))
            deadline = time.monotonic() + START_TIMEOUT_S
            while "ready" not in procs[-1].output():
                if not procs[-1].alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"baseline process did not start:\n{procs[-1].output()}")
                time.sleep(0.05)
    except RuntimeError:
        for proc in procs:
            proc.stop()
        raise
    return procs, port


def measure(ctx: Context, port: int, path: str, auth: bool) -> dict[str, Any]:
    # A longer warm-up than one process needs: each API process checks the credential
    # (argon2, ~0.1 s of CPU) for itself before its cache answers, and with 64 cold
    # connections at once some are told 429 (AUTH_MAX_PENDING) until it has. Same for all N.
    return loadgen(ctx, port, path, concurrency=CONCURRENCY, duration=ctx.sizes["acceptance_seconds"],
                   warmup=ctx.sizes.get("acceptance_processes_warmup", ctx.sizes["warmup_seconds"]), auth=auth)


def figures(ctx: Context, processes: int) -> tuple[dict[str, Any], dict[str, Any]]:
    from acceptance import put_deployment

    ctx.log(f"acceptance: postgres ledger, {processes} API process(es)")
    proc, port = ledger(ctx, processes)
    try:
        put_deployment(port)
        ours = measure(ctx, port, PATH, auth=True)
    finally:
        proc.stop(timeout=70)
    ctx.log(f"acceptance: postgres raw baseline, {processes} process(es)")
    procs, port = baseline(ctx, processes)
    try:
        raw = measure(ctx, port, "/insert", auth=False)
    finally:
        for one in procs:
            one.stop()
    return ours, raw


def run(ctx: Context) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    measured: dict[int, tuple[float, float]] = {}
    for processes in ctx.sizes["acceptance_processes"]:
        ours, raw = figures(ctx, processes)
        measured[processes] = (ours["throughput"], raw["throughput"])
        ratio = ours["throughput"] / raw["throughput"] if raw["throughput"] else None
        rows.append(row("acceptance", "postgres", f"throughput c={CONCURRENCY}, {processes} API process(es)",
                        ours["throughput"], raw["throughput"], "req/s",
                        target=f">= {TARGET_RATIO}x raw, same processes",
                        met=ratio is not None and ratio >= TARGET_RATIO, errors=ours["errors"],
                        p99_ms=ours["p99_ms"], raw_p99_ms=raw["p99_ms"]))
    if 1 in measured:
        one_ours, one_raw = measured[1]
        for processes in sorted(n for n in measured if n > 1):
            ours, raw = measured[processes]
            rows.append(row("acceptance", "postgres", f"throughput per added API process (1 -> {processes})",
                            (ours - one_ours) / (processes - 1), (raw - one_raw) / (processes - 1), "req/s"))
    return rows
