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

import contextlib
import threading
from collections.abc import Iterator

from snapledger.adapters.cpi.call_processes import CallProcesses, MissedStart, StartWindow

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


def write_cpi(directory: Path, name: str, script: str) -> str:
    executable = directory / name
    executable.write_text(script)
    executable.chmod(0o755)
    return str(executable)


@pytest.fixture
def echo_cpi(tmp_path: Path) -> str:
    return write_cpi(tmp_path, "cpi", ECHO_CPI)


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


# --- a start window (a rate-limit slot, adapters/rate_limit.py) -------------------------------

STAMP_CPI = """#!/bin/bash
printf '%s' "$EPOCHREALTIME" > "$STAMP"
IFS= read -r -d '' request
printf '{"request": %s}' "$request"
"""


@pytest.fixture
def stamp_cpi(tmp_path: Path) -> str:
    return write_cpi(tmp_path, "stamp-cpi", STAMP_CPI)


def window_in(seconds: float, grace_s: float = 5.0) -> tuple[StartWindow, float]:
    """A window opening `seconds` from now, and its opening on the wall clock (the CPI's)."""
    at = time.monotonic() + seconds
    return StartWindow(at=at, by=at + grace_s), time.time() + seconds


def test_a_call_with_a_window_starts_its_process_at_the_window_not_before(
        processes: CallProcesses, stamp_cpi: str, tmp_path: Path) -> None:
    stamp = tmp_path / "started"
    window, opens = window_in(0.5)
    finished = processes.run(stamp_cpi, {"PATH": "/usr/bin:/bin", "STAMP": str(stamp)}, b'{"n": 1}', 30,
                             window=window)
    assert json.loads(finished.stdout) == {"request": {"n": 1}}  # written before it started, read whole
    assert float(stamp.read_text()) >= opens - 0.002  # wall and monotonic clocks read apart by this much
    assert finished.ahead_s is not None and finished.ahead_s > 0.3  # handed over well before it


def test_the_time_out_counts_from_the_window(processes: CallProcesses, tmp_path: Path) -> None:
    sleeper = write_cpi(tmp_path, "sleeper", "#!/bin/bash\nsleep 0.5\nprintf '{\"result\": 1}'\n")
    window, _ = window_in(1.0)
    finished = processes.run(sleeper, {"PATH": "/usr/bin:/bin"}, b"{}", 0.9, window=window)
    # 1.0 s waiting for the window, then 0.5 s of the CPI: inside a 0.9 s time-out from the start.
    assert not finished.timed_out and finished.stdout == b'{"result": 1}'


def test_a_window_that_has_passed_raises_missed_start_and_nothing_runs(
        processes: CallProcesses, stamp_cpi: str, tmp_path: Path) -> None:
    stamp = tmp_path / "started"
    now = time.monotonic()
    with pytest.raises(MissedStart) as missed:
        processes.run(stamp_cpi, {"PATH": "/usr/bin:/bin", "STAMP": str(stamp)}, b"{}", 30,
                      window=StartWindow(at=now - 1.0, by=now - 0.5))
    assert not stamp.exists()
    assert missed.value.ahead_s is not None and missed.value.ahead_s < -0.9


def test_a_call_interrupted_while_it_waits_for_its_window_never_runs(
        processes: CallProcesses, stamp_cpi: str, tmp_path: Path) -> None:
    stamp = tmp_path / "started"
    window, _ = window_in(60.0)
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        with _interrupt_after(0.3):
            processes.run(stamp_cpi, {"PATH": "/usr/bin:/bin", "STAMP": str(stamp)}, b"{}", 30, window=window)
    assert time.monotonic() - started < 30
    time.sleep(0.2)
    assert not stamp.exists()  # its reaper was killed in its wait, before starting the CPI


def test_a_cpi_that_exits_as_a_missed_start_is_not_one(processes: CallProcesses, tmp_path: Path) -> None:
    # Only the reaper's own marker means "never started": a CPI's exit code 125 is its own.
    cpi = write_cpi(tmp_path, "exit125", "#!/bin/bash\nprintf 'oops' >&2\nexit 125\n")
    window, _ = window_in(0.0)
    finished = processes.run(cpi, {"PATH": "/usr/bin:/bin"}, b"{}", 30, window=window)
    assert finished.returncode == 125 and finished.stderr == b"oops"


@contextlib.contextmanager
def _interrupt_after(seconds: float) -> Iterator[None]:
    """A ^C into the main thread after `seconds` (the caller interrupted mid-call)."""
    main = threading.get_ident()
    timer = threading.Timer(seconds, lambda: signal.pthread_kill(main, signal.SIGINT))
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
