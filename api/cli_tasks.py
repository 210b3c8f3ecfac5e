"""CLI: following a task to its end (every command that starts one), `tasks` and `task`."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from .cli_output import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_LOST, SCOPED_HINT, call, emit, fail, table
from .cli_progress import Progress, local_time, shorten
from .client import ApiError, Client, FollowLost


def start_task(ctx: click.Context, client: Client, accepted: dict[str, Any], no_wait: bool = False) -> None:
    """A command started a task: return at once (--no-wait) or follow it to its end."""
    if no_wait:
        emit(ctx, accepted, lambda a: f"Task {a['task_id']} started; follow it with `snapledger task {a['task_id']}`")
        return
    wait_for(ctx, client, accepted)


def wait_for(ctx: click.Context, client: Client, accepted: dict[str, Any]) -> None:
    """Follow a task to its end, one line per disk or step; exit non-zero unless it is `done`."""
    task_id = accepted["task_id"]
    label = accepted.get("number") or task_id  # the task's number, as in `bosh task N` (issue 17)
    as_json = ctx.obj["json"]
    progress = Progress()
    reattach = f"the task goes on in snapledger; re-attach with `snapledger task {task_id}`"
    told = False

    def show(event: dict[str, Any]) -> None:
        line = json.dumps(event) if as_json else progress.line(event)
        if line is not None:
            click.echo(line)

    def unavailable(error: ApiError, retry_in: float) -> None:
        nonlocal told
        if not told:  # once per outage, not once per retry
            click.echo(f"snapledger unavailable ({error.message}); {reattach}. Retrying "
                       f"(backoff from {retry_in:g} s, for up to {ctx.obj['reconnect_for']:g} s)...", err=True)
            told = True

    def back() -> None:
        nonlocal told
        click.echo(f"reconnected to snapledger; following task {task_id} again", err=True)
        told = False

    if not as_json:
        click.echo(f"Task {label}")  # a task's number where the service has them
    try:
        task = client.follow_task(task_id, show, unavailable, back, reconnect_for=ctx.obj["reconnect_for"])
    except FollowLost as lost:
        fail(f"lost contact with snapledger for {lost.waited_s:.0f} s ({lost.error.message}); {reattach}",
             EXIT_LOST)
    except ApiError as error:
        fail(error.message)
    except KeyboardInterrupt:
        click.echo("", err=True)
        fail(f"stopped following task {task_id}; {reattach}", EXIT_INTERRUPTED)
    finally:
        client.close()
    click.echo(json.dumps(task) if as_json else progress.summary(task))
    if not as_json and len(str(task.get("result") or "").splitlines()) > 1:
        click.echo(f"The full text of each CPI error: snapledger task {label} --cpi")
    if task["state"] != "done":
        sys.exit(EXIT_FAILED)


@click.command()
@click.option("-d", "--deployment", help="Only this deployment's tasks.")
@click.option("--state", type=click.Choice(["queued", "processing", "cancelling", "done", "error", "cancelled"]))
@click.option("--limit", type=int, default=30, show_default=True)
@click.option("--in-doubt", "in_doubt", is_flag=True, help="Only tasks with in-doubt CPI calls.")
@click.pass_context
def tasks(ctx: click.Context, deployment: str | None, state: str | None, limit: int, in_doubt: bool) -> None:
    """List recent tasks, newest first."""
    if in_doubt:
        rows = call(lambda: ctx.obj["client"].get("/tasks", in_doubt="true"))
        emit(ctx, rows, lambda rs: table(
            ["Task", "State", "Deployment", "Operation", "Disk", "Method", "Worker", "Since"],
            [[r["id"], r["state"], op["deployment"], op["operation_id"], op["disk_cid"], op["method"],
              op["worker"], op["since"]] for r in rs for op in r["in_doubt"]],
            f"{sum(len(r['in_doubt']) for r in rs)} in-doubt CPI calls (look for IaaS snapshots tagged "
            "snapledger_operation_id=<Operation>)"))
        return
    rows = call(lambda: ctx.obj["client"].get("/tasks", deployment=deployment, state=state, limit=limit),
                None if deployment else SCOPED_HINT)
    emit(ctx, rows, lambda rs: table(
        ["ID", "State", "Started At", "Finished At", "User", "Deployment", "Description", "Result"],
        [[r.get("number") or r["id"], r["state"], local_time(r["started_at"], with_date=True),
          local_time(r["finished_at"], with_date=True), r["user"] or "-", r["deployment"] or "-",
          shorten(r["description"], TASKS_TEXT_WIDTH), shorten(r["result"], TASKS_TEXT_WIDTH)] for r in rs],
        f"{len(rs)} tasks (results shortened; `snapledger task ID` shows one in full)"))


TASKS_TEXT_WIDTH = 60  # a result listing a deployment's CIDs would make every row a page wide


@click.command()
@click.argument("task_id", required=False)
@click.option("-d", "--deployment", help="Without TASK_ID: the latest task of this deployment.")
@click.option("--cpi", "cpi_log", is_flag=True, help="Show the task's CPI calls with their log and stderr.")
@click.pass_context
def task(ctx: click.Context, task_id: str | None, deployment: str | None, cpi_log: bool) -> None:
    """Show one task (the latest without TASK_ID) and its steps; follows it while it runs."""
    client: Client = ctx.obj["client"]
    if task_id is None:
        latest = call(lambda: client.get("/tasks", limit=1, deployment=deployment),
                      None if deployment else SCOPED_HINT)
        if not latest:
            fail("no tasks yet")
        task_id = latest[0]["id"]
    if cpi_log:
        entries = call(lambda: client.get(f"/tasks/{task_id}/cpi-log"))
        emit(ctx, entries, describe_cpi_log)
        return
    wait_for(ctx, client, {"task_id": task_id})


def describe_cpi_log(entries: list[dict[str, Any]]) -> str:
    lines = []
    for e in entries:
        answer = (f"error {e['error']['type']}: {e['error']['message']}" if e.get("error")
                  else f"ok {e['snapshot_cid'] or ''}".rstrip())
        lines.append(f"{e['time']} {e['cpi']} {e['method']} request {e['request_id'] or '-'} "
                     f"({e['duration_s']} s): {answer}")
        lines.extend(f"    {name}: {line}" for name in ("log", "stderr") for line in (e.get(name) or "").splitlines())
    return "\n".join(lines) or "no CPI calls"


@click.command("cancel-task")
@click.argument("task_id")
@click.pass_context
def cancel_task(ctx: click.Context, task_id: str) -> None:
    """Cancel a queued or running task (by number or id): snapshots whose CPI call
    has not started are not taken; a call already running ends with its outcome."""
    row = call(lambda: ctx.obj["client"].request("POST", f"/tasks/{task_id}/cancel"))
    emit(ctx, row, lambda t: f"Task {t.get('number') or t['id']} {t['state']}: cancel requested")


COMMANDS: tuple[click.Command, ...] = (tasks, task, cancel_task)
