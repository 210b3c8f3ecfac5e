"""What one external CPI call costs snapledger's host before the CPI does anything.

The external CPI protocol is one process per call. snapledger starts each
through a reaper (adapters/cpi/reaper.py: a subreaper that kills whatever the
CPI leaves). Three ways, the same shell-script CPI that answers at once,
`cpi_spawn_concurrency` calls at a time, in the same run:
- raw baseline: `subprocess.run(CPI)`, no reaper (what snapledger must not do:
  a CPI's helpers could outlive the call and hold its answer back);
- before (up to this change): `subprocess.run(python -I -S reaper.py CPI)`, an
  interpreter start-up per call;
- after: `CallProcesses.run`, a fork of one long-lived reaper server per call.
Figures: calls/s, and CPU per call (this process, its reaped children and, for
the server, the server with the reapers it reaped), from the kernel's counters.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from common import Context, row

from snapledger.adapters.cpi.call_processes import REAPER, CallProcesses

CPI = """#!/bin/bash
IFS= read -r -d '' request
printf '{"result": "snap-%s", "error": null, "log": ""}' "$$"
"""
REQUEST = b'{"method": "snapshot_disk", "arguments": ["disk-1", {}], "context": {}}'
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}


def _own_cpu() -> float:
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def _process_cpu(pid: int) -> float:
    """utime + stime + cutime + cstime of `pid` (its reaped children included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _measure(calls: int, concurrency: int, call: Callable[[], None],
             other_cpu: Callable[[], float] = lambda: 0.0) -> tuple[float, float]:
    started, cpu = time.monotonic(), _own_cpu() + other_cpu()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda _: call(), range(calls)))
    elapsed, used = time.monotonic() - started, _own_cpu() + other_cpu() - cpu
    return calls / elapsed, 1000 * used / calls


def run(ctx: Context) -> list[dict[str, Any]]:
    calls, concurrency = ctx.sizes["cpi_spawn_calls"], ctx.sizes["cpi_spawn_concurrency"]
    executable = ctx.workdir / "instant_cpi.sh"
    executable.write_text(CPI)
    executable.chmod(0o755)
    cpi = str(executable)

    def bare() -> None:
        subprocess.run([cpi], input=REQUEST, capture_output=True, env=ENV, check=True)

    def per_call_reaper() -> None:
        subprocess.run([sys.executable, "-I", "-S", str(REAPER), cpi], input=REQUEST, capture_output=True,
                       env=ENV, start_new_session=True, check=True)

    processes = CallProcesses()

    def reaper_server() -> None:
        finished = processes.run(cpi, ENV, REQUEST, 30.0)
        if finished.returncode != 0 or not finished.stdout:
            raise RuntimeError(f"the reaper server's call failed: {finished}")

    try:
        reaper_server()  # the server starts on first use: not part of the figure
        server_pid = processes.server_pid()
        if server_pid is None:
            raise RuntimeError("the reaper server is not running")
        ctx.log(f"cpi_spawn: {calls} calls at concurrency {concurrency}, three ways")
        bare_rate, bare_cpu = _measure(calls, concurrency, bare)
        before_rate, before_cpu = _measure(calls, concurrency, per_call_reaper)
        after_rate, after_cpu = _measure(calls, concurrency, reaper_server, lambda: _process_cpu(server_pid))
    finally:
        processes.close()
    name = f"c={concurrency}"
    return [
        row("cpi_spawn", "-", f"calls/s {name}: reaper server (raw: no reaper)", after_rate, bare_rate, "/s"),
        row("cpi_spawn", "-", f"calls/s {name}: a reaper interpreter per call, before (raw: no reaper)",
            before_rate, bare_rate, "/s"),
        row("cpi_spawn", "-", "host CPU per call: reaper server (raw: no reaper)", after_cpu, bare_cpu, "ms"),
        row("cpi_spawn", "-", "host CPU per call: a reaper interpreter per call, before (raw: no reaper)",
            before_cpu, bare_cpu, "ms"),
    ]
