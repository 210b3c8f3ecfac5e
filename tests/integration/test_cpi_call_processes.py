"""The reaper server (adapters/cpi/call_processes.py): many calls through one server,
each with its own pipes and answer, and a server that dies is replaced, not fatal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from snapledger.adapters.cpi.call_processes import CallProcesses

ECHO_CPI = """#!/bin/bash
IFS= read -r -d '' request
printf '%s' "$request" > /dev/null
printf '{"pid": %s, "request": %s, "env": "%s"}' "$$" "$request" "$MARK"
printf 'stderr of %s' "$$" >&2
exit 3
"""


@pytest.fixture
def processes() -> CallProcesses:
    p = CallProcesses(drain_s=2.0)
    yield p
    p.close()


@pytest.fixture
def echo_cpi(tmp_path: Path) -> str:
    executable = tmp_path / "cpi"
    executable.write_text(ECHO_CPI)
    executable.chmod(0o755)
    return str(executable)


def call(processes: CallProcesses, cpi: str, n: int) -> tuple[int, dict[str, object], bytes]:
    finished = processes.run(cpi, {"PATH": "/usr/bin:/bin", "MARK": f"m{n}"}, json.dumps({"n": n}).encode(), 30)
    assert not finished.timed_out
    return finished.returncode or 0, json.loads(finished.stdout), finished.stderr


def test_concurrent_calls_each_get_their_own_answer_exit_code_and_stderr(processes: CallProcesses,
                                                                         echo_cpi: str) -> None:
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda n: call(processes, echo_cpi, n), range(200)))
    for n, (code, answer, stderr) in enumerate(results):
        assert code == 3
        assert answer["request"] == {"n": n} and answer["env"] == f"m{n}"
        assert stderr == f"stderr of {answer['pid']}".encode()
    assert len({answer["pid"] for _, answer, _ in results}) == 200


def test_a_large_request_is_written_whole(processes: CallProcesses, echo_cpi: str) -> None:
    metadata = "x" * 1_000_000  # far beyond a pipe's buffer: written as the CPI reads
    finished = processes.run(echo_cpi, {"PATH": "/usr/bin:/bin"}, json.dumps({"m": metadata}).encode(), 30)
    assert json.loads(finished.stdout)["request"] == {"m": metadata}


def test_a_killed_server_is_replaced_by_the_next_call(processes: CallProcesses, echo_cpi: str) -> None:
    assert call(processes, echo_cpi, 1)[0] == 3
    first = processes.server_pid()
    assert first is not None
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while processes.server_pid() == first and time.monotonic() < deadline:
        time.sleep(0.01)  # the reply reader sees the end of the socket
    assert call(processes, echo_cpi, 2)[1]["request"] == {"n": 2}
    assert processes.server_pid() not in (None, first)


def test_the_server_ends_with_the_process_that_started_it(echo_cpi: str) -> None:
    # A worker killed outright (no close, no atexit) leaves no reaper server behind.
    script = ("import os, sys; from snapledger.adapters.cpi.call_processes import CallProcesses; "
              "p = CallProcesses(); p.run(sys.argv[1], {}, b'{}', 30); print(p.server_pid(), flush=True); "
              "os.kill(os.getpid(), 9)")
    done = subprocess.run([sys.executable, "-c", script, echo_cpi], capture_output=True, text=True, timeout=60)
    server = int(done.stdout)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _running(server):
        time.sleep(0.01)
    assert not _running(server), f"the reaper server {server} outlived the process that started it"


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has ended (init reaps it)
