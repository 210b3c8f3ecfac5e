"""`snapledger restore`: restore a snapshot into its disk (or a new disk) and follow the task."""

from __future__ import annotations

from typing import Any

import click

from .cli import (EVENT_TEXTS, _deployment_option, _no_wait_option, call, confirm, find_snapshot, main,
                  snapshot_lines, start_task)
from .client import Client
from .cli_job_updates import _drain_summary, _stop_summary, drain_calls


def _error(d: dict[str, Any]) -> str:
    return f"{d['error']['type']}: {d['error']['message']}"


EVENT_TEXTS.update({
    "Restore.Requested": lambda d: (f"restore of {d['snapshot_cid']} into "
                                    f"{'new disk' if d['new_disk'] else 'disk'} {d['target_disk']} requested"),
    "Restore.DrainStarted": lambda d: f"{d['instance']}: drain ({d['drain_type']}) of {', '.join(d['jobs'])}",
    "Restore.DrainCompleted": lambda d: (f"{d['instance']}: drained ({_drain_summary(d['result'])})"
                                         f"{drain_calls(d['result'])}"),
    "Restore.DrainFailed": lambda d: f"{d['instance']}: drain failed: {_error(d)}{drain_calls(d['result'])}",
    "Restore.JobStopped": lambda d: f"{d['instance']}: jobs stopped ({_stop_summary(d['result'])})",
    "Restore.StopFailed": lambda d: f"{d['instance']}: stop failed: {_error(d)}",
    "Restore.SafetySnapshotRequested": lambda d: f"safety snapshot of disk {d['disk_cid']} requested",
    "Restore.SafetySnapshotTaken": lambda d: f"safety snapshot taken: {d['snapshot_cid']}",
    "Restore.SafetySnapshotFailed": lambda d: f"safety snapshot failed: {_error(d)}",
    "Restore.CpiCallStarted": lambda d: (f"CPI {d['method']} {d['snapshot_cid']} -> disk {d['disk_cid']} started "
                                         f"(attempt {d['attempt']})"),
    "Restore.CpiCallInDoubt": lambda d: f"restore call in doubt, repeated: {d['reason']}",
    "Restore.Restored": lambda d: f"restored {d['snapshot_cid']} into disk {d['disk_cid']}",
    "Restore.Failed": lambda d: f"restore failed ({d['step']}): {_error(d)}",
    "NewDisk.Claimed": lambda d: f"new disk {d['disk_cid']} claimed for this restore",
    "Deployment.DiskRestored": lambda d: f"new disk {d['disk_cid']} recorded in the deployment",
})


@main.command("restore")
@_deployment_option
@click.argument("cid")
@click.option("--to-new-disk", "to_new_disk", metavar="NAME",
              help="Restore into a new disk NAME (must not exist) instead of the snapshot's own disk.")
@_no_wait_option
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
