"""Rate-bound fan-out: the IaaS's rate limit is the only bound, with any number of workers.

Set-up (PostgreSQL): D deployments sharing N disks; an external CPI executable
(tests/support/paced_cpi.py) whose every call takes LATENCY_S and which logs
each call's start itself; a rate limit of LIMIT calls/s (burst BURST) on it;
W worker processes, a projector and an API process. One scheduled fire
covers every disk. Measured, for each W:
- achieved calls/s ÷ the limit (from the CPI's own log: the IaaS's view);
- the most calls started in any 1-s window (never above limit + burst);
- time until every snapshot is taken, next to N / LIMIT (the limit's bound);
- fairness: once a tenth of the calls were made, a one-instance manual snapshot
  of another deployment: its 202 to its task done, next to 1 s + one call.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
import uuid
from typing import Any

from common import ROOT, Context, auth_header, row, server, wait_until
from fanout import child, taken

sys.path.insert(0, str(ROOT / "tests"))
from support.paced_cpi import call_starts, most_in_window, write_paced_cpi

CPI = "iaas"
LIMIT, BURST, LATENCY_S = 100, 5, 0.1
IN_FLIGHT = 16  # per worker: LIMIT x LATENCY_S = 10 calls in flight sustain the limit, with room for spawn time
TARGET_RATIO = 0.95
TARGET_FAIR_S = 1.0 + LATENCY_S


def run(ctx: Context) -> list[dict[str, Any]]:
    out = []
    disks, deployments = ctx.sizes["ratebound_disks"], ctx.sizes["ratebound_deployments"]
    for workers in ctx.sizes["ratebound_workers"]:
        ctx.log(f"ratebound: {workers} worker(s), {disks} disks over {deployments} deployments, "
                f"limit {LIMIT}/s, each call {LATENCY_S * 1000:g} ms")
        out += run_one(ctx, workers, disks, deployments)
    return out


def run_one(ctx: Context, workers: int, disks: int, deployments: int) -> list[dict[str, Any]]:
    url = ctx.pg_url()
    child(["setup", url, str(disks), str(deployments), CPI])
    executable, calls_log = write_paced_cpi(ctx.workdir / f"paced-cpi-{uuid.uuid4().hex[:6]}", LATENCY_S)
    cpis = {"cpis": {CPI: {"type": "external", "executable": str(executable), "max_in_flight": IN_FLIGHT,
                              "timeout": 60, "rate_limit": {"calls": LIMIT, "per": "1s", "burst": BURST}}},
            "worker": {"max_in_flight": IN_FLIGHT}}
    procs = []
    try:
        procs += [server(ctx, f"rate-worker-{i}", url, "worker", **cpis)[0] for i in range(workers)]
        procs.append(server(ctx, "rate-projector", url, "projector")[0])
        api, port = server(ctx, "rate-api", url, "api", **cpis)
        procs.append(api)
        time.sleep(0.5 if ctx.small else 2.0)  # the workers follow the log before the fire
        fired = child(["fire", url, CPI])
        record_manual_deployment(url)  # after the fire: not one of its disks
        started = time.monotonic() - fired["seconds"]
        wait_until(lambda: len(call_starts(calls_log)) >= disks // 10, timeout=120, interval=0.05)
        fair_s = manual_snapshot_seconds(port)
        timeout = ctx.sizes["ratebound_timeout"]
        done = wait_until(lambda: taken(url, "postgres") >= disks + 1, timeout=timeout, interval=0.2)
        all_taken = time.monotonic() - started
        count = taken(url, "postgres")
        rss = {p.name: p.peak_rss_mb() for p in procs if "worker" in p.name or "projector" in p.name}
    finally:
        for proc in procs:
            proc.stop()
    starts = [start for start, _ in call_starts(calls_log)]
    achieved = (len(starts) - 1) / (starts[-1] - starts[0]) if len(starts) > 1 else None
    busiest = most_in_window(starts)
    label = f"{workers} worker{'s' if workers > 1 else ''}"
    rows = [
        row("ratebound", "postgres", f"{label}: calls/s (bound: the limit)", achieved, LIMIT, "/s",
            target=f"≥ {TARGET_RATIO:g}× limit" if workers > 1 else "",
            met=(achieved is not None and achieved >= TARGET_RATIO * LIMIT) if workers > 1 else None),
        row("ratebound", "postgres", f"{label}: most calls in any 1 s", busiest, LIMIT + BURST, "calls",
            target=f"≤ {LIMIT + BURST} (limit + burst)", met=busiest <= LIMIT + BURST),
        row("ratebound", "postgres", f"{label}: all {disks} taken (bound: N / limit)", all_taken if done else None,
            disks / LIMIT, "s", target="" if done else f"(stopped after {timeout:g} s)",
            met=None if done else False, taken=count),
        row("ratebound", "postgres", f"{label}: manual 1-instance snapshot 202 → taken (bound: 1 s + 1 call)",
            fair_s, TARGET_FAIR_S, "s", target=f"< {TARGET_FAIR_S:g} s",
            met=fair_s is not None and fair_s < TARGET_FAIR_S),
    ]
    for name, value in rss.items():
        rows.append(row("ratebound", "postgres", f"{label}: {name.replace('rate-', '')} peak RSS", value, None, "MB",
                        target="< 200 MB", met=value is not None and value < 200))
    return rows


def record_manual_deployment(url: str) -> None:
    from fanout import _ledger

    ledger = _ledger(url, CPI)
    ledger.deployments.record("manual", {"team": "other"}, [{"job": "db", "index": 0, "disks": ["manual-disk"]}],
                             actor="bench")
    ledger.close()


def manual_snapshot_seconds(port: int) -> float | None:
    """202 of `POST /deployments/manual/snapshots` until GET /tasks/<id> says done."""
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": auth_header(), "Content-Type": "application/json"}
    started = time.monotonic()
    request = urllib.request.Request(f"{base}/deployments/manual/snapshots", data=b"{}", method="POST", headers=headers)
    with urllib.request.urlopen(request, timeout=30) as resp:
        assert resp.status == 202, resp.status
        task_id = json.loads(resp.read())["task_id"]
    deadline = started + 120
    while time.monotonic() < deadline:
        with urllib.request.urlopen(urllib.request.Request(f"{base}/tasks/{task_id}", headers=headers),
                                    timeout=30) as resp:
            if json.loads(resp.read())["state"] in ("done", "error"):
                took = time.monotonic() - started
                if os.environ.get("RATEBOUND_TRACE"):
                    with urllib.request.urlopen(urllib.request.Request(f"{base}/tasks/{task_id}/events",
                                                                       headers=headers), timeout=30) as r:
                        for e in json.loads(r.read()):
                            print("TRACE", e.get("position"), e.get("type"), e.get("time"), flush=True)
                    print("TRACE requested at", time.time() - took, flush=True)
                return took
        time.sleep(0.01)
    return None
