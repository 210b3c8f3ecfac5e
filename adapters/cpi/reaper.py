"""Run one CPI process and leave nothing of it behind: `python -I -S reaper.py EXECUTABLE`,
or, once per snapledger process, `reaper.py --serve FD`: a fork of this per call (below).

Why a process between snapledger and the CPI: a CPI may start helpers that
outlive it. One that keeps the CPI's stdout open made snapledger wait for EOF
and discard the CPI's answer; one that calls setsid() leaves the process
group, so killing the group missed it. This reaper is a *child subreaper*
(Linux prctl PR_SET_CHILD_SUBREAPER): every orphan of the CPI's process tree,
setsid() or not, becomes its child instead of init's. When the CPI exits (or
snapledger sends SIGTERM: its time-out), the reaper kills the CPI's process
group and then every process left below it, reaps them, and exits as the CPI
did (same exit code, or killed by the same signal). The pipes close when the
last holder is gone, so snapledger reads the answer as the CPI left it.

The limit (no cgroups): a process that leaves the tree other than as an
orphan, e.g. started by another service (systemd-run, at, a daemon over a
socket), is not a descendant and is not found; neither are processes left
when the reaper itself is SIGKILLed. Linux only.

Standard library only, no site (-S): it starts in milliseconds. The CPI gets
the environment this process was started with, read from /proc/self/environ
(the interpreter may add LC_CTYPE to os.environ: PEP 538).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import signal
import socket
import sys
import time
from typing import NoReturn

PR_SET_CHILD_SUBREAPER = 36
EXEC_FAILED = 127
EXEC_FAILED_MARKER = "snapledger-reaper: cannot execute"
MISSED_START = 125  # with MISSED_START_MARKER on stderr: the CPI was never started
MISSED_START_MARKER = "snapledger-reaper: missed its start window"


class Stop(Exception):
    """SIGTERM from snapledger: the call timed out."""


def _stop(_signum: int, _frame: object) -> None:
    raise Stop


def environment_at_exec() -> dict[bytes, bytes]:
    try:
        with open("/proc/self/environ", "rb") as environ:
            raw = environ.read()
    except OSError:
        return {k.encode(): v.encode() for k, v in os.environ.items()}
    pairs = (item.partition(b"=") for item in raw.split(b"\0") if item)
    return {key: value for key, _, value in pairs}


def children() -> list[int]:
    """This process's children (orphans of the CPI's tree included), from /proc."""
    me = os.getpid()
    try:  # the kernel's own list (CONFIG_PROC_CHILDREN); single-threaded, so one task
        with open(f"/proc/{me}/task/{me}/children", "rb") as f:
            return [int(pid) for pid in f.read().split()]
    except OSError:
        pass
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if int(fields[1]) == me:
            found.append(int(name))
    return found


def kill_everything(cpi: int) -> None:
    """The CPI's group at once, then whatever is left below this process, until nothing is.

    Each round kills every child and then *waits* for one to end: a killed
    process's own orphans become ours only once it is gone, and on a loaded
    host that takes a while (a bounded busy loop gave up first, and the
    orphans then outlived the call under init)."""
    with contextlib.suppress(OSError):  # the group may be empty
        os.killpg(cpi, signal.SIGKILL)
    while True:
        for pid in children():
            with contextlib.suppress(OSError):  # gone meanwhile
                os.kill(pid, signal.SIGKILL)
        try:
            os.waitpid(-1, 0)  # SIGKILLed: it ends; SIGTERM is ignored by now, nothing interrupts this
        except ChildProcessError:
            return  # nothing left below this process


def spawn(executable: str, env: dict[bytes, bytes]) -> int:
    """The CPI in a process group of its own (killed at once, without this process),
    SIGTERM at its default and unblocked (the mask survives exec). posix_spawn, not
    fork: no copy of this interpreter's pages, so it starts in well under a
    millisecond, on time at a rate-limit slot. An exec that fails is reported as a
    CPI that cannot be executed (exit code 127 and the marker on stderr)."""
    try:
        return os.posix_spawn(executable, [executable], env, setpgroup=0,
                              setsigdef=[signal.SIGTERM], setsigmask=[])
    except OSError as error:
        # os.write and os._exit: this also runs in a child forked by the server,
        # whose sys.stderr object and exit handlers are the server's.
        os.write(2, f"{EXEC_FAILED_MARKER} {executable}: {type(error).__name__}: {error}\n".encode())
        os._exit(EXEC_FAILED)


def reap(executable: str, env: dict[bytes, bytes], libc: ctypes.CDLL,
         start_at: float | None = None, start_by: float | None = None) -> NoReturn:
    """Run the CPI as this process's only child (at `start_at`, by `start_by`: time.monotonic()
    deadlines, when given), kill what it leaves, exit as it did."""
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        os.write(2, f"snapledger-reaper: prctl failed (errno {ctypes.get_errno()}); "
                    "processes that leave the group may outlive the call\n".encode())
    signal.signal(signal.SIGTERM, _stop)
    if start_at is not None:
        _wait_until(start_at)
    if start_by is not None and (late := time.monotonic() - start_by) > 0:
        os.write(2, f"{MISSED_START_MARKER} by {late:.6f}s\n".encode())
        os._exit(MISSED_START)
    # A time-out while the CPI is being started waits until it is: its pid is
    # known then, so it and what it starts are killed, not left running.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    cpi = spawn(executable, env)
    status = None
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        _, status = os.waitpid(cpi, 0)
    except Stop:
        pass
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # nothing interrupts the clean-up
    kill_everything(cpi)
    if status is None:  # timed out: reaped by kill_everything
        status = 9  # as if SIGKILLed, like the CPI
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        if signum not in (signal.SIGKILL, signal.SIGSTOP):  # those two cannot be caught anyway
            signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


def _wait_until(deadline: float) -> None:
    """Sleep until `deadline`; stopped meanwhile (timed out before its start), the
    call ends as if killed, its CPI never started."""
    try:
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(left)
    except Stop:
        os._exit(128 + signal.SIGTERM)


# --- server mode: one long-lived reaper forks a per-call reaper ----------------------------------
#
# Why: starting this file per call costs an interpreter start-up (~30 ms of CPU
# here): at an IaaS limit of 100 calls/s that alone is 1.5 cores, and it was
# what bounded the rate-limited benchmark on 2 cores. `--serve FD` starts once
# per snapledger process; for each call it forks itself (~1 ms: a small,
# single-threaded interpreter with everything already imported) and the child
# is exactly the per-call reaper above, a subreaper of its own session.
#
# Protocol, on the SOCK_SEQPACKET socket FD (one JSON message per datagram):
#   -> {"id": N, "executable": PATH, "env": {K: V}, "start_at": T, "start_by": T2}
#                                                      + SCM_RIGHTS: stdin, stdout, stderr
#   <- {"id": N, "pid": PID, "ahead_s": S}             forked (or {"id": N, "error": TEXT})
#   -> {"id": N, "signal": "stop" | "kill"}            time-out: SIGTERM the reaper / SIGKILL its group
#   <- {"id": N, "status": WAIT_STATUS}                the call's reaper ended (reaped here)
# `start_at` and `start_by` (optional) are time.monotonic() deadlines, the
# call's rate-limit slot and how late it may still start: the call's reaper is
# forked at once and starts the CPI at `start_at`, not before; past `start_by`
# it never starts it and exits MISSED_START (the caller takes a new slot), so
# the IaaS never sees a call start outside the limiter's schedule (`ahead_s`:
# how long before `start_at` the request arrived, negative when late).
# Why the wait is here, in a process of its own, and not in the calling thread
# or this server's loop: the calling thread needs its worker's GIL to wake and
# send, and this server forks one call at a time; on a busy host either took up
# to 0.3 s, and calls the limiter had spaced out reached the IaaS in bunches
# (118 in one second against a limit of 100 + 5). A sleeping process that wakes
# at its deadline and starts the CPI with posix_spawn is on time.
# End of file on the socket (snapledger is gone): the server exits; calls in
# progress finish on their own, each reaper still cleaning up after its CPI.


def serve(fd: int) -> None:
    server = _Server(socket.socket(fileno=fd))
    while True:
        readable, _, _ = select.select([server.sock.fileno(), server.wake_r], [], [])
        if server.wake_r in readable:
            server.drain_wake_ups()
        server.reap_finished()
        if server.sock.fileno() in readable:
            server.receive()


class _Server:
    """The reaper server's state: its socket, and the running calls' reapers by call id."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.libc = ctypes.CDLL(None, use_errno=True)  # loaded once: forked children have it
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)  # a handler, so the wake-up fd hears it
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # ends with its socket, not with a terminal's ^C
        self.running: dict[int, int] = {}  # call id -> pid of its reaper, until reaped

    def send(self, message: dict[str, object]) -> None:
        with contextlib.suppress(OSError):  # snapledger gone: nobody to tell
            self.sock.send(json.dumps(message).encode())

    def drain_wake_ups(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self.wake_r, 512):
                pass

    def reap_finished(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            for call, child in list(self.running.items()):
                if child == pid:
                    del self.running[call]
                    self.send({"id": call, "status": status})

    def receive(self) -> None:
        message, ancillary, _flags, _ = self.sock.recvmsg(1 << 20, socket.CMSG_SPACE(3 * 4))
        if not message:
            os._exit(0)  # snapledger is gone
        fds = [fd for level, kind, data in ancillary
               if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS
               for fd in memoryview(data).cast("i")]
        request = json.loads(message)
        if "signal" in request:
            self.signal_call(request)
        elif len(fds) == 3:
            self.start(request, fds)
        else:
            self.send({"id": request.get("id"), "error": f"expected 3 file descriptors, got {len(fds)}"})
        for fd in fds:
            os.close(fd)  # the child has its copies

    def start(self, request: dict[str, object], fds: list[int]) -> None:
        call = int(str(request["id"]))
        given = request["env"]
        env = {str(k).encode(): str(v).encode() for k, v in given.items()} if isinstance(given, dict) else {}
        start_at, start_by = (float(t) if isinstance(t := request.get(key), (int, float)) else None
                              for key in ("start_at", "start_by"))
        try:
            pid = os.fork()
        except OSError as error:
            self.send({"id": call, "error": f"fork: {error}"})
            return
        if pid == 0:
            _become_call_reaper(fds, [self.sock.fileno(), self.wake_r, self.wake_w])
            reap(str(request["executable"]), env, self.libc, start_at, start_by)
        self.running[call] = pid
        reply: dict[str, object] = {"id": call, "pid": pid}
        if start_at is not None:
            reply["ahead_s"] = round(start_at - time.monotonic(), 6)
        self.send(reply)

    def signal_call(self, request: dict[str, object]) -> None:
        pid = self.running.get(int(str(request["id"])))
        if pid is None:
            return  # already reaped: its status is on its way
        with contextlib.suppress(OSError):
            if request["signal"] == "stop":
                os.kill(pid, signal.SIGTERM)
            else:
                os.killpg(pid, signal.SIGKILL)


def _become_call_reaper(fds: list[int], server_fds: list[int]) -> None:
    """In the forked child: the call's pipes as 0/1/2, nothing of the server's left."""
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.setsid()  # a session and group of its own: SIGKILL to the group reaches it
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        for fd in [*fds, *server_fds]:
            os.close(fd)
    except BaseException:
        os._exit(EXEC_FAILED)


def main(argv: list[str]) -> None:
    if argv[1:2] == ["--serve"]:
        serve(int(argv[2]))
    reap(argv[1], environment_at_exec(), ctypes.CDLL(None, use_errno=True))


if __name__ == "__main__":
    main(sys.argv)
