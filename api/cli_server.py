"""CLI: the service's processes (`serve`, `api`, `worker`, `projector`, `scheduler`) and `hash-secret`."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .cli_output import fail

if TYPE_CHECKING:
    from snapledger.adapters.bootstrap import Runtime

if TYPE_CHECKING:  # imported when a server starts, not for every client command
    from snapledger.adapters.config import Config


def server_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="SNAPLEDGER_CONFIG",
                     help="YAML configuration file."),
        click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
                     help="Where the embedded database, disks and snapshots live (default ./.snapledger)."),
        click.option("--database", help="sqlite:///PATH or postgresql://USER@HOST:PORT/DB?schema=NAME"),
        click.option("--host", help="Bind address (default 127.0.0.1)."),
        click.option("--port", type=int, help="Port (default 25555)."),
        click.option("--tls-cert", type=click.Path(dir_okay=False, exists=True), envvar="SNAPLEDGER_TLS_CERT",
                     help="Serve HTTPS with this certificate (PEM)."),
        click.option("--tls-key", type=click.Path(dir_okay=False, exists=True), envvar="SNAPLEDGER_TLS_KEY",
                     help="The certificate's private key (PEM)."),
        click.option("--plain-http", "tls_plain_http", is_flag=True, default=None,
                     help="Serve plain HTTP (only behind a TLS proxy). Default: HTTPS with D/ca.pem."),
        click.option("--director-port", type=int,
                     help="Serve the bosh CLI's Director dialect on this port instead of the API's (decision 34)."),
        click.option("--no-director", "director_enabled", flag_value=False, default=None,
                     help="Do not answer the bosh CLI (by default the API port does, decision 34)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def load_server_config(config_path: str | None, data_dir: Path | None, database: str | None, host: str | None,
                       port: int | None, tls_cert: str | None = None, tls_key: str | None = None,
                       tls_plain_http: bool | None = None, director_port: int | None = None,
                       director_enabled: bool | None = None, api_processes: int | None = None) -> Config:
    from snapledger.adapters.config import ConfigError, load_config
    from snapledger.adapters.logging import configure_logging

    try:
        overrides: dict[str, Any] = {"tls_plain_http": tls_plain_http, "director_port": director_port,
                                     "director_enabled": director_enabled, "api_processes": api_processes}
        config = load_config(config_path, data_dir=data_dir, database=database, host=host, port=port,
                             tls_cert=tls_cert, tls_key=tls_key,
                             **{k: v for k, v in overrides.items() if v is not None})
    except ConfigError as error:
        fail(str(error), 2)
    configure_logging(config.log_format, config.log_level)
    return config


def _run_server(roles: set[str], **options: Any) -> None:
    from .startup import StartupError

    try:
        _start_server(roles, **options)
    except StartupError as error:
        fail(error.message, error.exit_code)


def _start_server(roles: set[str], **options: Any) -> None:
    """Check what can refuse the start before starting anything: the data
    directory, the TLS files, the port; then the database (api/startup.py)."""
    from aiohttp import web

    from snapledger.adapters.store import parse_store_url
    from snapledger.adapters.bootstrap import bootstrap

    from .app import create_app
    from .startup import bind_listener, build_or_refuse, check_data_dir, tls_context

    config = load_server_config(**options)
    if "api" in roles and config.api_processes > 1:
        from .api_processes import run_api_processes

        code = run_api_processes(config, frozenset(roles))
        if code:
            sys.exit(code)
        return
    check_data_dir(config.data_dir)
    ssl_context = tls_context(config) if "api" in roles else None
    sock = bind_listener(config.host, config.port) if "api" in roles else None
    if config.metrics_port and "api" not in roles:  # refuse a taken port in one line, before starting
        bind_listener("0.0.0.0", config.metrics_port, "metrics").close()
    label = parse_store_url(config.database_url).label
    runtime = build_or_refuse(lambda: bootstrap(config, roles), label)
    runtime.log.info("starting", store=runtime.url.label, data_dir=str(config.data_dir.resolve()),
                     listen=f"{config.host}:{config.port}" if "api" in roles else None,
                     scheme=None if "api" not in roles else ("https" if ssl_context else "http (--plain-http)"),
                     ca=str((config.data_dir / "ca.pem").resolve()) if ssl_context and not config.tls_cert else None)
    if "api" in roles:
        app = create_app(runtime)
        from .director_serving import serve_director_dialect

        serve_director_dialect(app, runtime, ssl_context)
        web.run_app(app, sock=sock, print=None, ssl_context=ssl_context)
        return
    if config.metrics_port:
        from snapledger.adapters.metrics import serve_metrics

        serve_metrics(config.metrics_port)
    run_until_signalled(runtime)



def run_until_signalled(runtime: Runtime) -> None:
    """A process without the API: start its background roles, run them until
    SIGINT or SIGTERM, then close (the roles stop in reverse order)."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    runtime.start()
    stop.wait()
    runtime.close()

@click.command("hash-secret")
@click.option("--secret", prompt=True, hide_input=True, confirmation_prompt=True)
def hash_secret_command(secret: str) -> None:
    """Print the argon2 hash of a secret, for `auth.users` in the configuration."""
    from .auth import hash_secret

    click.echo(hash_secret(secret))


# Each API process holds its own database connections; the configuration's bound
# (adapters/config_values.py MAX_API_PROCESSES, checked equal by tests/unit/test_config.py).
processes_option = click.option(
    "--processes", "api_processes", type=click.IntRange(1, 64),
    help="API processes on the one port (SO_REUSEPORT; PostgreSQL only; default 1, api.processes).")


@click.command()
@server_options
@processes_option
def serve(**options: Any) -> None:
    """API, worker, projector and scheduler in one process (the embedded default)."""
    _run_server({"api", "worker", "projector", "scheduler"}, **options)


@click.command()
@server_options
@processes_option
def api(**options: Any) -> None:
    """Only the HTTP API (scale out against one PostgreSQL)."""
    _run_server({"api"}, **options)


@click.command()
@server_options
def worker(**options: Any) -> None:
    """Only the worker that executes snapshot operations through the CPI."""
    _run_server({"worker"}, **options)


@click.command()
@server_options
def projector(**options: Any) -> None:
    """Only the projector that maintains the listing, task and deployment views."""
    _run_server({"projector"}, **options)


@click.command()
@server_options
def scheduler(**options: Any) -> None:
    """Only the scheduler (run as many replicas as you like: each fire is recorded once)."""
    _run_server({"scheduler"}, **options)


COMMANDS: tuple[click.Command, ...] = (hash_secret_command, serve, api, worker, projector, scheduler)
