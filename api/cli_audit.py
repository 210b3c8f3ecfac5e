"""CLI: the audit log (`audit`) and one snapshot's life (`history`)."""

from __future__ import annotations

import functools
import json
import time
from typing import Any

import click

from .cli_args import fail_usage, split_instance
from .cli_output import SCOPED_HINT, call
from .cli_progress import describe_event


def timeline_line(e: dict[str, Any]) -> str:
    where = " ".join(x for x in (e.get("deployment"), e.get("instance"), e.get("disk_cid"),
                                 e.get("snapshot_cid")) if x)
    data = e["data"]
    detail = ""
    call_ = data.get("call") if isinstance(data.get("call"), dict) else None
    if call_:
        detail = f" {call_.get('method')} request {call_.get('request_id') or '-'} {call_.get('duration_s')} s"
    if data.get("error"):
        detail += f" {data['error'].get('type')}: {data['error'].get('message')}"
    if data.get("reason"):
        detail += f" ({data['reason']})"
    task = (f" task {e['task_number']}" if e.get("task_number") else
            f" task {e['task_id'][:8]}" if e.get("task_id") else "")
    return f"{e['position']:>8} {e['time']} {e['type']:<28} by {e['actor'] or '-'}{task}  {where}{detail}"


@click.command()
@click.option("-d", "--deployment")
@click.option("--job")
@click.option("--index", type=int)
@click.option("--instance-id")
@click.option("--instance", "slug", metavar="JOB/INDEX", help="One instance, as JOB/INDEX or JOB/ID (e.g. db/0).")
@click.option("--disk", "disk_cid")
@click.option("--snapshot", "snapshot_cid")
@click.option("--task", "task_id")
@click.option("--actor")
@click.option("--type", "type_", help="Event type(s): Snapshot, Snapshot.Taken, Task.Finished,...")
@click.option("--since", help="ISO time, e.g. 2026-11-24T07:00:00Z")
@click.option("--until", help="ISO time (exclusive)")
@click.option("--after", type=int, default=0, help="Only events after this position (the cursor).")
@click.option("--limit", type=int, default=500, show_default=True)
@click.option("--follow", "-f", is_flag=True, help="Keep streaming new events.")
@click.pass_context
def audit(ctx: click.Context, /, follow: bool, after: int, limit: int, type_: str | None, slug: str | None,
          **filters: Any) -> None:
    """The event log in order: who did what, when, to which snapshot."""
    client = ctx.obj["client"]
    if slug is not None:
        job, index_or_id = split_instance(slug if "/" in slug else fail_usage(
            f"'{slug}' is not an instance: give JOB/INDEX or JOB/ID, e.g. db/0"), None)
        filters["job"] = job
        filters["index" if str(index_or_id).isdigit() else "instance_id"] = index_or_id
    params = {k: v for k, v in filters.items() if v is not None}
    if type_:
        params["type"] = type_
    while True:
        rows = call(functools.partial(client.get, "/events", after=after, limit=limit, **params),
                    None if params.get("deployment") else SCOPED_HINT)
        for e in rows:
            click.echo(json.dumps(e) if ctx.obj["json"] else timeline_line(e))
            after = e["position"]
        if not follow:
            if not rows and not ctx.obj["json"]:
                click.echo("no events")
            return
        if len(rows) < limit:
            time.sleep(0.5)


@click.command()
@click.argument("cid")
@click.pass_context
def history(ctx: click.Context, cid: str) -> None:
    """The life of one snapshot: request, every CPI call and its answer, deletion."""
    life = call(lambda: ctx.obj["client"].get(f"/snapshots/{cid}/history"))
    if ctx.obj["json"]:
        click.echo(json.dumps(life, indent=2))
        return
    click.echo(f"Snapshot {cid}: {life['deployment']} {life['instance']} disk {life['disk_cid']}, "
               f"trigger {life['trigger']}, clean {life['clean']}; requested by {life['requested_by']} "
               f"at {life['requested_at']}; now {life['state']}")
    for e in life["events"]:
        click.echo(timeline_line(e))
        c = e["data"].get("call")
        if isinstance(c, dict):
            for name in ("log", "stderr"):
                for line in (c.get(name) or "").splitlines()[:20]:
                    click.echo(f"{'':>9}{name}: {line}")
    made_clean = life.get("job_update")
    if made_clean:  # the drain and stop that made this snapshot clean
        click.echo(f"\nMade clean by {made_clean['kind']} task {made_clean['task_id']}")
        for e in made_clean["events"]:
            click.echo(f"  {describe_event(e)}")
    click.echo("\nCPI calls")
    for c in life["cpi_calls"]:
        answer = c["answer"]
        if isinstance(answer, dict):
            answer = f"{answer.get('type')}: {answer.get('message')}"
        click.echo(f"  {c['started_at']}  {c['method']} attempt {c['attempt']} by {c['worker']}: "
                   f"{c['outcome'] or 'no answer recorded'} {answer or ''} "
                   f"({c['duration_s']} s, request {c['request_id'] or '-'})".rstrip())


COMMANDS: tuple[click.Command, ...] = (audit, history)
