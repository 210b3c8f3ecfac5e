"""CLI: retention policies and runs, pins."""

from __future__ import annotations

from typing import Any

import click

from .cli_args import deployment_option, no_wait_option
from .cli_output import call, emit, fail, table
from .cli_tasks import start_task


def _describe(policy: dict[str, Any]) -> str:
    managed = f", managed by {policy['managed_by']}" if policy.get("managed_by") else ""
    return f"{policy['description']} ({policy['source']} policy{managed})"


@click.command()
@click.option("-d", "--deployment", envvar="SNAPLEDGER_DEPLOYMENT", help="Deployment (omit with --default).")
@click.option("--default", "default", is_flag=True, help="The service-wide default policy.")
@click.option("--keep-last", type=click.IntRange(min=1), help="Keep the newest N snapshots of each disk.")
@click.option("--keep-for", help="Keep snapshots younger than this: 36h, 7d, 12w.")
@click.option("--keep-clean/--no-keep-clean", default=None, help="Keep the newest clean snapshot of each disk.")
@click.option("--inherit", is_flag=True, help="Drop the deployment's own policy; use the default.")
@click.option("--run", "run_now", is_flag=True, help="Apply the policy now (follows the task).")
@click.option("--dry-run", is_flag=True, help="Show what the policy would delete now; change nothing.")
@no_wait_option
@click.pass_context
def retention(ctx: click.Context, deployment: str | None, default: bool, keep_last: int | None,
              keep_for: str | None, keep_clean: bool | None, inherit: bool, run_now: bool, dry_run: bool,
              no_wait: bool) -> None:
    """Show, set or apply a retention policy (the most protective rule wins)."""
    client = ctx.obj["client"]
    if default == bool(deployment):
        fail("give -d DEPLOYMENT or --default", 2)
    base = "/config/retention" if default else f"/deployments/{deployment}/retention"
    changing = keep_last is not None or keep_for is not None or keep_clean is not None or inherit
    if changing:
        body = {"inherit": True} if inherit else {"keep_last": keep_last, "keep_for": keep_for,
                                                   "keep_clean": bool(keep_clean)}
        policy = call(lambda: client.request("PUT", base, body))
        emit(ctx, policy, _describe)
    if dry_run or run_now:
        if default:
            fail("--run and --dry-run apply to one deployment: give -d DEPLOYMENT", 2)
        if dry_run:
            plan = call(lambda: client.request("POST", f"{base}/runs", params={"dry_run": "true"}))
            emit(ctx, plan, lambda rows: table(["CID", "Disk", "Why"],
                                               [[r["snapshot_cid"], r["disk_cid"], r["reason"]] for r in rows],
                                               f"{len(rows)} snapshots would be deleted (dry run)"))
            return
        start_task(ctx, client, call(lambda: client.request("POST", f"{base}/runs")), no_wait)
        return
    if not changing:
        emit(ctx, call(lambda: client.get(base)), _describe)


@click.command()
@deployment_option
@click.argument("cid")
@click.option("--reason", required=True, help="Why (e.g. a legal hold reference).")
@click.pass_context
def pin(ctx: click.Context, deployment: str, cid: str, reason: str) -> None:
    """Pin a snapshot: never expired, never deleted, until unpinned."""
    data = call(lambda: ctx.obj["client"].request("PUT", f"/deployments/{deployment}/snapshots/{cid}/pin",
                                                  {"reason": reason}))
    emit(ctx, data, lambda d: f"{d['snapshot_cid']} pinned: {d['pinned']}")


@click.command()
@deployment_option
@click.argument("cid")
@click.pass_context
def unpin(ctx: click.Context, deployment: str, cid: str) -> None:
    """Unpin a snapshot."""
    data = call(lambda: ctx.obj["client"].request("DELETE", f"/deployments/{deployment}/snapshots/{cid}/pin"))
    emit(ctx, data, lambda d: f"{d['snapshot_cid']} unpinned")


COMMANDS: tuple[click.Command, ...] = (retention, pin, unpin)
