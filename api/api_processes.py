"""Several API processes on one port (`api.processes`, `--processes N`; decision 37).

A parent starts N children (multiprocessing, spawn: each a fresh interpreter
built by `bootstrap(config, {"api"})`, exactly what one API process is: TLS,
the bosh CLI dialect, /metrics). Each child binds the port itself with
SO_REUSEPORT, and the kernel spreads new connections over them. The parent
serves nothing; it forwards SIGTERM/SIGINT to the children and waits for their
graceful stop, and when a child dies unasked it stops the others and exits
non-zero: it restarts nothing itself, the operator's supervisor (systemd
`Restart=on-failure`) restarts the whole unit. For `serve`, the parent also
runs the other roles (worker, projector, scheduler): only the API multiplies.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from types import FrameType
from typing import TYPE_CHECKING

from .startup import CONFIG_REFUSED, StartupError, bind_listener, build_or_refuse, check_data_dir, tls_context
from snapledger.domain.log import Log

if TYPE_CHECKING:
    from snapledger.adapters.bootstrap import Runtime
    from multiprocessing.process import BaseProcess

    from snapledger.adapters.config import Config

STOP_TIMEOUT_S = 60.0  # a child finishing its requests (aiohttp's shutdown timeout, the units' TimeoutStopSec)
READY = "ready"


@dataclass
class Child:
    number: int  # 1..N: in its log lines (`api_process`) and its metrics port (metrics.port + number)
    process: BaseProcess
    ready: Connection | None  # until the child said it serves

    @property
    def pid(self) -> int:
        assert self.process.pid is not None  # started
        return self.process.pid


def refuse_unsupported(config: Config) -> None:
    """Several API processes need PostgreSQL: SQLite has one writer (its lock would
    queue the processes' group commits one behind another), and the embedded store
    wakes its readers in-process only."""
    if not config.database_url.startswith(("postgresql://", "postgres://")):
        raise StartupError(f"api.processes is {config.api_processes}: several API processes need PostgreSQL "
                           "(SQLite has one writer); use api.processes: 1 with SQLite", CONFIG_REFUSED)


def run_api_processes(config: Config, roles: frozenset[str]) -> int:
    """Check what can refuse the start once, in the parent (one line, before any
    child starts), build the parent's own roles (`serve`: all but the API), then
    supervise. Returns the exit code."""
    import structlog

    from snapledger.adapters.bootstrap import bootstrap
    from snapledger.adapters.store import parse_store_url

    refuse_unsupported(config)
    check_data_dir(config.data_dir)
    ssl_context = tls_context(config)  # our own CA is made here, once, before the children read it
    bind_listener(config.host, config.port).close()  # a taken port refuses the start here, not in N children
    if config.director_port is not None:
        bind_listener(config.host, config.director_port, "the bosh Director dialect").close()
    own_roles = roles - {"api"}
    label = parse_store_url(config.database_url).label
    runtime = build_or_refuse(lambda: bootstrap(config, own_roles), label) if own_roles else None
    log = structlog.get_logger("snapledger").bind(component="api-processes")
    log.info("starting", store=label, data_dir=str(config.data_dir.resolve()), processes=config.api_processes,
             listen=f"{config.host}:{config.port}", scheme="https" if ssl_context else "http (--plain-http)",
             roles=",".join(sorted(own_roles)) or None)
    if runtime is not None and config.metrics_port:
        from snapledger.adapters.metrics import serve_metrics

        serve_metrics(config.metrics_port)  # the parent's roles; the API processes' on metrics.port + n
    return Supervisor(config, log).run(runtime)


class Supervisor:
    """Starts the children, watches them and the stop signals, stops them."""

    def __init__(self, config: Config, log: Log) -> None:
        self.config, self.log = config, log
        self.children: list[Child] = []
        self.stop_requested = False
        self.wake_r, self.wake_w = os.pipe()  # a signal wakes the wait (signal.set_wakeup_fd)
        os.set_blocking(self.wake_w, False)

    def run(self, runtime: Runtime | None) -> int:
        self._handle_signals()
        try:
            if runtime is not None:
                runtime.start()
            code = self._start_children()
            if code is None:
                self.log.info("api processes ready", processes=len(self.children),
                              pids=[child.pid for child in self.children])
                notify_ready(f"{len(self.children)} API processes")
                code = self._watch()
        finally:
            self._stop_children()
            if runtime is not None:
                runtime.close()
        return code

    def _handle_signals(self) -> None:
        def stop(signum: int, _frame: FrameType | None) -> None:
            self.stop_requested = True

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, stop)
        signal.set_wakeup_fd(self.wake_w)

    def _start_children(self) -> int | None:
        """The first child alone (it applies the declared settings and creates the
        schema; two at once would race to record the same change), then the rest.
        None when all serve; else the exit code (a stop asked for meanwhile: 0)."""
        code = self._await_ready([self._start(1)])
        if code is not None:
            return code
        return self._await_ready([self._start(n) for n in range(2, self.config.api_processes + 1)])

    def _start(self, number: int) -> Child:
        context = multiprocessing.get_context("spawn")
        reader, writer = context.Pipe(duplex=False)
        process = context.Process(target=child_main, args=(self.config, number, writer, os.getpid()),
                                  name=f"snapledger-api-{number}")
        process.start()
        writer.close()
        child = Child(number, process, reader)
        self.children.append(child)
        self.log.info("api process started", api_process=number, pid=child.pid)
        return child

    def _await_ready(self, starting: list[Child]) -> int | None:
        pending = {child.ready: child for child in starting if child.ready is not None}
        while pending:
            woken = wait([self.wake_r, *pending, *(child.process.sentinel for child in self.children)])
            if self.stop_requested or self.wake_r in woken:
                return 0
            dead = self._dead(woken)
            if dead is not None:  # it said why on stderr (a start-up refusal is one line)
                code = dead.process.exitcode
                self.log.error("api process exited before serving; stopping the others", api_process=dead.number,
                               pid=dead.pid, exit=describe_exit(code))
                return code if code is not None and code > 0 else 1
            for conn in [conn for conn in pending if conn in woken]:
                child = pending.pop(conn)
                try:
                    conn.recv()
                except EOFError:
                    continue  # it is dying: its sentinel says so next
                child.ready = None
        return None

    def _watch(self) -> int:
        while True:
            woken = wait([self.wake_r, *(child.process.sentinel for child in self.children)])
            # The wake-up byte is written when the signal arrives, before any child could
            # have stopped for it: a stop of the whole unit (all processes signalled) is a stop.
            if self.stop_requested or self.wake_r in woken:
                return 0
            dead = self._dead(woken)
            if dead is not None:
                self.log.error("api process exited unexpectedly; stopping the others (the supervisor restarts "
                               "the unit)", api_process=dead.number, pid=dead.pid,
                               exit=describe_exit(dead.process.exitcode))
                return 1

    def _dead(self, woken: Sequence[object]) -> Child | None:
        dead = next((child for child in self.children if child.process.sentinel in woken), None)
        if dead is not None:
            dead.process.join()  # its pipe closes as it exits, a moment before it can be reaped
        return dead

    def _stop_children(self) -> None:
        alive = [child for child in self.children if child.process.is_alive()]
        for child in alive:
            os.kill(child.pid, signal.SIGTERM)
        for child in alive:
            child.process.join(STOP_TIMEOUT_S)
            if child.process.is_alive():
                self.log.warning("api process did not stop in time; killed", api_process=child.number,
                                 pid=child.pid)
                child.process.kill()
                child.process.join()
        if self.children:
            self.log.info("api processes stopped", processes=len(self.children))


def describe_exit(code: int | None) -> str:
    if code is None:
        return "running"
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


def notify_ready(status: str) -> None:
    """systemd's readiness protocol (`Type=notify`), when the service manager asked
    for it: READY=1 once every API process serves."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(f"READY=1\nSTATUS={status}\n".encode())


# The child -----------------------------------------------------------------------------------

def child_main(config: Config, number: int, ready: Connection, parent: int) -> None:
    """One API process: what `snapledger api` is, on a SO_REUSEPORT socket."""
    from click import echo

    from snapledger.adapters.logging import configure_logging

    os.setpgrp()  # a terminal's Ctrl-C reaches the parent only, which stops the children in order
    die_with_parent(parent)
    configure_logging(config.log_format, config.log_level, fields={"api_process": number, "pid": os.getpid()})
    try:
        serve_child(config, number, ready)
    except StartupError as error:
        echo(f"Error: api process {number}: {error.message}", err=True)
        sys.exit(error.exit_code)


def die_with_parent(parent: int) -> None:
    """SIGTERM this child when the parent dies, even by SIGKILL (Linux; no orphans
    left serving the port)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before we asked
        os.kill(os.getpid(), signal.SIGTERM)


def stop_once() -> None:
    """Replace aiohttp's stop handlers with ones that act once: a unit stopped by
    signalling every process (systemd's default KillMode) also has the parent
    forward its SIGTERM, and a second GracefulExit raised inside the graceful
    stop would cut it short."""
    import asyncio

    from aiohttp import web

    loop = asyncio.get_running_loop()

    def stop() -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_IGN)
        raise web.GracefulExit()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)


def serve_child(config: Config, number: int, ready: Connection) -> None:
    from aiohttp import web

    from snapledger.adapters.bootstrap import bootstrap
    from snapledger.adapters.store import parse_store_url

    from .app import create_app
    from .director_serving import serve_director_dialect

    ssl_context = tls_context(config)
    sock = bind_listener(config.host, config.port, reuse_port=True)
    runtime = build_or_refuse(lambda: bootstrap(config, {"api"}), parse_store_url(config.database_url).label)
    app = create_app(runtime)
    serve_director_dialect(app, runtime, ssl_context)
    if config.metrics_port:
        from snapledger.adapters.metrics import serve_metrics

        serve_metrics(config.metrics_port + number)  # this process's own figures (decision 37)

    async def announce(_app: web.Application) -> None:  # after every start-up step of the app
        stop_once()
        runtime.log.info("api process serving", listen=f"{config.host}:{config.port}")
        ready.send(READY)
        ready.close()

    app.on_startup.append(announce)
    web.run_app(app, sock=sock, print=None, ssl_context=ssl_context)
