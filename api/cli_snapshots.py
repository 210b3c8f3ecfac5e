"""CLI: snapshots: the listing, taking and deleting them (asking first)."""

from __future__ import annotations

from typing import Any

import click

from .cli_args import deployment_option, no_wait_option, split_instance
from .cli_output import call, confirm, emit, fail, table
from .cli_progress import local_time
from .cli_tasks import start_task
from .client import Client


def _instance_path(deployment: str, job: str | None, index: str | None) -> str:
    job, index = split_instance(job, index)
    if job is None:
        return f"/deployments/{deployment}"
    if index is None:
        fail("give the instance as JOB/INDEX or JOB/ID (e.g. db/0), or nothing for the whole deployment", 2)
    return f"/deployments/{deployment}/jobs/{job}/{index}"


@click.command()
@deployment_option
@click.argument("job", required=False)
@click.argument("index", required=False)
@click.option("--at", help="The listing as it was at this ISO time, e.g. 2026-11-24T07:00:00Z.")
@click.pass_context
def snapshots(ctx: click.Context, deployment: str, job: str | None, index: str | None, at: str | None) -> None:
    """List a deployment's snapshots (or one instance's), now or --at a moment."""
    client: Client = ctx.obj["client"]
    base = _instance_path(deployment, job, index) if job else f"/deployments/{deployment}"
    rows = call(lambda: client.get(f"{base}/snapshots", at=at) if at else list(client.paged(f"{base}/snapshots")))
    emit(ctx, rows, lambda rs: table(
        ["Instance", "Disk", "CID", "Created At", "Clean", "Trigger"],
        [[f"{r['job']}/{r['index'] if r['index'] is not None else '?'}", r["disk_cid"], r["snapshot_cid"],
          r["created_at"], str(r["clean"]).lower(), r["trigger"]] for r in rs],
        f"{len(rs)} snapshots"))


@click.command("take-snapshot")
@click.option("-d", "--deployment", envvar="SNAPLEDGER_DEPLOYMENT", help="Deployment name.")
@click.option("--self", "own_host", is_flag=True, help="Snapshot the disks of the host snapledger runs on.")
@click.argument("job", required=False)
@click.argument("index", required=False)
@no_wait_option
@click.pass_context
def take_snapshot(ctx: click.Context, deployment: str | None, own_host: bool, job: str | None,
                  index: str | None, no_wait: bool) -> None:
    """Snapshot every persistent disk of one instance (JOB/INDEX, JOB/ID or JOB INDEX),
    or of the whole deployment."""
    client: Client = ctx.obj["client"]
    if own_host:
        path = "/self/snapshots"
    elif deployment:
        path = f"{_instance_path(deployment, job, index)}/snapshots"
    else:
        fail("give -d DEPLOYMENT (or --self)", 2)
    accepted = call(lambda: client.request("POST", path))
    start_task(ctx, client, accepted, no_wait)


SHOWN_BEFORE_CONFIRM = 20  # a deployment's hundreds of snapshots: the first ones and a count


def snapshot_lines(rows: list[dict[str, Any]]) -> list[str]:
    lines = [f"  - {r['snapshot_cid']}  {r['job']}/{r['index'] if r['index'] is not None else '?'}  "
             f"disk {r['disk_cid']}  {local_time(r.get('created_at'), with_date=True)}  {r['trigger']}"
             for r in rows[:SHOWN_BEFORE_CONFIRM]]
    if len(rows) > SHOWN_BEFORE_CONFIRM:
        lines.append(f"  ... and {len(rows) - SHOWN_BEFORE_CONFIRM} more")
    return lines


def find_snapshot(client: Client, deployment: str, cid: str) -> dict[str, Any] | None:
    """The snapshot's row in its deployment's listing (None: let the command's own 404 say so)."""
    return next((r for r in call(lambda: list(client.paged(f"/deployments/{deployment}/snapshots")))
                 if r["snapshot_cid"] == cid), None)


@click.command("delete-snapshot")
@deployment_option
@click.argument("cid")
@no_wait_option
@click.pass_context
def delete_snapshot(ctx: click.Context, deployment: str, cid: str, no_wait: bool) -> None:
    """Delete one snapshot by its CID (asks first; -n does not)."""
    client: Client = ctx.obj["client"]
    if not ctx.obj["non_interactive"]:
        row = find_snapshot(client, deployment, cid)
        if row is not None:
            confirm(ctx, f"Delete snapshot {cid}?", ["Going away:", *snapshot_lines([row])])
    accepted = call(lambda: client.request("DELETE", f"/deployments/{deployment}/snapshots/{cid}"))
    start_task(ctx, client, accepted, no_wait)


@click.command("delete-snapshots")
@deployment_option
@no_wait_option
@click.pass_context
def delete_snapshots(ctx: click.Context, deployment: str, no_wait: bool) -> None:
    """Delete every snapshot of a deployment (asks first; -n does not)."""
    client: Client = ctx.obj["client"]
    if not ctx.obj["non_interactive"]:
        rows = call(lambda: list(client.paged(f"/deployments/{deployment}/snapshots")))
        confirm(ctx, f"Delete all {len(rows)} snapshot(s) of deployment '{deployment}'?",
                [f"Going away ({len(rows)} snapshot(s)):", *snapshot_lines(rows)])
    accepted = call(lambda: client.request("DELETE", f"/deployments/{deployment}/snapshots"))
    start_task(ctx, client, accepted, no_wait)


COMMANDS: tuple[click.Command, ...] = (snapshots, take_snapshot, delete_snapshot, delete_snapshots)
