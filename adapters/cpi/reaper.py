"""Run one CPI process and leave nothing of it behind: `python -I -S reaper.py EXECUTABLE`.

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
import os
import signal
import sys

PR_SET_CHILD_SUBREAPER = 36
EXEC_FAILED = 127
EXEC_FAILED_MARKER = "snapledger-reaper: cannot execute"


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
    read_end, write_end = os.pipe()  # close-on-exec: EOF at once when exec succeeds
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            os.setpgid(0, 0)  # its own group: killed at once, without this process
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})  # the mask survives exec
            os.execve(executable, [executable], env)
        except BaseException as error:  # report to the parent, always exit
            try:
                os.write(write_end, f"{type(error).__name__}: {error}".encode())
            finally:
                os._exit(EXEC_FAILED)
    os.close(write_end)
    failure = os.read(read_end, 4096)
    os.close(read_end)
    if failure:
        os.waitpid(pid, 0)
        sys.stderr.write(f"{EXEC_FAILED_MARKER} {executable}: {failure.decode(errors='replace')}\n")
        sys.exit(EXEC_FAILED)
    return pid


def main(argv: list[str]) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        sys.stderr.write(f"snapledger-reaper: prctl failed (errno {ctypes.get_errno()}); "
                         "processes that leave the group may outlive the call\n")
    signal.signal(signal.SIGTERM, _stop)
    # A time-out while the CPI is being started waits until it is: its pid is
    # known then, so it and what it starts are killed, not left running.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    cpi = spawn(argv[1], environment_at_exec())
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
    sys.stdout.flush()
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        if signum not in (signal.SIGKILL, signal.SIGSTOP):  # those two cannot be caught anyway
            signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


if __name__ == "__main__":
    main(sys.argv)
