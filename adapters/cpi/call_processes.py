"""CPI processes, each started by a fork of one long-lived reaper (adapters/cpi/reaper.py --serve).

Why not `subprocess.Popen(reaper.py CPI)` per call: that starts an interpreter
per call, ~30 ms of CPU, which at an IaaS limit of 100 calls/s is 1.5 cores
spent before any CPI runs (the rate-bound benchmark was bound by it on 2
cores). The server forks its small, single-threaded self instead (~1 ms) and
the child is the same per-call reaper as before: a subreaper in a session of
its own, which kills whatever its CPI leaves and exits as the CPI did.

Here the calling thread owns the call's three pipes (the server only hands
their far ends to the child), so reading the answer, the time-out and the
drain after it work as with `Popen.communicate`: a time-out asks the server
to SIGTERM the call's reaper (it kills the CPI's tree and exits), and if the
pipes are still open after `drain_s`, to SIGKILL the reaper's group.
"""

from __future__ import annotations

import array
import contextlib
import errno
import itertools
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from .reaper import MISSED_START, MISSED_START_MARKER

log = structlog.get_logger(__name__)

REAPER = Path(__file__).with_name("reaper.py")
READ_CHUNK = 65536


@dataclass(frozen=True)
class StartWindow:
    """When a call's process may start (time.monotonic()): at `at`, not before, and
    not after `by` (a rate-limit slot and its grace: adapters/rate_limit.py)."""

    at: float
    by: float


# A window taken at the last moment, once the call is ready to go (a rate-limit
# slot reserved then: what the process does after it is only the hand-over).
TakeWindow = Callable[[], StartWindow]


class MissedStart(Exception):
    """The call's process was not started: its window had passed when the reaper
    could start it. Nothing ran, so the caller may take a new slot and call again."""

    def __init__(self, ahead_s: float | None) -> None:
        super().__init__("the CPI call missed its start window (never started)")
        self.ahead_s = ahead_s  # how early the request reached the reaper server (negative: late)
        self.handover_s = 0.0  # how long it took from its reservation to there (the rate limiter's)


@dataclass(frozen=True)
class Finished:
    stdout: bytes
    stderr: bytes
    returncode: int | None  # as Popen's: negative for a signal; None when the server could not tell
    timed_out: bool
    window: StartWindow | None = None  # the window it was started in, when it had one
    # How long before its window opened the request reached the server (negative: late; None: no window).
    ahead_s: float | None = None


@dataclass
class _Call:
    pid: int | None = None
    ahead_s: float | None = None
    status: int | None = None
    error: str | None = None
    ended: threading.Event = field(default_factory=threading.Event)


class _Server:
    """One running reaper server and the thread that reads its replies."""

    def __init__(self) -> None:
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.process = subprocess.Popen(
            [sys.executable, "-I", "-S", str(REAPER), "--serve", str(theirs.fileno())],
            pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            start_new_session=True)  # a terminal's ^C is for snapledger; the server ends with its socket
        theirs.close()
        self.owner = os.getpid()
        self.calls: dict[int, _Call] = {}
        self.lock = threading.Lock()
        self.alive = True
        threading.Thread(target=self._read_replies, name="cpi-reaper-server", daemon=True).start()

    def send(self, message: dict[str, object], fds: list[int] | None = None) -> None:
        data = json.dumps(message).encode()
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        self.sock.sendmsg([data], ancillary)

    def _read_replies(self) -> None:
        while True:
            try:
                data = self.sock.recv(READ_CHUNK)
            except OSError:
                data = b""
            if not data:
                break
            reply = json.loads(data)
            with self.lock:
                call = self.calls.get(reply.get("id"))
            if call is None:
                continue
            if "pid" in reply:
                call.pid, call.ahead_s = reply["pid"], reply.get("ahead_s")
            elif "status" in reply or "error" in reply:
                call.status, call.error = reply.get("status"), reply.get("error")
                call.ended.set()
        self.alive = False
        with self.lock:  # nobody will say how these ended: their pipes still close when they do
            for call in self.calls.values():
                call.ended.set()
        log.warning("cpi reaper server ended", exit_code=self.process.poll())

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)


