"""CLI: `snapledger cancel-task N`, as `bosh cancel-task N` (issue 17)."""

from __future__ import annotations

import click

from .cli import call, emit, main


@main.command("cancel-task")
@click.argument("task_id")
@click.pass_context
def cancel_task(ctx: click.Context, task_id: str) -> None:
    """Cancel a queued or running task (by number or id): snapshots whose CPI call
    has not started are not taken; a call already running ends with its outcome."""
    task = call(lambda: ctx.obj["client"].request("POST", f"/tasks/{task_id}/cancel"))
    emit(ctx, task, lambda t: f"Task {t.get('number') or t['id']} {t['state']}: cancel requested")
