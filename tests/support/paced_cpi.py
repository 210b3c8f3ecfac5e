"""An external CPI executable that counts its own calls: a POSIX shell script.

Every `snapshot_disk` appends one line `<start epoch seconds> <disk cid>` to a
log *before* it answers, then sleeps `delay_s` (an IaaS call's latency) and
answers a fresh CID. The log is the IaaS's view of the calls: a test or a
benchmark counts calls per window from it, whatever snapledger believes it sent.

A bash script (builtins only: one process per call), not Python: a 2,000-call run spawns 2,000 CPI processes, and
an interpreter's start-up per call would measure the machine, not the limit.
Lines are short single `>>` writes (O_APPEND), so concurrent calls never
interleave within a line.
"""

from __future__ import annotations

import shlex
import stat
from pathlib import Path

SCRIPT = r"""#!/bin/bash
IFS= read -r -d '' request
case "$request" in
  *'"method": "info"'*)
    printf '%s' '{"result": {"api_version": 2, "stemcell_formats": []}, "error": null, "log": ""}'
    exit 0 ;;
esac
disk=${request#*\"arguments\": [\"}
printf '%s %s\n' "$EPOCHREALTIME" "${disk%%\"*}" >> {log}
{sleep}
printf '{"result": "snap-%s-%s", "error": null, "log": ""}' "${EPOCHREALTIME/./}" "$$"
"""


def write_paced_cpi(directory: Path, delay_s: float = 0.0) -> tuple[Path, Path]:
    """The executable and its call log (created empty) under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / "calls.log"
    log.write_text("")
    executable = directory / "paced_cpi"
    sleep = f"sleep {delay_s:g}" if delay_s > 0 else ":"
    executable.write_text(SCRIPT.replace("{log}", shlex.quote(str(log))).replace("{sleep}", sleep))
    executable.chmod(executable.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return executable, log


def call_starts(log: Path) -> list[tuple[float, str]]:
    """(start time, disk cid) of every call logged so far, in start order."""
    calls = []
    for line in log.read_text().splitlines():
        start, _, disk = line.partition(" ")
        calls.append((float(start), disk))
    return sorted(calls)


def most_in_window(starts: list[float], window_s: float = 1.0) -> int:
    """The most call starts within any `window_s`-long window (a sliding window
    anchored at each start: no window boundary can hide a burst)."""
    most, first = 0, 0
    for last, start in enumerate(starts):
        while starts[first] <= start - window_s:
            first += 1
        most = max(most, last - first + 1)
    return most