class CallProcesses:
    """Runs one CPI process per call through the reaper server, started on first use
    (and again if it ended, or in a forked child of this process)."""

    def __init__(self, drain_s: float = 5.0) -> None:
        self.drain_s = drain_s  # after a stop or a kill, how long the pipes may take to close
        self._server: _Server | None = None
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    def run(self, executable: str, env: dict[str, str], request: bytes, timeout_s: float,
            window: StartWindow | TakeWindow | None = None) -> Finished:
        """Start `executable` with `env`, write `request` to its stdin and close it, read
        stdout and stderr to their end; past `timeout_s`, stop it and everything it started.

        With a `window`, the process starts at `window.at`, not before (the time-out
        counts from then), and raises MissedStart, never having started it, when it
        could not be started by `window.by`. A `window` that is a function is called
        once everything else is ready, right before the hand-over to the server."""
        pipes = [os.pipe() for _ in range(3)]  # stdin, stdout, stderr
        ours = [pipes[0][1], pipes[1][0], pipes[2][0]]
        theirs = [pipes[0][0], pipes[1][1], pipes[2][1]]
        for fd in ours:
            os.set_blocking(fd, False)
        # The request goes into the pipe before the process exists (all of it, as a
        # rule: a pipe holds 64 KiB), so the CPI reads it the moment it starts, not
        # when this thread next gets the GIL.
        remaining: memoryview | None = self._write_ahead(ours[0], memoryview(request))
        try:
            if callable(window):
                window = window()
            server, call_id, call = self._start(executable, env, theirs, window)
        except BaseException:
            for fd in ours:
                if fd != ours[0] or remaining is not None:
                    os.close(fd)
            raise
        finally:
            for fd in theirs:
                os.close(fd)  # the child has them now (or there is no child)
        deadline = max(time.monotonic(), window.at if window else 0.0) + timeout_s
        try:
            stdout, stderr, timed_out = self._exchange(server, call_id, call, ours, remaining, deadline)
            call.ended.wait(self.drain_s)  # its status follows the pipes' end at once, but for a stuck reaper
        except BaseException:  # interrupted: never leave a CPI running behind us
            self._signal(server, call_id, call, "kill")
            raise
        finally:
            with server.lock:
                server.calls.pop(call_id, None)
        if call.error is not None:
            raise OSError(errno.EAGAIN, f"cannot start the CPI process: {call.error}")
        returncode = os.waitstatus_to_exitcode(call.status) if call.status is not None else None
        if window is not None and returncode == MISSED_START and stderr.startswith(MISSED_START_MARKER.encode()):
            raise MissedStart(call.ahead_s)
        return Finished(stdout, stderr, returncode, timed_out, window, call.ahead_s)

    def server_pid(self) -> int | None:
        """The running server's process id (for a benchmark's CPU figures)."""
        server = self._server
        return server.process.pid if server is not None and server.alive else None

    def close(self) -> None:
        with self._lock:
            if self._server is not None:
                self._server.close()
                self._server = None

    # --- one call ------------------------------------------------------------------------------

    def _start(self, executable: str, env: dict[str, str], fds: list[int],
               window: StartWindow | None) -> tuple[_Server, int, _Call]:
        message: dict[str, object] = {"executable": executable, "env": env}
        if window is not None:
            message.update(start_at=window.at, start_by=window.by)
        for attempt in (1, 2):  # a server that ended meanwhile is started again, once
            server = self._running_server()
            call_id, call = next(self._ids), _Call()
            with server.lock:
                server.calls[call_id] = call
            try:
                server.send({"id": call_id, **message}, fds)
                return server, call_id, call
            except OSError:
                with server.lock:
                    server.calls.pop(call_id, None)
                server.alive = False
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _running_server(self) -> _Server:
        with self._lock:
            server = self._server
            if server is None or not server.alive or server.owner != os.getpid():
                if server is not None and server.owner == os.getpid():
                    server.close()
                server = self._server = _Server()
            return server

    def _exchange(self, server: _Server, call_id: int, call: _Call, fds: list[int],
                  remaining_input: memoryview | None, deadline: float) -> tuple[bytes, bytes, bool]:
        """Write what is left of the request, read stdout and stderr to their end;
        past `deadline`, stop the call, and kill it if its pipes outlive `drain_s` more."""
        stdin, stdout, stderr = fds
        output: dict[int, list[bytes]] = {stdout: [], stderr: []}
        poller = select.poll()
        open_fds = {stdout, stderr}
        if remaining_input is not None:
            poller.register(stdin, select.POLLOUT)
            open_fds.add(stdin)
        poller.register(stdout, select.POLLIN)
        poller.register(stderr, select.POLLIN)
        stage = "running"
        try:
            while output.keys() & open_fds:
                left = deadline - time.monotonic()
                if left <= 0:
                    if stage == "killed":
                        break  # something outside the call's tree holds the pipes: give up on output
                    stage = "stopped" if stage == "running" else "killed"
                    self._signal(server, call_id, call, "stop" if stage == "stopped" else "kill")
                    deadline = time.monotonic() + self.drain_s
                    continue
                for fd, _event in poller.poll(left * 1000):
                    if fd == stdin and remaining_input is not None:
                        remaining_input = self._write_some(fd, remaining_input)
                        if remaining_input is None:
                            poller.unregister(fd)
                            os.close(fd)
                            open_fds.discard(fd)
                        continue
                    chunk = os.read(fd, READ_CHUNK)
                    if chunk:
                        output[fd].append(chunk)
                    else:
                        poller.unregister(fd)
                        os.close(fd)
                        open_fds.discard(fd)
        finally:
            for fd in open_fds:
                os.close(fd)
        return b"".join(output[stdout]), b"".join(output[stderr]), stage != "running"

    @classmethod
    def _write_ahead(cls, fd: int, data: memoryview) -> memoryview | None:
        """Writes what the pipe takes now; closes it when all is written (None), else the rest."""
        remaining: memoryview | None = data
        while remaining is not None:
            before = len(remaining)
            remaining = cls._write_some(fd, remaining)
            if remaining is not None and len(remaining) == before:
                return remaining  # the pipe is full: the rest once the CPI reads
        os.close(fd)
        return None

    @staticmethod
    def _write_some(fd: int, data: memoryview) -> memoryview | None:
        """Writes what the pipe takes; None when all is written (stdin is then closed) or the reader left."""
        try:
            written = os.write(fd, data[:READ_CHUNK])
        except BlockingIOError:
            return data
        except BrokenPipeError:
            return None  # the CPI exited without reading it all: its answer (if any) still counts
        rest = data[written:]
        return rest if len(rest) else None

    @staticmethod
    def _signal(server: _Server, call_id: int, call: _Call, how: str) -> None:
        try:
            server.send({"id": call_id, "signal": how})
        except OSError:  # the server is gone: signal the call's reaper (its own group) directly
            if call.pid is not None and not call.ended.is_set():
                with contextlib.suppress(OSError):
                    os.killpg(call.pid, signal.SIGTERM if how == "stop" else signal.SIGKILL)


_shared: CallProcesses | None = None
_shared_lock = threading.Lock()


def shared_call_processes() -> CallProcesses:
    """The process's one reaper server, for every external CPI of the process."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = CallProcesses()
        return _shared
