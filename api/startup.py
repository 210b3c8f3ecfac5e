"""Start-up refusals: each one line on stderr and a non-zero exit, never a traceback.

Exit codes (README "Start-up failures"): 2 when the configuration is refused
(the file, a key, a value, the TLS files), 1 when this machine refuses the
start (the port is taken, the data directory is not writable, the database
is unreachable). A database unreachable at start is not retried here: the
process exits once libpq gives up, and its supervisor (systemd
`Restart=on-failure`) starts it again; once running, outages are ridden out
without a restart (decision 13). docs/decisions.md #24.
"""

from __future__ import annotations

import socket
import sqlite3
import ssl
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:  # the type only: start-up stays light until a check needs more
    from snapledger.adapters.config import Config

CONFIG_REFUSED = 2
START_REFUSED = 1


class StartupError(Exception):
    def __init__(self, message: str, exit_code: int = START_REFUSED) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def _reason(error: BaseException) -> str:
    """The first line of what went wrong, without the errno noise."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def check_data_dir(path: Path) -> None:
    """The data directory exists (created if need be) and this process may write in it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
            pass
    except OSError as error:
        raise StartupError(f"data directory {path} is not writable: {_reason(error)}") from None


def bind_listener(host: str, port: int, what: str = "the API", reuse_port: bool = False) -> socket.socket:
    """Bind before anything else starts, so a taken port refuses the start at once
    (the server then serves on this very socket: no race). `reuse_port`: one of
    several API processes on the port (SO_REUSEPORT: the kernel spreads the
    connections over them, decision 37)."""
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(info[0], socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp does: TIME_WAIT is no conflict
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(info[4])
        sock.listen(128)
    except OSError as error:
        raise StartupError(f"cannot listen on {host}:{port} for {what}: {_reason(error)}") from None
    return sock


def tls_context(config: Config) -> ssl.SSLContext | None:
    """HTTPS unless plain HTTP was asked for: the given certificate, else our
    own CA's (adapters/tls.py, issue 17). Bad files refuse the start in one line."""
    cert, key = config.tls_cert, config.tls_key
    if (cert or key) and not (cert and key):
        raise StartupError("TLS needs both tls.cert and tls.key (--tls-cert, --tls-key)", CONFIG_REFUSED)
    if config.tls_plain_http:
        if cert:
            raise StartupError("--plain-http and --tls-cert/--tls-key exclude each other", CONFIG_REFUSED)
        return None  # the "starting" line says so
    if not cert:
        from snapledger.adapters.tls import default_names, ensure_certificate

        own = ensure_certificate(config.data_dir, default_names(config.host, config.tls_names))
        cert, key = str(own.cert), str(own.key)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as error:
        reason = ("not a PEM certificate with its matching private key" if isinstance(error, ssl.SSLError)
                  else _reason(error))
        raise StartupError(f"TLS: cannot load certificate {cert} with key {key}: {reason}",
                           CONFIG_REFUSED) from None
    return context


def store_unreachable(error: BaseException, label: str) -> StartupError | None:
    """A StartupError when `error` means the database cannot be reached (None otherwise)."""
    import psycopg
    import psycopg_pool
    from eventsourcing import persistence

    kinds: tuple[type[BaseException], ...] = (psycopg.OperationalError, psycopg_pool.PoolTimeout,
                                              persistence.OperationalError, persistence.InterfaceError,
                                              sqlite3.OperationalError)
    if not isinstance(error, kinds):
        return None
    return StartupError(f"the database is unreachable at start ({label}): {_reason(error)}")


Built = TypeVar("Built")


def build_or_refuse(build: Callable[[], Built], label: str) -> Built:
    """Run `build` (the runtime's construction); a database that cannot be reached
    or a file that cannot be created becomes a StartupError."""
    try:
        return build()
    except StartupError:
        raise
    except Exception as error:
        refused = store_unreachable(error, label)
        if refused is not None:
            raise refused from None
        if isinstance(error, OSError):  # e.g. a CPI's disk_root that cannot be created
            where = f"{error.filename}: " if error.filename else ""
            raise StartupError(f"cannot start: {where}{_reason(error)}") from None
        raise
