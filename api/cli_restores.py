"""`snapledger restore`: restore a snapshot into its disk (or a new disk) and follow the task."""

from __future__ import annotations

import click

from .cli_args import deployment_option, no_wait_option
from .cli_output import call, confirm
from .cli_snapshots import find_snapshot, snapshot_lines
from .cli_tasks import start_task
from .client import Client


@click.command("restore")
@deployment_option
@click.argument("cid")
@click.option("--to-new-disk", "to_new_disk", metavar="NAME",
              help="Restore into a new disk NAME (must not exist) instead of the snapshot's own disk.")
@no_wait_option
@click.pass_context
def restore(ctx: click.Context, deployment: str, cid: str, to_new_disk: str | None, no_wait: bool) -> None:
    """Restore snapshot CID. In place (the default): drain and stop the instance
    owning the disk, take a safety snapshot of its current content, then restore;
    its jobs stay stopped. With --to-new-disk: into a new disk, nothing stopped.

    In place, asks first (-n does not). Waits for the task: exit 0 when restored,
    1 when refused or failed."""
    client: Client = ctx.obj["client"]
    if to_new_disk is None and not ctx.obj["non_interactive"]:
        row = find_snapshot(client, deployment, cid)
        if row is not None:  # unknown CIDs: the server's refusal says why
            instance = f"{row['job']}/{row['index'] if row['index'] is not None else '?'}"
            confirm(ctx, f"Restore {cid} in place into disk {row['disk_cid']}?", [
                f"Instance {instance} will be drained and stopped (its jobs stay stopped), a safety snapshot",
                f"of disk {row['disk_cid']} taken, and the disk's current content replaced by the snapshot:",
                *snapshot_lines([row])])
    payload = {"to_new_disk": to_new_disk} if to_new_disk is not None else None
    accepted = call(lambda: client.request("POST", f"/deployments/{deployment}/snapshots/{cid}/restore", payload))
    start_task(ctx, client, accepted, no_wait)


COMMANDS: tuple[click.Command, ...] = (restore,)
