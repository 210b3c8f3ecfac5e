"""`snapledger`: the service's processes and a client named after BOSH's commands.

The root command and its global options; every command is registered here
explicitly from its feature module's COMMANDS (a test checks that every
command a `cli_*.py` module defines is registered). A new command: define it
with `@click.command()` in its feature's `cli_<feature>.py` and list it in
that module's COMMANDS.
"""

from __future__ import annotations

import click

from . import (cli_audit, cli_deployments, cli_job_updates, cli_replay, cli_restores, cli_retention, cli_server,
               cli_settings, cli_snapshots, cli_tasks)
from .cli_args import GlobalOptionsGroup
from .client import Client, find_ca_cert, find_credentials
from .version import VERSION

DEFAULT_URL = "https://127.0.0.1:25555"  # HTTPS by default (issue 17)


@click.group(cls=GlobalOptionsGroup)
@click.version_option(VERSION, "--version", prog_name="snapledger", message="%(prog)s %(version)s")
@click.option("--url", envvar="SNAPLEDGER_URL", default=DEFAULT_URL, show_default=True,
              help="The snapledger API (env SNAPLEDGER_URL).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--user", envvar="SNAPLEDGER_USER", help="User or API client name (env SNAPLEDGER_USER).")
@click.option("--secret", envvar="SNAPLEDGER_SECRET", help="Its secret (env SNAPLEDGER_SECRET).")
@click.option("--token", envvar="SNAPLEDGER_TOKEN", help="A bearer token (env SNAPLEDGER_TOKEN).")
@click.option("--credentials", "credentials_file", envvar="SNAPLEDGER_CREDENTIALS",
              help="Credentials file (default ./.snapledger/credentials.json, written by `serve`).")
@click.option("--ca-cert", envvar="SNAPLEDGER_CA_CERT", help="CA certificate to trust for https URLs.")
@click.option("-n", "--non-interactive", is_flag=True, help="Ask no questions (destructive acts go ahead).")
@click.option("--reconnect-for", type=click.FloatRange(min=0), default=120.0, show_default=True, metavar="SECONDS",
              help="While following a task, how long to retry an unavailable service before giving up (exit 3).")
@click.pass_context
def main(ctx: click.Context, url: str, as_json: bool, user: str | None, secret: str | None, token: str | None,
         credentials_file: str | None, ca_cert: str | None, non_interactive: bool, reconnect_for: float) -> None:
    """snapledger: an event-sourced ledger for persistent-disk snapshots.

    Global options (--json, -n, --url, ...) may also follow the command:
    `snapledger snapshots -d prod --json`. Exit codes: 0 done, 1 refused or the
    task failed, 2 bad usage, 3 lost contact while following (the task goes on),
    130 interrupted while following (the task goes on)."""
    authorization = find_credentials(user, secret, token, credentials_file)
    client = Client(url, authorization=authorization, cafile=find_ca_cert(ca_cert, credentials_file))
    ctx.obj = {"client": client, "json": as_json, "non_interactive": non_interactive, "reconnect_for": reconnect_for}


@click.command()
def version() -> None:
    """Print snapledger's version (as `snapledger --version`)."""
    click.echo(f"snapledger {VERSION}")


COMMANDS: tuple[click.Command, ...] = (
    version, *cli_server.COMMANDS, *cli_settings.COMMANDS, *cli_deployments.COMMANDS, *cli_snapshots.COMMANDS,
    *cli_tasks.COMMANDS, *cli_retention.COMMANDS, *cli_audit.COMMANDS, *cli_replay.COMMANDS,
    *cli_job_updates.COMMANDS, *cli_restores.COMMANDS,
)
for _command in COMMANDS:
    main.add_command(_command)

if __name__ == "__main__":  # pragma: no cover
    main()
